//! Workers confined by `palisade-jail`: one jail per tenant worker, with a per-tenant host
//! uid, the tenant's cgroup, and the worker binary and its libraries as the only files.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use palisade_jail::{ExitReason, JailConfig, JailError, Jailed, Mode};
use palisade_model::{Isolation, IsolationMode};

use crate::launch::{ExitSummary, LaunchError, Launcher, WorkerCommand, WorkerProcess};

/// Starts each tenant's worker in a jail built from `template`.
#[derive(Debug)]
pub struct JailLauncher {
    pub command: WorkerCommand,
    /// Layers, limits and mode for every worker; `tenant`, the ids and the read-only paths are
    /// filled in per launch.
    pub template: JailConfig,
    missing: Mutex<Vec<String>>,
}

/// First host uid handed to tenants; each tenant gets its own, so per-uid limits
/// (`RLIMIT_NPROC`) never mix tenants.
const TENANT_UID_BASE: u32 = 200_000;
const TENANT_UID_SLOTS: u32 = 1_000_000;

impl JailLauncher {
    /// A launcher for `command`, whose program must be an absolute path; it and the shared
    /// libraries it links are bind-mounted read-only into every jail.
    pub fn new(command: WorkerCommand, mut template: JailConfig) -> Result<Self, LaunchError> {
        let mut paths = palisade_jail::readonly_paths_for(&command.program).map_err(jail_error)?;
        paths.append(&mut template.readonly_paths);
        template.readonly_paths = paths;
        Ok(Self {
            command,
            template,
            missing: Mutex::default(),
        })
    }

    /// The host uid of a tenant's jail root: stable for a tenant, distinct between tenants
    /// unless two of a million slots collide (the control plane will allocate them instead).
    pub fn tenant_uid(tenant: &str) -> u32 {
        // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
        let hash = tenant
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        TENANT_UID_BASE + (hash % u64::from(TENANT_UID_SLOTS)) as u32
    }
}

fn jail_error(error: JailError) -> LaunchError {
    match error {
        JailError::LayerUnavailable { .. } => LaunchError::IsolationUnavailable(error.to_string()),
        other => LaunchError::Other(other.to_string()),
    }
}

/// Cgroup and file names allow `[A-Za-z0-9_.-]`: anything else becomes `_`, plus a hash so
/// two tenants never share a cgroup.
fn cgroup_name(tenant: &str) -> String {
    let clean: String = tenant
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}-{:x}", JailLauncher::tenant_uid(tenant))
}

impl Launcher for JailLauncher {
    fn launch(&self, tenant: &str, ipc: OwnedFd) -> Result<Box<dyn WorkerProcess>, LaunchError> {
        let mut config = self.template.clone();
        config.tenant = cgroup_name(tenant);
        config.host_uid = Self::tenant_uid(tenant);
        config.host_gid = config.host_uid;
        let args: Vec<OsString> = self.command.args.clone();
        let jailed =
            palisade_jail::spawn(&config, &self.command.program, &args, ipc).map_err(jail_error)?;
        let missing: Vec<String> = jailed
            .applied()
            .missing
            .iter()
            .map(|m| m.layer.name().to_owned())
            .collect();
        *self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = missing;
        Ok(Box::new(JailedProcess(Some(jailed))))
    }

    fn isolation(&self) -> Isolation {
        let missing = self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Isolation {
            mode: if missing.is_empty() {
                IsolationMode::Jailed
            } else {
                IsolationMode::Degraded
            },
            missing,
        }
    }
}

struct JailedProcess(Option<Jailed>);

impl WorkerProcess for JailedProcess {
    fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Jailed::pid)
    }

    fn kill(&mut self) {
        if let Some(jailed) = &self.0 {
            let _ = jailed.kill();
        }
    }

    fn wait(mut self: Box<Self>) -> Pin<Box<dyn Future<Output = ExitSummary> + Send>> {
        let jailed = self.0.take();
        Box::pin(async move {
            let Some(jailed) = jailed else {
                return ExitSummary("gone".into());
            };
            match tokio::task::spawn_blocking(move || jailed.wait()).await {
                Ok(Ok(report)) => ExitSummary(match report.reason {
                    ExitReason::Exited => {
                        format!("exited with status {}", report.code.unwrap_or(-1))
                    }
                    ExitReason::Oom => {
                        "was killed by the out-of-memory killer (cgroup memory limit)".into()
                    }
                    ExitReason::Seccomp => "was killed by seccomp (SIGSYS)".into(),
                    ExitReason::CpuLimit => "was killed at its CPU-time limit".into(),
                    ExitReason::Killed => "was killed (SIGKILL)".into(),
                    ExitReason::Signal(signal) => format!("was killed by signal {signal}"),
                    other => format!("ended ({other:?})"),
                }),
                Ok(Err(error)) => {
                    ExitSummary(format!("ended, but its exit could not be read: {error}"))
                }
                Err(error) => ExitSummary(format!("ended, but waiting for it failed: {error}")),
            }
        })
    }
}

/// Whether strict mode should refuse: the template says `Strict` unless degraded runs were
/// explicitly allowed.
pub fn mode(allow_degraded: bool) -> Mode {
    if allow_degraded {
        Mode::AllowDegraded
    } else {
        Mode::Strict
    }
}

/// The worker binary for jails: the running executable (a `palisade` binary embeds the worker).
pub fn current_exe() -> Result<PathBuf, LaunchError> {
    std::env::current_exe()
        .map_err(|e| LaunchError::Other(format!("cannot find the running executable: {e}")))
}
