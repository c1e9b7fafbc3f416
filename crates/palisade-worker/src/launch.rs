//! How worker processes are started: a plain child process (`--no-jail`, for debugging) or,
//! through the confinement crate, a fully jailed one. The supervisor only sees this trait.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;

use palisade_model::Isolation;

/// Why a worker process ended, for the `worker_crashed` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitSummary(pub String);

/// A running worker process.
pub trait WorkerProcess: Send {
    fn pid(&self) -> Option<u32>;
    /// How this process is isolated, as recorded when it started (`None`: as the launcher
    /// says for all its workers).
    fn isolation(&self) -> Option<Isolation> {
        None
    }
    /// Kills the process (SIGKILL); harmless when it has already exited.
    fn kill(&mut self);
    /// Waits for the process to end and says why it ended.
    fn wait(self: Box<Self>) -> Pin<Box<dyn Future<Output = ExitSummary> + Send>>;
}

/// A worker process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("could not start the worker process {program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    /// Strict mode: a confinement layer is missing on this host.
    #[error("{0}")]
    IsolationUnavailable(String),
    #[error("{0}")]
    Other(String),
}

/// Starts worker processes for tenants.
pub trait Launcher: Send + Sync {
    /// Starts a worker for `tenant` whose standard input is `ipc`, a Unix socket.
    fn launch(&self, tenant: &str, ipc: OwnedFd) -> Result<Box<dyn WorkerProcess>, LaunchError>;
    /// How the workers it starts are isolated.
    fn isolation(&self) -> Isolation;
    /// Installs every tenant's worker-level limits (from the effective policy): workers
    /// started later get them, and a launcher that can also changes running workers'. Plain
    /// workers have no per-tenant limits below the wasm sandbox, so the default ignores them.
    fn set_worker_limits(&self, _limits: WorkerLimitTable) {}
}

/// Worker-level limits of one tenant (policy `worker_memory` and `worker_cpu`): the whole
/// worker process, beyond the per-invocation wasm limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    pub memory_bytes: u64,
    pub cpu_millicores: u64,
}

/// Every tenant's worker limits: `default` for a tenant without its own entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerLimitTable {
    pub default: Option<WorkerLimits>,
    pub tenants: std::collections::HashMap<String, WorkerLimits>,
}

impl WorkerLimitTable {
    pub fn get(&self, tenant: &str) -> Option<WorkerLimits> {
        self.tenants.get(tenant).copied().or(self.default)
    }
}

/// The worker program: the `palisade` binary with a hidden subcommand, or `palisade-worker`.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Starts workers as ordinary child processes: no confinement below the wasm sandbox.
#[derive(Debug, Clone)]
pub struct PlainLauncher {
    pub command: WorkerCommand,
}

impl Launcher for PlainLauncher {
    fn launch(&self, _tenant: &str, ipc: OwnedFd) -> Result<Box<dyn WorkerProcess>, LaunchError> {
        let child = tokio::process::Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(Stdio::from(ipc))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env_clear()
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| LaunchError::Spawn {
                program: self.command.program.display().to_string(),
                error,
            })?;
        Ok(Box::new(PlainProcess(child)))
    }

    fn isolation(&self) -> Isolation {
        Isolation::default()
    }
}

struct PlainProcess(tokio::process::Child);

impl WorkerProcess for PlainProcess {
    fn pid(&self) -> Option<u32> {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.start_kill();
    }

    fn wait(mut self: Box<Self>) -> Pin<Box<dyn Future<Output = ExitSummary> + Send>> {
        Box::pin(async move {
            match self.0.wait().await {
                Ok(status) => ExitSummary(describe_status(status)),
                Err(error) => ExitSummary(format!("unknown ({error})")),
            }
        })
    }
}

/// "exited with status 3", "killed by signal 9 (SIGKILL)", "killed by seccomp (SIGSYS)".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(31)) => "killed by seccomp (SIGSYS)".into(),
        (None, Some(9)) => "killed by signal 9 (SIGKILL)".into(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended for an unknown reason".into(),
    }
}
