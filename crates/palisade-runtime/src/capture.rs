//! Per-invocation capture of guest output: `log` calls, stdout and stderr, held to the
//! invocation's byte and line budgets, with control characters escaped so that a guest can
//! never forge a log line, a terminal escape or a field separator.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_model::{LogEntry, LogLevel, LogSource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The guest wrote more log bytes or lines than its limit allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log limit exceeded: {what} (limit {limit})")]
pub struct LogLimitExceeded {
    pub what: &'static str,
    pub limit: u64,
}

/// Captured output of one invocation.
#[derive(Debug)]
pub(crate) struct Capture {
    started: Instant,
    max_bytes: u64,
    max_lines: u32,
    bytes: u64,
    entries: Vec<LogEntry>,
    /// Partial lines written to stdout and stderr, not yet ended by a newline.
    pending: [Vec<u8>; 2],
}

/// A cheap handle shared by the host functions and the stdout/stderr streams.
#[derive(Debug, Clone)]
pub(crate) struct SharedCapture(Arc<Mutex<Capture>>);

impl SharedCapture {
    pub(crate) fn new(started: Instant, max_bytes: u64, max_lines: u32) -> Self {
        Self(Arc::new(Mutex::new(Capture {
            started,
            max_bytes,
            max_lines,
            bytes: 0,
            entries: Vec::new(),
            pending: [Vec::new(), Vec::new()],
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Capture> {
        // A poisoned lock only means another thread panicked mid-push; the data is still valid.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one `log.write` call, or refuses it when it would break the budget.
    pub(crate) fn log(&self, level: LogLevel, message: &str) -> Result<(), LogLimitExceeded> {
        self.lock().push(level, LogSource::Log, message.as_bytes())
    }

    /// Appends bytes written to stdout or stderr; complete lines become entries.
    fn write_stream(&self, source: LogSource, bytes: &[u8]) -> Result<(), LogLimitExceeded> {
        let mut capture = self.lock();
        capture.charge_bytes(bytes.len() as u64)?;
        let slot = stream_slot(source);
        capture.pending[slot].extend_from_slice(bytes);
        while let Some(newline) = capture.pending[slot].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = capture.pending[slot].drain(..=newline).collect();
            capture.push_charged(stream_level(source), source, &line[..line.len() - 1])?;
        }
        Ok(())
    }

    /// Ends the capture: unterminated stdout/stderr lines become entries too.
    pub(crate) fn finish(&self) -> (Vec<LogEntry>, u64, u32) {
        let mut capture = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let rest = std::mem::take(&mut capture.pending[stream_slot(source)]);
            if !rest.is_empty() {
                // Over the line budget the trailing fragment is dropped; its bytes were charged.
                let _ = capture.push_charged(stream_level(source), source, &rest);
            }
        }
        let lines = u32::try_from(capture.entries.len()).unwrap_or(u32::MAX);
        (std::mem::take(&mut capture.entries), capture.bytes, lines)
    }

    /// The last few stderr lines, used to explain a trap: a Rust panic prints
    /// "panicked at FILE:LINE:COL:" and its message there before aborting.
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        const LINES: usize = 3;
        let capture = self.lock();
        let pending = &capture.pending[stream_slot(LogSource::Stderr)];
        let mut lines: Vec<String> = capture
            .entries
            .iter()
            .filter(|e| e.source == LogSource::Stderr)
            .map(|e| e.message.clone())
            .chain((!pending.is_empty()).then(|| sanitize(pending)))
            .filter(|line| {
                !line.trim().is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE")
            })
            .collect();
        let keep = lines.len().saturating_sub(LINES);
        lines.drain(..keep);
        (!lines.is_empty()).then(|| lines.join(" / "))
    }

    pub(crate) fn stream(&self, source: LogSource) -> GuestStream {
        GuestStream {
            capture: self.clone(),
            source,
        }
    }
}

impl Capture {
    fn charge_bytes(&mut self, bytes: u64) -> Result<(), LogLimitExceeded> {
        let total = self.bytes.saturating_add(bytes);
        if total > self.max_bytes {
            return Err(LogLimitExceeded {
                what: "bytes",
                limit: self.max_bytes,
            });
        }
        self.bytes = total;
        Ok(())
    }

    fn push(
        &mut self,
        level: LogLevel,
        source: LogSource,
        message: &[u8],
    ) -> Result<(), LogLimitExceeded> {
        self.check_line_budget()?;
        self.charge_bytes(message.len() as u64)?;
        self.push_charged(level, source, message)
    }

    fn check_line_budget(&self) -> Result<(), LogLimitExceeded> {
        if self.entries.len() >= self.max_lines as usize {
            return Err(LogLimitExceeded {
                what: "lines",
                limit: u64::from(self.max_lines),
            });
        }
        Ok(())
    }

    fn push_charged(
        &mut self,
        level: LogLevel,
        source: LogSource,
        message: &[u8],
    ) -> Result<(), LogLimitExceeded> {
        self.check_line_budget()?;
        let elapsed_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.entries.push(LogEntry {
            level,
            source,
            message: sanitize(message),
            elapsed_us,
            unix_ms,
        });
        Ok(())
    }
}

fn stream_slot(source: LogSource) -> usize {
    usize::from(source == LogSource::Stderr)
}

fn stream_level(source: LogSource) -> LogLevel {
    match source {
        LogSource::Stderr => LogLevel::Warn,
        LogSource::Stdout | LogSource::Log => LogLevel::Info,
    }
}

/// Escapes everything that could forge structure in a log line: control characters
/// (newlines, escape sequences, NUL), Unicode line and paragraph separators, bidi overrides,
/// and invalid UTF-8.
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// The guest's stdout or stderr, charged to the invocation's log budget.
#[derive(Debug, Clone)]
pub(crate) struct GuestStream {
    capture: SharedCapture,
    source: LogSource,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture
            .write_stream(self.source, &bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = self
            .capture
            .write_stream(self.source, buf)
            .map(|()| buf.len())
            .map_err(std::io::Error::other);
        std::task::Poll::Ready(result)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_forgery_attempts() {
        assert_eq!(
            sanitize(b"ok\n{\"level\":\"error\"}"),
            "ok\\n{\"level\":\"error\"}"
        );
        assert_eq!(sanitize(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            sanitize("a\u{2028}b\u{202e}c".as_bytes()),
            "a\\u{2028}b\\u{202e}c"
        );
        assert_eq!(sanitize(b"bad \xff utf8"), "bad \u{fffd} utf8");
        assert_eq!(sanitize(b"back\\slash"), "back\\\\slash");
    }

    #[test]
    fn byte_and_line_budgets_are_enforced() {
        let capture = SharedCapture::new(Instant::now(), 10, 2);
        assert!(capture.log(LogLevel::Info, "12345").is_ok());
        assert_eq!(
            capture.log(LogLevel::Info, "123456"),
            Err(LogLimitExceeded {
                what: "bytes",
                limit: 10
            })
        );
        assert!(capture.log(LogLevel::Info, "1").is_ok());
        assert_eq!(
            capture.log(LogLevel::Info, "2"),
            Err(LogLimitExceeded {
                what: "lines",
                limit: 2
            })
        );
        let (entries, bytes, lines) = capture.finish();
        assert_eq!((entries.len(), bytes, lines), (2, 6, 2));
    }

    #[test]
    fn streams_split_into_lines() {
        let capture = SharedCapture::new(Instant::now(), 100, 10);
        assert!(
            capture
                .write_stream(LogSource::Stderr, b"panicked at x\nnote: ")
                .is_ok()
        );
        assert!(
            capture
                .write_stream(LogSource::Stderr, b"backtrace")
                .is_ok()
        );
        assert_eq!(
            capture.stderr_tail().as_deref(),
            Some("panicked at x / note: backtrace")
        );
        let (entries, _, _) = capture.finish();
        let messages: Vec<_> = entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["panicked at x", "note: backtrace"]);
    }
}
