//! Palisade's control plane: the HTTP API over the store, the policy engine and the worker
//! pool. One process serves tenants, tokens, extensions, deployments, policies, the audit log
//! and invocations, on the embedded default (SQLite and a local artifact directory).
//!
//! ```no_run
//! # async fn demo() -> Result<(), palisade_server::ServerError> {
//! use palisade_server::{Server, ServerConfig};
//!
//! let config = ServerConfig::new("/var/lib/palisade".into(), "127.0.0.1:8700".parse().unwrap());
//! let server = Server::start(config).await?;     // bound, bootstrapped, serving
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await;                        // drains in-flight invocations
//! # Ok(()) }
//! ```
//!
//! An invocation's path: authenticate (bearer token, cached) → tenant scope and role →
//! tenant active → the active deployment, resolved once (component verified from the
//! artifact store, effective limits from the policy engine) → admission (the tenant's rate
//! and concurrency, the global cap) → the tenant's worker → the answer with the status of
//! its kind.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod signing;
pub mod state;
pub mod telemetry;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_api::Role;
use palisade_store::{Actor, KeyProvider, LocalKek, NewToken, Store, StoreOptions, now_ms};
use palisade_worker::SupervisorConfig;
use tokio::sync::watch;

pub use palisade_host::{AdmissionConfig, Executor, Isolation, WorkerProgram};
pub use state::{AppState, Settings};

/// Where the first platform administrator's token is written, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The key-encryption key made on first start when none is given (development only).
pub const GENERATED_KEK_FILE: &str = "kek";

/// Where the key-encryption key of tenant state comes from.
#[derive(Debug, Clone)]
pub enum KekSource {
    /// A file holding 64 hex characters (256 bits), kept outside the data directory.
    File(PathBuf),
    /// 64 hex characters given directly (from an environment variable).
    Hex(String),
    /// `DATA_DIR/kek`, made on first start: convenient, and only as safe as the data
    /// directory itself. A warning says so.
    DataDir,
}

/// Everything `palisade serve` can set.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub isolation: Isolation,
    pub worker: WorkerProgram,
    pub pool: SupervisorConfig,
    pub admission: AdmissionConfig,
    pub settings: Settings,
    pub store: StoreOptions,
    /// Tenants with their own metric labels (the rest share `_other`; 0 keeps none).
    pub max_tenant_labels: usize,
    /// How long shutdown waits for in-flight requests before it stops waiting.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers before the connection is
    /// closed (a body's deadline is `routes::body_deadline`'s).
    pub header_timeout: Duration,
    /// The key-encryption key of tenant state and secrets.
    pub kek: KekSource,
    /// The key-encryption key being rotated away from: data keys wrapped under it are
    /// re-wrapped under `kek` at start-up.
    pub previous_kek: Option<PathBuf>,
    /// How the egress gateway resolves names (the system resolver; tests pin answers).
    pub resolver: Arc<dyn palisade_egress::Resolver>,
    /// Serve HTTPS with this certificate and key (plain HTTP without).
    pub tls: Option<tls::TlsFiles>,
}

impl ServerConfig {
    /// Defaults: jailed workers (strict), the running executable as the worker program,
    /// review required.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            isolation: Isolation::Jailed {
                allow_degraded: false,
            },
            worker: WorkerProgram {
                program: std::env::current_exe().unwrap_or_else(|_| "palisade".into()),
                worker_args: vec!["__worker".into()],
                launcher_args: vec!["__jail-launcher".into()],
            },
            pool: SupervisorConfig::default(),
            admission: AdmissionConfig::default(),
            settings: Settings {
                require_review: true,
            },
            store: StoreOptions::default(),
            max_tenant_labels: 100,
            shutdown_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            kek: KekSource::DataDir,
            previous_kek: None,
            resolver: Arc::new(palisade_egress::SystemResolver),
            tls: None,
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] palisade_store::StoreError),
    #[error("the stored policies cannot be loaded: {0}")]
    Policy(String),
    #[error(transparent)]
    Executor(#[from] palisade_host::ExecutorError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("key-encryption key: {0}")]
    Kek(String),
    #[error("cannot write the administrator token to {path}: {error}")]
    AdminToken {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Builds the shared state from the store (policies loaded, executor ready) without binding a
/// socket: what tests drive in-process with `tower::ServiceExt::oneshot`.
pub async fn build_state(
    config: &ServerConfig,
) -> Result<(Arc<AppState>, Option<String>), ServerError> {
    let store = Store::open(&config.data_dir, config.store.clone()).await?;
    let kek = key_provider(config)?;
    if let Some(previous) = &config.previous_kek {
        let previous = LocalKek::load(previous).map_err(|e| ServerError::Kek(e.to_string()))?;
        let rewrapped = store.rotate_kek(&previous, kek.as_ref()).await?;
        tracing::warn!(
            rewrapped,
            from = %previous.id(),
            to = %kek.id(),
            "rotated the key-encryption key; the previous one is no longer needed"
        );
    }
    let store = store.with_key_provider(kek).await?;
    let admin_token = bootstrap(&store, config).await?;
    let snapshot = store.policy_snapshot().await?;
    let engine = palisade_policy::store::engine_at(&snapshot, None)
        .map_err(|e| ServerError::Policy(e.to_string()))?;
    let uids = palisade_worker::jailed::TenantUids::default();
    for (tenant, slot) in store.tenant_uid_slots().await? {
        uids.set(&tenant, slot);
    }
    let executor = Arc::new(Executor::new(
        &config.isolation,
        &config.worker,
        config.pool.clone(),
        uids.clone(),
    )?);
    let metrics = Arc::new(metrics::Metrics::new(
        config.max_tenant_labels,
        Arc::clone(&executor),
    ));
    let signing_keys = signing::load(&store).await?;
    let gateway = Arc::new(palisade_egress::Gateway::new(
        Arc::clone(&config.resolver),
        Some(signing_keys),
    ));
    let host = palisade_host::Host::new(
        executor,
        palisade_host::Services {
            kv: Arc::new(store.clone()),
            secrets: Arc::new(store.clone()),
            egress: Some(palisade_host::EgressService {
                gateway: Arc::clone(&gateway),
                decisions: palisade_host::EgressDecisions::Policy,
                allow_private: Vec::new(),
            }),
            egress_off: "",
            events: Arc::clone(&metrics) as Arc<dyn palisade_host::InvocationEvents>,
        },
    );
    let mut state = AppState::new(
        store,
        config.settings.clone(),
        host,
        metrics,
        palisade_host::Admission::new(config.admission.clone()),
        engine,
        gateway,
    );
    state.tenant_uids = uids;
    Ok((Arc::new(state), admin_token))
}

fn key_provider(config: &ServerConfig) -> Result<Arc<dyn KeyProvider>, ServerError> {
    let kek = |e: palisade_store::CryptoError| ServerError::Kek(e.to_string());
    let provider = match &config.kek {
        KekSource::File(path) => LocalKek::load(path).map_err(kek)?,
        KekSource::Hex(text) => LocalKek::parse(text).map_err(kek)?,
        KekSource::DataDir => {
            let path = config.data_dir.join(GENERATED_KEK_FILE);
            if path.exists() {
                LocalKek::load(&path).map_err(kek)?
            } else {
                tracing::warn!(
                    path = %path.display(),
                    "no key-encryption key given: made one in the data directory; for \
                     production keep it elsewhere (--kek-file or PALISADE_KEK)"
                );
                LocalKek::generate(&path).map_err(kek)?
            }
        }
    };
    Ok(Arc::new(provider))
}

/// On first start (no live platform administrator), mints one and writes its token to
/// `DATA_DIR/admin.token` (mode 0600). Returns the token when it minted one.
async fn bootstrap(store: &Store, config: &ServerConfig) -> Result<Option<String>, ServerError> {
    if store.has_live_admin().await? {
        return Ok(None);
    }
    let expires_ms = now_ms().saturating_add(400 * 86_400 * 1000);
    let (token, info) = store
        .create_token(
            &Actor::system(),
            NewToken::Principal {
                name: "admin".into(),
                role: Role::PlatformAdmin,
                tenant: None,
                expires_ms,
            },
        )
        .await?;
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    write_secret(&path, &token).map_err(|error| ServerError::AdminToken {
        path: path.clone(),
        error,
    })?;
    tracing::warn!(
        token_id = %info.id,
        path = %path.display(),
        "no platform administrator existed: minted one; its token is in the file named here"
    );
    Ok(Some(token))
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    admin_token: Option<String>,
}

/// Serves `app` on `listener` until `stopped` turns true, then finishes in-flight requests
/// for at most `timeout`. Each connection must send a request's headers within
/// `header_timeout` (hyper's HTTP/1 header read timeout, on a real timer), so a client that
/// connects and goes quiet holds nothing for long.
async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    timeout: Duration,
    header_timeout: Duration,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection ended with an error");
            }
        });
    }
    state.draining.store(true, Ordering::Release);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(timeout) => {
            tracing::warn!(?timeout, "in-flight requests did not finish in time; stopping anyway");
        }
    }
}

impl Server {
    /// Opens the store, bootstraps, binds and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        // Read before anything else starts, so a bad certificate changes nothing.
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        let (state, admin_token) = build_state(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| ServerError::Listen {
                addr: config.listen,
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| ServerError::Listen {
            addr: config.listen,
            error,
        })?;
        let (stop, stopped) = watch::channel(false);
        let app = routes::router(Arc::clone(&state));
        let drain_state = Arc::clone(&state);
        let timeout = config.shutdown_timeout;
        let header_timeout = config.header_timeout;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
            Some(tls) => {
                let listener =
                    tls::TlsListener::new(listener, tls).map_err(|error| ServerError::Listen {
                        addr: config.listen,
                        error,
                    })?;
                tokio::spawn(serve(
                    listener,
                    app,
                    drain_state,
                    stopped,
                    timeout,
                    header_timeout,
                ))
            }
            None => tokio::spawn(serve(
                listener,
                app,
                drain_state,
                stopped,
                timeout,
                header_timeout,
            )),
        };
        tracing::info!(%addr, scheme, data_dir = %config.data_dir.display(), "palisade is serving");
        Ok(Self {
            addr,
            state,
            stop,
            task,
            admin_token,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The first administrator's token, when this start minted it.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Stops accepting connections, finishes in-flight requests (up to the shutdown
    /// timeout), retires the workers and closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.state.host.shutdown().await;
        self.state.store.close().await;
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
