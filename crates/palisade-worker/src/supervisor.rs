//! The supervisor: a pool of per-tenant worker processes. It starts a worker when a tenant
//! has none, evicts the least recently used idle worker when the pool is full, enforces every
//! invocation's deadline from outside (killing a worker that does not answer in time), and
//! turns a worker's death into `worker_crashed` for every invocation it held. No invocation is
//! lost or answered twice: each has exactly one pending entry, removed by whoever answers it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use palisade_model::manifest::Sha256Digest;
use palisade_model::{ErrorKind, InvocationError, InvocationRequest, Isolation, Limits, Outcome};
use palisade_runtime::{HostCalls, NoHostCalls};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::launch::{LaunchError, Launcher, WorkerProcess};
use crate::protocol::{
    FrameError, FromWorker, HostOp, HostReply, ToWorker, WorkerLogLevel, encode, read_frame,
};

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Workers alive at once, over all tenants.
    pub max_workers: usize,
    /// Invocations one worker runs at once (the worker must be started with the same value).
    pub per_worker_concurrency: usize,
    /// Time beyond an invocation's deadline before its worker is killed.
    pub deadline_grace: Duration,
    /// Time a new worker has to report `Ready`.
    pub start_timeout: Duration,
    /// Time a worker has to compile and check an extension.
    pub load_timeout: Duration,
    /// First and largest delay before restarting a tenant's worker after crashes.
    pub restart_backoff: (Duration, Duration),
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_workers: 16,
            per_worker_concurrency: 4,
            deadline_grace: Duration::from_millis(500),
            start_timeout: Duration::from_secs(10),
            load_timeout: Duration::from_secs(30),
            restart_backoff: (Duration::from_millis(50), Duration::from_secs(5)),
        }
    }
}

/// An extension as the supervisor hands it to workers.
#[derive(Debug, Clone)]
pub struct ExtensionSource {
    pub manifest: String,
    pub wasm: Arc<Vec<u8>>,
    /// The component's SHA-256.
    pub digest: Sha256Digest,
    /// What a worker's load is keyed by: the component and the exact manifest (its API
    /// version, so the imports it is checked against, its config and limits). The same bytes
    /// under another manifest are another load, checked and configured by that manifest.
    pub load_key: Sha256Digest,
}

impl ExtensionSource {
    pub fn new(manifest: String, wasm: Vec<u8>) -> Self {
        let digest = Sha256Digest(Sha256::digest(&wasm).into());
        let load_key = Sha256::new()
            .chain_update(b"palisade-load-v1\0")
            .chain_update((manifest.len() as u64).to_le_bytes())
            .chain_update(manifest.as_bytes())
            .chain_update(digest.0)
            .finalize();
        Self {
            manifest,
            wasm: Arc::new(wasm),
            digest,
            load_key: Sha256Digest(load_key.into()),
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub started: AtomicU64,
    pub evicted: AtomicU64,
    pub crashed: AtomicU64,
}

/// A snapshot of [`PoolStats`] plus the live workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub started: u64,
    pub evicted: u64,
    pub crashed: u64,
    /// Tenants with a live worker and its process id, sorted by tenant.
    pub live: Vec<String>,
    pub pids: Vec<u32>,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

#[derive(Default)]
struct Pool {
    workers: HashMap<String, Arc<Worker>>,
    backoff: HashMap<String, Backoff>,
    clock: u64,
}

struct Worker {
    tenant: String,
    pid: Option<u32>,
    /// How this worker is isolated, recorded when it started (never what it says itself).
    isolation: Isolation,
    outbox: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, Pending>>,
    loads: Mutex<HashMap<u64, oneshot::Sender<Result<(), InvocationError>>>>,
    loaded: tokio::sync::Mutex<HashMap<Sha256Digest, u64>>,
    slots: Arc<Semaphore>,
    in_flight: AtomicUsize,
    last_used: AtomicU64,
    dead: AtomicBool,
    retiring: AtomicBool,
    death_reason: Mutex<Option<String>>,
    process: Mutex<Option<Box<dyn WorkerProcess>>>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    log_budget: Mutex<LogBudget>,
}

/// An invocation a worker holds: who gets its outcome, and who answers its host calls.
struct Pending {
    reply: oneshot::Sender<Outcome>,
    host: Arc<dyn HostCalls>,
    /// A host call is being answered (a guest waits for each, so a second is a violation).
    calling: bool,
    /// The caller's span (request and invocation ids): the worker's lines about this
    /// invocation are logged inside it.
    span: tracing::Span,
    /// The limits the invocation runs under: its outcome is checked against them.
    limits: Limits,
}

/// Lines a worker may log per second; the rest are dropped and counted.
const WORKER_LOG_LINES_PER_SECOND: u32 = 200;

/// Longest worker log line kept (bytes); the rest is cut.
const WORKER_LOG_LINE_BYTES: usize = 2048;

/// A worker's log allowance: a fixed window of one second.
#[derive(Debug)]
struct LogBudget {
    window: std::time::Instant,
    used: u32,
    dropped: u64,
}

impl LogBudget {
    fn new(now: std::time::Instant) -> Self {
        Self {
            window: now,
            used: 0,
            dropped: 0,
        }
    }

    /// Whether one more line may be logged at `now`; on a new window, also how many lines
    /// the last one dropped.
    fn take(&mut self, now: std::time::Instant) -> (bool, u64) {
        let mut dropped_before = 0;
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            dropped_before = std::mem::take(&mut self.dropped);
            self.window = now;
            self.used = 0;
        }
        if self.used < WORKER_LOG_LINES_PER_SECOND {
            self.used += 1;
            (true, dropped_before)
        } else {
            self.dropped += 1;
            (false, dropped_before)
        }
    }
}

/// A worker's line as it may be logged: escaped by the runtime's own sanitiser here, in the
/// supervisor (the worker's cleaning is not trusted: controls, separators, bidi and invisible
/// characters become `\u{..}`), then cut to at most [`WORKER_LOG_LINE_BYTES`] after escaping.
fn clean_log_line(message: &str) -> String {
    palisade_runtime::capture::sanitize_bounded(message.as_bytes(), WORKER_LOG_LINE_BYTES)
}

/// Logs one line from `worker` at its level, as the `palisade_worker::worker` target. The
/// line is only ever a quoted field (`line="..."`, Debug-formatted), never the message, so in
/// the text format it cannot put `level=error ...` or fake fields ahead of the real ones.
fn log_worker_line(worker: &Worker, invocation: Option<u64>, level: WorkerLogLevel, line: &str) {
    let tenant = worker.tenant.as_str();
    let pid = worker.pid;
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(target: "palisade_worker::worker", $level, tenant, worker_pid = pid, worker_invocation = invocation, line = ?line, "worker log")
        };
    }
    match level {
        WorkerLogLevel::Debug => emit!(tracing::Level::DEBUG),
        WorkerLogLevel::Info => emit!(tracing::Level::INFO),
        WorkerLogLevel::Warn => emit!(tracing::Level::WARN),
        WorkerLogLevel::Error => emit!(tracing::Level::ERROR),
    }
}

/// Handles a worker's `Log` frame: within budget, cleaned, inside the invocation's span.
fn worker_log(worker: &Worker, invocation: Option<u64>, level: WorkerLogLevel, message: &str) {
    let (allowed, dropped) = lock(&worker.log_budget).take(std::time::Instant::now());
    if dropped > 0 {
        tracing::warn!(
            tenant = %worker.tenant,
            worker_pid = worker.pid,
            dropped,
            "the worker logged more than {WORKER_LOG_LINES_PER_SECOND} lines in a second; lines were dropped"
        );
    }
    if !allowed {
        return;
    }
    let line = clean_log_line(message);
    let span = invocation.and_then(|n| lock(&worker.pending).get(&n).map(|p| p.span.clone()));
    match span {
        Some(span) => span.in_scope(|| log_worker_line(worker, invocation, level, &line)),
        None => log_worker_line(worker, invocation, level, &line),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn crashed(message: impl Into<String>) -> InvocationError {
    InvocationError::new(ErrorKind::WorkerCrashed, message)
}

impl Worker {
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Kills the process; the reader task then fails everything pending with `reason`.
    fn kill(&self, reason: String) {
        lock(&self.death_reason).get_or_insert(reason);
        self.dead.store(true, Ordering::Release);
        if let Some(process) = lock(&self.process).as_mut() {
            process.kill();
        }
    }

    /// Asks the worker to finish its in-flight invocations and exit.
    fn retire(&self) {
        self.retiring.store(true, Ordering::Release);
        self.dead.store(true, Ordering::Release);
        if let Ok(frame) = encode(&ToWorker::Shutdown) {
            let _ = self.outbox.try_send(frame);
        }
    }
}

/// The pool of per-tenant workers.
pub struct Supervisor {
    launcher: Arc<dyn Launcher>,
    config: SupervisorConfig,
    pool: Arc<Mutex<Pool>>,
    start_lock: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    stats: Arc<PoolStats>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Decrements a worker's in-flight count when an invocation ends, however it ends.
struct InFlight(Arc<Worker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Next {
    Use(Arc<Worker>),
    Wait(Instant),
    Start(Option<Arc<Worker>>),
}

impl Supervisor {
    pub fn new(launcher: Arc<dyn Launcher>, config: SupervisorConfig) -> Self {
        Self {
            launcher,
            config,
            pool: Arc::default(),
            start_lock: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            stats: Arc::default(),
        }
    }

    /// Installs every tenant's worker-level limits (see [`crate::Launcher::set_worker_limits`]).
    pub fn set_worker_limits(&self, limits: crate::launch::WorkerLimitTable) {
        self.launcher.set_worker_limits(limits);
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let pool = lock(&self.pool);
        let mut live: Vec<(String, Option<u32>)> = pool
            .workers
            .values()
            .filter(|w| !w.is_dead())
            .map(|w| (w.tenant.clone(), w.pid))
            .collect();
        live.sort();
        PoolSnapshot {
            started: self.stats.started.load(Ordering::Relaxed),
            evicted: self.stats.evicted.load(Ordering::Relaxed),
            crashed: self.stats.crashed.load(Ordering::Relaxed),
            pids: live.iter().filter_map(|(_, pid)| *pid).collect(),
            live: live.into_iter().map(|(tenant, _)| tenant).collect(),
        }
    }

    /// Runs one invocation of `extension` for `tenant` in that tenant's worker, without host
    /// calls beyond logs and configuration.
    pub async fn invoke(
        &self,
        tenant: &str,
        extension: &ExtensionSource,
        request: InvocationRequest,
        limits: &Limits,
    ) -> Outcome {
        self.invoke_with(tenant, extension, request, limits, Arc::new(NoHostCalls))
            .await
    }

    /// Runs one invocation in the tenant's worker; `host` answers the guest's host calls
    /// (the worker forwards each one here).
    pub async fn invoke_with(
        &self,
        tenant: &str,
        extension: &ExtensionSource,
        request: InvocationRequest,
        limits: &Limits,
        host: Arc<dyn HostCalls>,
    ) -> Outcome {
        let deadline = Instant::now() + limits.wall_time + self.config.deadline_grace;
        let worker = match self.worker_for(tenant, deadline).await {
            Ok(worker) => worker,
            Err(error) => {
                let mut outcome = Outcome::rejected(error);
                outcome.isolation = self.launcher.isolation();
                return outcome;
            }
        };
        let mut outcome = match self
            .invoke_in_worker(&worker, extension, request, limits, deadline, host)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => Outcome::rejected(error),
        };
        // The supervisor's own record of the worker that ran it, never the worker's word.
        outcome.isolation = worker.isolation.clone();
        outcome
    }

    /// Loads (compiles and checks) `extension` in `tenant`'s worker without running it: how
    /// the control plane validates a component inside the tenant's jail before accepting it.
    /// The worker keeps it loaded for the invocations that follow.
    pub async fn load(
        &self,
        tenant: &str,
        extension: &ExtensionSource,
    ) -> Result<(), InvocationError> {
        let deadline = Instant::now() + self.config.start_timeout + self.config.load_timeout;
        let worker = self.worker_for(tenant, deadline).await?;
        worker.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(Arc::clone(&worker));
        self.ensure_loaded(&worker, extension).await.map(|_| ())
    }

    async fn invoke_in_worker(
        &self,
        worker: &Arc<Worker>,
        extension: &ExtensionSource,
        request: InvocationRequest,
        limits: &Limits,
        deadline: Instant,
        host: Arc<dyn HostCalls>,
    ) -> Result<Outcome, InvocationError> {
        let tenant = worker.tenant.as_str();
        worker.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(Arc::clone(worker));
        let Ok(Ok(_permit)) =
            tokio::time::timeout_at(deadline, Arc::clone(&worker.slots).acquire_owned()).await
        else {
            return Err(InvocationError::new(
                ErrorKind::Overloaded,
                format!("tenant {tenant}'s worker stayed busy for the whole deadline"),
            ));
        };
        let extension_id = self.ensure_loaded(worker, extension).await?;

        let invocation = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        lock(&worker.pending).insert(
            invocation,
            Pending {
                reply,
                host,
                calling: false,
                span: tracing::Span::current(),
                limits: *limits,
            },
        );
        let frame = encode(&ToWorker::Invoke {
            invocation,
            extension: extension_id,
            request,
            limits: *limits,
            trace: tracing::enabled!(target: "palisade_worker::worker", tracing::Level::DEBUG),
        })
        .map_err(|e| InvocationError::new(ErrorKind::Internal, e.to_string()))?;
        if worker.outbox.send(frame).await.is_err() {
            lock(&worker.pending).remove(&invocation);
            return Err(crashed(self.reason_of(worker)));
        }
        tracing::debug!(
            tenant,
            invocation,
            worker_pid = worker.pid,
            "sent to the worker"
        );
        // The guest's deadline counts from here: starting a worker and compiling the
        // extension have their own timeouts.
        let reply_deadline = Instant::now() + limits.wall_time + self.config.deadline_grace;
        match tokio::time::timeout_at(reply_deadline, answer).await {
            Ok(Ok(outcome)) => {
                lock(&self.pool).backoff.remove(tenant);
                Ok(outcome)
            }
            Ok(Err(_dropped)) => Err(crashed(self.reason_of(worker))),
            Err(_elapsed) => {
                // Whoever removes the pending entry answers the invocation: here, us.
                if lock(&worker.pending).remove(&invocation).is_none() {
                    return Err(crashed(self.reason_of(worker)));
                }
                worker.kill(format!(
                    "killed by the supervisor: invocation {invocation} overran its deadline"
                ));
                Err(InvocationError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no answer within the {:?} deadline plus {:?} grace; the worker was killed",
                        limits.wall_time, self.config.deadline_grace
                    ),
                ))
            }
        }
    }

    fn reason_of(&self, worker: &Worker) -> String {
        lock(&worker.death_reason)
            .clone()
            .unwrap_or_else(|| "the worker process exited".into())
    }

    /// Loads `extension` into `worker` once; concurrent callers wait for the first load.
    async fn ensure_loaded(
        &self,
        worker: &Arc<Worker>,
        extension: &ExtensionSource,
    ) -> Result<u64, InvocationError> {
        let mut loaded = worker.loaded.lock().await;
        if let Some(id) = loaded.get(&extension.load_key) {
            return Ok(*id);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        lock(&worker.loads).insert(id, reply);
        let frame = encode(&ToWorker::Load {
            extension: id,
            manifest: extension.manifest.clone(),
            wasm: extension.wasm.as_ref().clone(),
        })
        .map_err(|e| InvocationError::new(ErrorKind::InvalidComponent, e.to_string()))?;
        if worker.outbox.send(frame).await.is_err() {
            lock(&worker.loads).remove(&id);
            return Err(crashed(self.reason_of(worker)));
        }
        match tokio::time::timeout(self.config.load_timeout, answer).await {
            Ok(Ok(Ok(()))) => {
                loaded.insert(extension.load_key, id);
                Ok(id)
            }
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_dropped)) => Err(crashed(self.reason_of(worker))),
            Err(_elapsed) => {
                lock(&worker.loads).remove(&id);
                worker.kill("killed by the supervisor: loading an extension timed out".into());
                Err(crashed(
                    "loading the extension timed out; the worker was killed",
                ))
            }
        }
    }

    /// The tenant's live worker, starting one (and evicting another) when needed.
    async fn worker_for(
        &self,
        tenant: &str,
        deadline: Instant,
    ) -> Result<Arc<Worker>, InvocationError> {
        loop {
            if let Some(worker) = self.live_worker(tenant) {
                return Ok(worker);
            }
            // Starts are serialised, so two callers never start two workers for one tenant.
            let _starting = self.start_lock.lock().await;
            match self.plan(tenant)? {
                Next::Use(worker) => return Ok(worker),
                Next::Wait(until) => {
                    if until > deadline {
                        return Err(crashed(format!(
                            "tenant {tenant}'s worker keeps crashing; restarts are backing off"
                        )));
                    }
                    drop(_starting);
                    tokio::time::sleep_until(until).await;
                }
                Next::Start(victim) => {
                    if let Some(victim) = victim {
                        victim.retire();
                        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    let worker = self.start(tenant).await?;
                    let mut pool = lock(&self.pool);
                    pool.clock += 1;
                    worker.last_used.store(pool.clock, Ordering::Relaxed);
                    pool.workers.insert(tenant.to_owned(), Arc::clone(&worker));
                    return Ok(worker);
                }
            }
        }
    }

    /// The tenant's live worker, if any, marked as just used. Changes nothing else.
    fn live_worker(&self, tenant: &str) -> Option<Arc<Worker>> {
        let mut pool = lock(&self.pool);
        pool.clock += 1;
        let now = pool.clock;
        let worker = pool.workers.get(tenant).filter(|w| !w.is_dead())?;
        worker.last_used.store(now, Ordering::Relaxed);
        Some(Arc::clone(worker))
    }

    /// Decides what the tenant needs; removes the eviction victim from the pool, so call it
    /// only while holding the start lock.
    fn plan(&self, tenant: &str) -> Result<Next, InvocationError> {
        let mut pool = lock(&self.pool);
        pool.clock += 1;
        let now = pool.clock;
        if let Some(worker) = pool.workers.get(tenant) {
            if !worker.is_dead() {
                worker.last_used.store(now, Ordering::Relaxed);
                return Ok(Next::Use(Arc::clone(worker)));
            }
            pool.workers.remove(tenant);
        }
        if let Some(until) = pool.backoff.get(tenant).and_then(|b| b.not_before)
            && until > Instant::now()
        {
            return Ok(Next::Wait(until));
        }
        pool.workers.retain(|_, w| !w.is_dead());
        if pool.workers.len() < self.config.max_workers {
            return Ok(Next::Start(None));
        }
        // Deterministic eviction: the idle worker used least recently, ties by tenant id.
        let victim = pool
            .workers
            .values()
            .filter(|w| w.in_flight.load(Ordering::Acquire) == 0)
            .min_by(|a, b| {
                (a.last_used.load(Ordering::Relaxed), &a.tenant)
                    .cmp(&(b.last_used.load(Ordering::Relaxed), &b.tenant))
            })
            .map(|w| w.tenant.clone());
        match victim.and_then(|tenant| pool.workers.remove(&tenant)) {
            Some(victim) => Ok(Next::Start(Some(victim))),
            None => Err(InvocationError::new(
                ErrorKind::Overloaded,
                format!("all {} workers are busy", self.config.max_workers),
            )),
        }
    }

    async fn start(&self, tenant: &str) -> Result<Arc<Worker>, InvocationError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| InvocationError::new(ErrorKind::Internal, format!("socketpair: {e}")))?;
        let mut process = self
            .launcher
            .launch(tenant, OwnedFd::from(theirs))
            .map_err(|error| match error {
                LaunchError::IsolationUnavailable(message) => {
                    InvocationError::new(ErrorKind::IsolationUnavailable, message)
                }
                other => InvocationError::new(ErrorKind::Internal, other.to_string()),
            })?;
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let socket = ours
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ours))
            .map_err(|e| InvocationError::new(ErrorKind::Internal, format!("socket: {e}")))?;
        let (mut reader, mut writer) = socket.into_split();
        match tokio::time::timeout(
            self.config.start_timeout,
            read_frame::<FromWorker>(&mut reader),
        )
        .await
        {
            Ok(Ok(FromWorker::Ready { .. })) => {}
            other => {
                process.kill();
                let exit = process.wait().await;
                let why = match other {
                    Err(_) => "it did not report ready in time".to_owned(),
                    Ok(Err(FrameError::Closed)) => format!("it {}", exit.0),
                    Ok(Err(error)) => format!("protocol violation: {error}"),
                    Ok(Ok(message)) => format!("protocol violation: {message:?} before Ready"),
                };
                self.note_crash(tenant);
                return Err(crashed(format!(
                    "tenant {tenant}'s worker failed to start: {why}"
                )));
            }
        }

        let (outbox, mut frames) = mpsc::channel::<Vec<u8>>(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(frame) = frames.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let worker = Arc::new(Worker {
            tenant: tenant.to_owned(),
            pid: process.pid(),
            isolation: process
                .isolation()
                .unwrap_or_else(|| self.launcher.isolation()),
            outbox,
            pending: Mutex::default(),
            loads: Mutex::default(),
            loaded: tokio::sync::Mutex::default(),
            slots: Arc::new(Semaphore::new(self.config.per_worker_concurrency)),
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            death_reason: Mutex::new(None),
            process: Mutex::new(Some(process)),
            reader: Mutex::new(None),
            log_budget: Mutex::new(LogBudget::new(std::time::Instant::now())),
        });
        let task = tokio::spawn(read_replies(
            Arc::clone(&worker),
            reader,
            Arc::clone(&self.pool),
            Arc::clone(&self.stats),
            self.config.restart_backoff,
        ));
        *lock(&worker.reader) = Some(task);
        Ok(worker)
    }

    fn note_crash(&self, tenant: &str) {
        self.stats.crashed.fetch_add(1, Ordering::Relaxed);
        record_backoff(&mut lock(&self.pool), tenant, self.config.restart_backoff);
    }

    /// Retires every worker and waits for them to finish in-flight invocations and exit.
    pub async fn shutdown(&self) {
        let workers: Vec<Arc<Worker>> = lock(&self.pool).workers.drain().map(|(_, w)| w).collect();
        for worker in &workers {
            worker.retire();
        }
        for worker in workers {
            let reader = lock(&worker.reader).take();
            if let Some(reader) = reader
                && tokio::time::timeout(Duration::from_secs(10), reader)
                    .await
                    .is_err()
            {
                worker.kill("killed by the supervisor: it did not shut down in time".into());
            }
        }
    }
}

fn record_backoff(pool: &mut Pool, tenant: &str, (first, largest): (Duration, Duration)) {
    let backoff = pool.backoff.entry(tenant.to_owned()).or_default();
    let delay = first
        .saturating_mul(1 << backoff.failures.min(16))
        .min(largest);
    backoff.failures = backoff.failures.saturating_add(1);
    backoff.not_before = Some(Instant::now() + delay);
}

/// Answers one host call and sends the reply to the worker. The invocation may call again
/// as soon as it has the reply, so its `calling` mark is cleared first.
async fn answer_host_call(
    worker: Arc<Worker>,
    invocation: u64,
    call: u64,
    op: HostOp,
    host: Arc<dyn HostCalls>,
) {
    let reply = match op {
        HostOp::Kv(op) => HostReply::Kv(host.kv(op).await),
        HostOp::Http(request) => HostReply::Http(host.http(request).await),
    };
    if let Some(pending) = lock(&worker.pending).get_mut(&invocation) {
        pending.calling = false;
    }
    match encode(&ToWorker::HostReply { call, reply }) {
        Ok(frame) => {
            let _ = worker.outbox.send(frame).await;
        }
        Err(error) => worker.kill(format!(
            "killed by the supervisor: a host reply could not be encoded: {error}"
        )),
    }
}

/// Reads a worker's replies until it dies, then answers everything it still held.
async fn read_replies(
    worker: Arc<Worker>,
    mut reader: tokio::net::unix::OwnedReadHalf,
    pool: Arc<Mutex<Pool>>,
    stats: Arc<PoolStats>,
    backoff: (Duration, Duration),
) {
    loop {
        let violation = match read_frame::<FromWorker>(&mut reader).await {
            Ok(FromWorker::Done {
                invocation,
                mut outcome,
            }) => {
                // The worker's own checks are not trusted: the outcome is held to the bounds
                // here. A violation kills the worker, which answers this invocation too.
                let mut pending = lock(&worker.pending);
                match pending.get(&invocation).map(|p| p.limits) {
                    Some(limits) => {
                        match palisade_runtime::bounds::check_outcome(&mut outcome, &limits) {
                            Ok(()) => {
                                if let Some(pending) = pending.remove(&invocation) {
                                    let _ = pending.reply.send(outcome);
                                }
                                continue;
                            }
                            Err(violation) => {
                                format!("invocation {invocation} ended with {violation}")
                            }
                        }
                    }
                    None => {
                        format!("an answer for invocation {invocation}, which it does not hold")
                    }
                }
            }
            Ok(FromWorker::HostCall {
                invocation,
                call,
                op,
            }) => {
                let host = match lock(&worker.pending).get_mut(&invocation) {
                    Some(pending) if !pending.calling => {
                        pending.calling = true;
                        Ok(Arc::clone(&pending.host))
                    }
                    Some(_) => Err(format!(
                        "a second host call for invocation {invocation} before the first was answered"
                    )),
                    None => Err(format!(
                        "a host call for invocation {invocation}, which it does not hold"
                    )),
                };
                match host {
                    Ok(host) => {
                        tokio::spawn(answer_host_call(
                            Arc::clone(&worker),
                            invocation,
                            call,
                            op,
                            host,
                        ));
                        continue;
                    }
                    Err(violation) => violation,
                }
            }
            Ok(FromWorker::Loaded { extension, result }) => {
                match lock(&worker.loads).remove(&extension) {
                    Some(reply) => {
                        let _ = reply.send(result);
                        continue;
                    }
                    None => {
                        format!("a load result for extension {extension}, which it was not loading")
                    }
                }
            }
            Ok(FromWorker::Log {
                invocation,
                level,
                message,
            }) => {
                worker_log(&worker, invocation, level, &message);
                continue;
            }
            Ok(FromWorker::Ready { .. }) => "a second Ready".to_owned(),
            Err(FrameError::Closed) => break,
            Err(error) => error.to_string(),
        };
        worker.kill(format!(
            "killed by the supervisor: protocol violation: {violation}"
        ));
        break;
    }
    worker.dead.store(true, Ordering::Release);
    let process = lock(&worker.process).take();
    let exit = match process {
        Some(process) => process.wait().await.0,
        None => "gone".into(),
    };
    let reason = lock(&worker.death_reason)
        .get_or_insert_with(|| format!("the worker {exit}"))
        .clone();
    let retired_cleanly =
        worker.retiring.load(Ordering::Acquire) && lock(&worker.pending).is_empty();
    if !retired_cleanly {
        stats.crashed.fetch_add(1, Ordering::Relaxed);
        record_backoff(&mut lock(&pool), &worker.tenant, backoff);
    }
    let pending: Vec<_> = lock(&worker.pending).drain().collect();
    for (_, pending) in pending {
        let _ = pending
            .reply
            .send(Outcome::rejected(crashed(format!("{reason} ({exit})"))));
    }
    let loads: Vec<_> = lock(&worker.loads).drain().collect();
    for (_, reply) in loads {
        let _ = reply.send(Err(crashed(format!("{reason} ({exit})"))));
    }
    tracing::info!(tenant = %worker.tenant, %reason, %exit, "worker ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_log_line_cannot_forge_lines_or_grow_without_bound() {
        assert_eq!(
            clean_log_line("ok\n{\"level\":\"ERROR\"}\u{1b}[2J\u{202e}\u{200b}"),
            "ok\\n{\"level\":\"ERROR\"}\\u{1b}[2J\\u{202e}\\u{200b}"
        );
        let long = "é".repeat(WORKER_LOG_LINE_BYTES);
        let cut = clean_log_line(&long);
        assert!(cut.len() <= WORKER_LOG_LINE_BYTES);
        assert!(cut.ends_with(" [cut]"));
        // Escaping grows `\u{1b}` 6x: the bound holds after escaping.
        let grown = "\u{1b}".repeat(WORKER_LOG_LINE_BYTES);
        let cut = clean_log_line(&grown);
        assert!(cut.len() <= WORKER_LOG_LINE_BYTES, "{}", cut.len());
        assert!(cut.ends_with(" [cut]"));
    }

    #[test]
    fn a_worker_logs_at_most_its_budget_per_second_and_the_rest_is_counted() {
        let start = std::time::Instant::now();
        let mut budget = LogBudget::new(start);
        let allowed = (0..WORKER_LOG_LINES_PER_SECOND + 50)
            .filter(|_| budget.take(start).0)
            .count();
        assert_eq!(allowed, WORKER_LOG_LINES_PER_SECOND as usize);
        let (allowed, dropped) = budget.take(start + Duration::from_secs(1));
        assert!(allowed);
        assert_eq!(dropped, 50);
    }
}
