//! The supervisor ⇄ worker protocol: length-prefixed, versioned binary frames over a Unix
//! socket. Every byte from a worker is hostile: lengths are capped before allocating,
//! versions and message shapes are checked, and any violation is a typed error that gets the
//! worker killed.
//!
//! Byte fields here and in the model's messages are `serde_bytes`: postcard then copies them
//! whole instead of one element at a time (the same bytes on the wire; 86 µs instead of
//! 2.7 ms to encode and decode 1 MiB).

use palisade_model::egress::{EgressError, HttpRequest, HttpResponse};
use palisade_model::kv::{KvError, KvOp, KvReply};
use palisade_model::{InvocationError, InvocationRequest, Limits, Outcome};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u8 = 3;

/// Largest frame either side accepts: a 64 MiB component plus its manifest, with headroom.
pub const MAX_FRAME_BYTES: u32 = 80 << 20;

/// Messages from the supervisor to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// Compile (or fetch from cache) and check an extension; the worker answers `Loaded`.
    Load {
        extension: u64,
        manifest: String,
        #[serde(with = "serde_bytes")]
        wasm: Vec<u8>,
    },
    /// Run one invocation of a loaded extension; the worker answers `Done`.
    Invoke {
        invocation: u64,
        extension: u64,
        request: InvocationRequest,
        limits: Limits,
        /// The supervisor logs the worker's per-invocation lines (debug level): send them.
        /// Off, the worker sends none, so the hot path carries no frames nobody reads.
        trace: bool,
    },
    /// The answer to a worker's `HostCall`.
    HostReply { call: u64, reply: HostReply },
    /// Finish in-flight invocations and exit.
    Shutdown,
}

/// Messages from a worker to the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromWorker {
    /// Sent once, when the worker's engine is ready and its sandbox fully applied.
    Ready {
        pid: u32,
    },
    Loaded {
        extension: u64,
        result: Result<(), InvocationError>,
    },
    Done {
        invocation: u64,
        outcome: Outcome,
    },
    /// A guest's host call during `invocation` (at most one outstanding per invocation: a
    /// guest waits for each answer); the supervisor answers `HostReply` with the same `call`.
    HostCall {
        invocation: u64,
        call: u64,
        op: HostOp,
    },
    /// A line of the worker's own log (the guest's lines come back in the outcome). With an
    /// `invocation`, the supervisor logs it under that invocation's span, so it carries the
    /// request and invocation ids; every line is capped, cleaned and rate-limited there.
    Log {
        invocation: Option<u64>,
        level: WorkerLogLevel,
        message: String,
    },
}

/// How much a worker's log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerLogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A host call a guest makes through its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostOp {
    Kv(KvOp),
    Http(HttpRequest),
}

/// The supervisor's answer to a [`HostOp`] (the same variant, or the worker is killed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostReply {
    Kv(Result<KvReply, KvError>),
    Http(Result<HttpResponse, EgressError>),
}

/// A frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the socket.
    #[error("the peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte maximum")]
    TooLarge(u64),
    #[error("empty frame")]
    Empty,
    #[error("protocol version {0} is not {PROTOCOL_VERSION}")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes one frame: `u32` big-endian length of what follows, the version byte, the message.
pub async fn write_frame<T: Serialize>(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), FrameError> {
    let frame = encode(message)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Encodes a message as a complete frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; 5];
    frame[4] = PROTOCOL_VERSION;
    let mut frame =
        postcard::to_extend(message, frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let length =
        u32::try_from(frame.len() - 4).map_err(|_| FrameError::TooLarge(frame.len() as u64))?;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(u64::from(length)));
    }
    frame[..4].copy_from_slice(&length.to_be_bytes());
    Ok(frame)
}

/// Reads one frame, refusing oversized or malformed ones before allocating for them.
pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed);
        }
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(header);
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(u64::from(length)));
    }
    if length == 0 {
        return Err(FrameError::Empty);
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body).await?;
    if body[0] != PROTOCOL_VERSION {
        return Err(FrameError::Version(body[0]));
    }
    let (message, rest) =
        postcard::take_from_bytes(&body[1..]).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FrameError> {
        read_frame(&mut &bytes[..]).await
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let message = ToWorker::Invoke {
            invocation: 7,
            extension: 3,
            request: InvocationRequest {
                body: vec![1, 2, 3],
                content_type: "x".into(),
                metadata: vec![("k".into(), "v".into())],
            },
            limits: Limits::DEFAULT,
            trace: false,
        };
        let frame = encode(&message).unwrap();
        match decode::<ToWorker>(&frame).await.unwrap() {
            ToWorker::Invoke {
                invocation,
                request,
                limits,
                ..
            } => {
                assert_eq!(invocation, 7);
                assert_eq!(request.body, [1, 2, 3]);
                assert_eq!(limits, Limits::DEFAULT);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn hostile_frames_are_typed_errors() {
        let huge = (MAX_FRAME_BYTES + 1).to_be_bytes();
        assert!(matches!(
            decode::<FromWorker>(&huge).await,
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            decode::<FromWorker>(&[0, 0, 0, 0]).await,
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            decode::<FromWorker>(&[0, 0, 0, 2, 9, 0]).await,
            Err(FrameError::Version(9))
        ));
        assert!(matches!(
            decode::<FromWorker>(&[0, 0, 0, 2, PROTOCOL_VERSION, 77]).await,
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode::<FromWorker>(&[]).await,
            Err(FrameError::Closed)
        ));
        // A header promising more than arrives.
        assert!(matches!(
            decode::<FromWorker>(&[0, 0, 0, 9, 1]).await,
            Err(FrameError::Io(_))
        ));
        let mut trailing = encode(&FromWorker::Ready { pid: 1 }).unwrap();
        trailing.push(0);
        let length = u32::from_be_bytes([trailing[0], trailing[1], trailing[2], trailing[3]]) + 1;
        trailing[..4].copy_from_slice(&length.to_be_bytes());
        assert!(matches!(
            decode::<FromWorker>(&trailing).await,
            Err(FrameError::Malformed(_))
        ));
    }
}
