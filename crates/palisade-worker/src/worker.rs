//! The worker side: one process per tenant, serving `Load` and `Invoke` frames from the
//! supervisor on a Unix socket (fd 3 in a jail, standard input otherwise) with a wasm runtime
//! of its own.
//!
//! The worker trusts the supervisor, but not the guests it runs: a guest that breaks a limit
//! gets a typed error, and a guest that breaks the process (a wasmtime bug, an OOM kill) only
//! takes this tenant's worker down.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::Arc;

use palisade_model::egress::{EgressError, EgressErrorKind, HttpRequest, HttpResponse};
use palisade_model::kv::{KvError, KvErrorKind, KvOp, KvReply};
use palisade_model::{ErrorKind, InvocationError, Manifest};
use palisade_runtime::{Extension, HostCalls, Runtime, RuntimeConfig};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::protocol::{
    FrameError, FromWorker, HostOp, HostReply, ToWorker, WorkerLogLevel, read_frame, write_frame,
};

/// How the worker sets itself up.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Invocations this worker runs at once.
    pub concurrency: u32,
    /// Largest linear memory of any one instance (sizes the pool).
    pub max_memory_bytes: u64,
    /// Started by the jail: the socket is fd 3, and the second, stricter seccomp stage is
    /// installed once the engine exists, before any guest byte is read.
    pub jailed: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_memory_bytes: 256 << 20,
            jailed: false,
        }
    }
}

/// Why the worker stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the IPC socket is not usable: {0}")]
    Socket(std::io::Error),
    #[error("the wasm runtime could not start: {0}")]
    Runtime(#[from] palisade_runtime::RuntimeError),
    #[error("the sandbox could not be completed: {0}")]
    Sandbox(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Serves the supervisor on standard input until it says `Shutdown` or hangs up.
pub fn worker_main(options: WorkerOptions) -> Result<(), WorkerError> {
    let fd = if options.jailed {
        palisade_jail::take_ipc_fd().map_err(|e| WorkerError::Sandbox(e.to_string()))?
    } else {
        // A copy of fd 0 as an owned socket; the worker's stdio stays unused.
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(WorkerError::Socket)?
    };
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true).map_err(WorkerError::Socket)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WorkerError::Socket)?;
    runtime.block_on(async move {
        let socket = tokio::net::UnixStream::from_std(socket).map_err(WorkerError::Socket)?;
        serve(socket, options).await
    })
}

async fn serve(socket: tokio::net::UnixStream, options: WorkerOptions) -> Result<(), WorkerError> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        max_concurrent: options.concurrency,
        max_memory_bytes: options.max_memory_bytes,
        ..Default::default()
    })?);
    if options.jailed {
        palisade_jail::seccomp_stage2().map_err(|e| WorkerError::Sandbox(e.to_string()))?;
    }
    let (mut reader, writer) = socket.into_split();
    let (replies, mut outbox) = mpsc::channel::<FromWorker>(64);
    let mut writer_task = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(message) = outbox.recv().await {
            write_frame(&mut writer, &message).await?;
        }
        Ok::<_, FrameError>(())
    });
    let _ = replies
        .send(FromWorker::Ready {
            pid: std::process::id(),
        })
        .await;
    log(
        &replies,
        None,
        WorkerLogLevel::Info,
        format!(
            "worker ready: engine up, {} invocations at once, {}",
            options.concurrency,
            if options.jailed {
                "jailed, seccomp stage 2 installed"
            } else {
                "not jailed"
            }
        ),
    );

    // Only this loop touches the map, so it needs no lock.
    let mut extensions: HashMap<u64, Extension> = HashMap::new();
    let calls = Arc::new(HostCallTable::default());
    let slots = Arc::new(Semaphore::new(options.concurrency as usize));
    loop {
        let frame = tokio::select! {
            frame = read_frame::<ToWorker>(&mut reader) => frame,
            // The writer ends only on a failure (a frame the link refuses, a broken socket):
            // the worker ends with it, so the supervisor sees a dead worker at once instead of
            // a live one that never answers.
            written = &mut writer_task => {
                return Err(match written {
                    Ok(Err(error)) => error.into(),
                    Ok(Ok(())) => WorkerError::Sandbox("the writer to the supervisor stopped".into()),
                    Err(error) => WorkerError::Sandbox(format!("writer task failed: {error}")),
                });
            }
        };
        let message = match frame {
            Ok(message) => message,
            Err(FrameError::Closed) => break,
            Err(error) => return Err(error.into()),
        };
        match message {
            ToWorker::Load {
                extension,
                manifest,
                wasm,
            } => {
                let started = std::time::Instant::now();
                let result = Manifest::parse(&manifest)
                    .map_err(|e| InvocationError::new(ErrorKind::InvalidManifest, e.to_string()))
                    .and_then(|manifest| {
                        let name =
                            format!("{}@{}", manifest.extension.name, manifest.extension.version);
                        runtime.load(&manifest, &wasm).map(|loaded| (loaded, name))
                    });
                let result = match result {
                    Ok((loaded, name)) => {
                        extensions.insert(extension, loaded);
                        log(
                            &replies,
                            None,
                            WorkerLogLevel::Info,
                            format!(
                                "loaded {name} as extension {extension}: {} bytes in {:.1} ms",
                                wasm.len(),
                                started.elapsed().as_secs_f64() * 1e3
                            ),
                        );
                        Ok(())
                    }
                    Err(error) => {
                        log(
                            &replies,
                            None,
                            WorkerLogLevel::Warn,
                            format!("refused to load extension {extension}: {error}"),
                        );
                        Err(error)
                    }
                };
                let _ = replies.send(FromWorker::Loaded { extension, result }).await;
            }
            ToWorker::Invoke {
                invocation,
                extension,
                request,
                limits,
                trace,
            } => {
                let Some(loaded) = extensions.get(&extension).cloned() else {
                    let outcome = palisade_model::Outcome::rejected(InvocationError::new(
                        ErrorKind::Internal,
                        format!("extension {extension} was not loaded in this worker"),
                    ));
                    let _ = replies
                        .send(FromWorker::Done {
                            invocation,
                            outcome,
                        })
                        .await;
                    continue;
                };
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let runtime = Arc::clone(&runtime);
                let replies = replies.clone();
                let host = Arc::new(IpcHost {
                    invocation,
                    replies: replies.clone(),
                    calls: Arc::clone(&calls),
                });
                tokio::spawn(async move {
                    if trace {
                        log(
                            &replies,
                            Some(invocation),
                            WorkerLogLevel::Debug,
                            "invocation started in the worker".into(),
                        );
                    }
                    let started = std::time::Instant::now();
                    let outcome = runtime.invoke_with(&loaded, request, &limits, host).await;
                    drop(permit);
                    if trace {
                        log(
                            &replies,
                            Some(invocation),
                            WorkerLogLevel::Debug,
                            format!(
                                "invocation finished in the worker: {} after {:.2} ms",
                                outcome
                                    .result
                                    .as_ref()
                                    .map_or_else(|e| e.kind.as_str(), |_| "ok"),
                                started.elapsed().as_secs_f64() * 1e3
                            ),
                        );
                    }
                    let _ = replies
                        .send(FromWorker::Done {
                            invocation,
                            outcome,
                        })
                        .await;
                });
            }
            ToWorker::HostReply { call, reply } => calls.answer(call, reply),
            ToWorker::Shutdown => break,
        }
    }
    // Let in-flight invocations finish, then flush their replies.
    let _ = slots.acquire_many(options.concurrency).await;
    drop(replies);
    writer_task
        .await
        .map_err(|e| WorkerError::Sandbox(format!("writer task failed: {e}")))??;
    Ok(())
}

/// Sends a line of the worker's own log. Never waits: when the channel to the supervisor is
/// full the line is dropped, so logging cannot slow an invocation down.
fn log(
    replies: &mpsc::Sender<FromWorker>,
    invocation: Option<u64>,
    level: WorkerLogLevel,
    message: String,
) {
    let _ = replies.try_send(FromWorker::Log {
        invocation,
        level,
        message,
    });
}

/// Host calls waiting for the supervisor's answer, by call id.
#[derive(Default)]
struct HostCallTable {
    next: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<HashMap<u64, oneshot::Sender<HostReply>>>,
}

impl HostCallTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<HostReply>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answer(&self, call: u64, reply: HostReply) {
        if let Some(waiter) = self.lock().remove(&call) {
            let _ = waiter.send(reply);
        }
    }
}

/// One invocation's host calls, forwarded to the supervisor, which checks and answers them:
/// the worker holds no state, keys, secrets, database or network of its own.
struct IpcHost {
    invocation: u64,
    replies: mpsc::Sender<FromWorker>,
    calls: Arc<HostCallTable>,
}

impl IpcHost {
    /// Sends `op` and waits for its answer; `None` when the supervisor is gone. The
    /// invocation's own deadline bounds the wait: the runtime's timeout drops this future.
    async fn call(&self, op: HostOp) -> Option<HostReply> {
        let call = self
            .calls
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        self.calls.lock().insert(call, waiter);
        let sent = self
            .replies
            .send(FromWorker::HostCall {
                invocation: self.invocation,
                call,
                op,
            })
            .await;
        if sent.is_err() {
            self.calls.lock().remove(&call);
            return None;
        }
        answer.await.ok()
    }
}

#[async_trait::async_trait]
impl HostCalls for IpcHost {
    async fn kv(&self, op: KvOp) -> Result<KvReply, KvError> {
        // Refused here, at the source, with its own kind: an oversized key, value or
        // namespace never becomes a frame (the supervisor checks again).
        op.validate()?;
        match self.call(HostOp::Kv(op)).await {
            Some(HostReply::Kv(reply)) => reply,
            _ => Err(KvError::new(
                KvErrorKind::Unavailable,
                "the supervisor is gone",
            )),
        }
    }

    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, EgressError> {
        match self.call(HostOp::Http(request)).await {
            Some(HostReply::Http(reply)) => reply,
            _ => Err(EgressError::new(
                EgressErrorKind::Unavailable,
                "the supervisor is gone",
            )),
        }
    }
}
