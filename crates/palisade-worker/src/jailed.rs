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

use crate::launch::{
    ExitSummary, LaunchError, Launcher, WorkerCommand, WorkerLimitTable, WorkerLimits,
    WorkerProcess,
};

/// Starts each tenant's worker in a jail built from `template`.
#[derive(Debug)]
pub struct JailLauncher {
    pub command: WorkerCommand,
    /// Layers, limits and mode for every worker; `tenant`, the ids and the read-only paths are
    /// filled in per launch.
    pub template: JailConfig,
    uids: TenantUids,
    missing: Mutex<Vec<String>>,
    /// Each tenant's worker limits, written into its cgroup at every launch.
    worker_limits: Mutex<WorkerLimitTable>,
    /// The cgroup name of every tenant launched so far, to update running workers' limits.
    cgroups: Mutex<std::collections::HashMap<String, String>>,
}

/// First host uid handed to tenants; each tenant gets its own, so per-uid limits
/// (`RLIMIT_NPROC`) never mix tenants.
const TENANT_UID_BASE: u32 = 200_000;
/// Slots the control plane allocates (persisted, one per tenant): uids `BASE..BASE + SLOTS`.
pub const TENANT_UID_SLOTS: u32 = 1_000_000;
/// Tenants nobody registered (local runs) get process-local slots above the persisted range,
/// so they can never share a uid with a registered tenant.
const LOCAL_SLOT_BASE: u32 = TENANT_UID_SLOTS;
const LOCAL_SLOTS: u32 = 100_000;

/// Each tenant's host uid slot: filled by the control plane from the store (unique per live
/// tenant, never reused while the tenant exists); a tenant that was not registered (local runs)
/// gets the next process-local slot. Shared between the launcher and whoever registers.
#[derive(Debug, Clone, Default)]
pub struct TenantUids(std::sync::Arc<Mutex<UidTable>>);

#[derive(Debug, Default)]
struct UidTable {
    /// Persisted slots, from the store.
    slots: std::collections::HashMap<String, u32>,
    /// Process-local slots of unregistered tenants (kept apart: a persisted slot past the
    /// persisted range is an error, a local one never is).
    local: std::collections::HashMap<String, u32>,
}

impl TenantUids {
    /// Records `tenant`'s persisted slot.
    pub fn set(&self, tenant: &str, slot: u32) {
        self.lock().slots.insert(tenant.to_owned(), slot);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UidTable> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The host uid of `tenant`'s jail root.
    pub fn uid(&self, tenant: &str) -> Result<u32, LaunchError> {
        let mut table = self.lock();
        if let Some(&slot) = table.slots.get(tenant) {
            return if slot < TENANT_UID_SLOTS {
                Ok(TENANT_UID_BASE + slot)
            } else {
                Err(LaunchError::Other(format!(
                    "tenant {tenant} has uid slot {slot}, past the {TENANT_UID_SLOTS} there are"
                )))
            };
        }
        if let Some(&slot) = table.local.get(tenant) {
            return Ok(TENANT_UID_BASE + slot);
        }
        let next = u32::try_from(table.local.len()).unwrap_or(u32::MAX);
        if next >= LOCAL_SLOTS {
            return Err(LaunchError::Other(
                "every process-local uid slot is in use".into(),
            ));
        }
        let slot = LOCAL_SLOT_BASE + next;
        table.local.insert(tenant.to_owned(), slot);
        Ok(TENANT_UID_BASE + slot)
    }
}

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
            uids: TenantUids::default(),
            missing: Mutex::default(),
            worker_limits: Mutex::default(),
            cgroups: Mutex::default(),
        })
    }

    /// Takes tenants' uid slots from `uids` (the control plane's, filled from the store).
    pub fn with_uids(mut self, uids: TenantUids) -> Self {
        self.uids = uids;
        self
    }

    /// The jail of `tenant`'s worker in cgroup `cgroup`: the template with the tenant's
    /// worker limits (memory and CPU quota of its cgroup).
    fn config_for(&self, cgroup: String, limits: Option<WorkerLimits>) -> JailConfig {
        let mut config = self.template.clone();
        config.tenant = cgroup;
        if let Some(limits) = limits {
            config.limits.memory_max = Some(limits.memory_bytes);
            config.limits.cpu_percent = Some(cpu_percent(limits.cpu_millicores));
        }
        config
    }
}

/// Millicores as the jail's percent of one core, rounded up, at least 1.
fn cpu_percent(millicores: u64) -> u32 {
    u32::try_from(millicores.div_ceil(10).max(1)).unwrap_or(u32::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn jail_error(error: JailError) -> LaunchError {
    match error {
        JailError::LayerUnavailable { .. } => LaunchError::IsolationUnavailable(error.to_string()),
        other => LaunchError::Other(other.to_string()),
    }
}

/// Cgroup and file names allow `[A-Za-z0-9_.-]`: anything else becomes `_`, plus the
/// tenant's unique uid so two tenants never share a cgroup.
fn cgroup_name(tenant: &str, uid: u32) -> String {
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
    format!("{clean}-{uid:x}")
}

impl Launcher for JailLauncher {
    fn launch(&self, tenant: &str, ipc: OwnedFd) -> Result<Box<dyn WorkerProcess>, LaunchError> {
        let uid = self.uids.uid(tenant)?;
        let cgroup = cgroup_name(tenant, uid);
        let limits = lock(&self.worker_limits).get(tenant);
        lock(&self.cgroups).insert(tenant.to_owned(), cgroup.clone());
        let mut config = self.config_for(cgroup, limits);
        config.host_uid = uid;
        config.host_gid = uid;
        let args: Vec<OsString> = self.command.args.clone();
        let jailed =
            palisade_jail::spawn(&config, &self.command.program, &args, ipc).map_err(jail_error)?;
        let missing: Vec<String> = jailed
            .applied()
            .missing
            .iter()
            .map(|m| m.layer.name().to_owned())
            .collect();
        *lock(&self.missing) = missing.clone();
        Ok(Box::new(JailedProcess {
            jailed: Some(jailed),
            isolation: isolation_of(missing),
        }))
    }

    fn isolation(&self) -> Isolation {
        isolation_of(lock(&self.missing).clone())
    }

    fn set_worker_limits(&self, table: WorkerLimitTable) {
        // Installed first, so a worker launched from now on gets the new limits.
        let previous = std::mem::replace(&mut *lock(&self.worker_limits), table.clone());
        let launched: Vec<(String, String)> = lock(&self.cgroups)
            .iter()
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect();
        for (tenant, cgroup) in launched {
            let limits = table.get(&tenant);
            if limits == previous.get(&tenant) {
                continue;
            }
            let config = self.config_for(cgroup, limits);
            match palisade_jail::update_cgroup_limits(&config) {
                Ok(true) => tracing::info!(
                    %tenant,
                    memory_max = ?config.limits.memory_max,
                    cpu_percent = ?config.limits.cpu_percent,
                    "updated the running worker's cgroup limits"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    %tenant,
                    %error,
                    "could not update the running worker's cgroup limits; its next worker gets them"
                ),
            }
        }
    }
}

fn isolation_of(missing: Vec<String>) -> Isolation {
    Isolation {
        mode: if missing.is_empty() {
            IsolationMode::Jailed
        } else {
            IsolationMode::Degraded
        },
        missing,
    }
}

struct JailedProcess {
    jailed: Option<Jailed>,
    /// The layers this jail got, recorded when it started.
    isolation: Isolation,
}

impl WorkerProcess for JailedProcess {
    fn pid(&self) -> Option<u32> {
        self.jailed.as_ref().map(Jailed::pid)
    }

    fn isolation(&self) -> Option<Isolation> {
        Some(self.isolation.clone())
    }

    fn kill(&mut self) {
        if let Some(jailed) = &self.jailed {
            let _ = jailed.kill();
        }
    }

    fn wait(mut self: Box<Self>) -> Pin<Box<dyn Future<Output = ExitSummary> + Send>> {
        let jailed = self.jailed.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_tenants_get_their_slots_and_others_never_collide_with_them() {
        let uids = TenantUids::default();
        uids.set("acme", 0);
        uids.set("globex", 1);
        assert_eq!(uids.uid("acme").ok(), Some(TENANT_UID_BASE));
        assert_eq!(uids.uid("globex").ok(), Some(TENANT_UID_BASE + 1));
        // Unregistered tenants get process-local uids past every persisted slot, each its own
        // and stable.
        let local = uids.uid("local").ok();
        let other = uids.uid("other").ok();
        assert_eq!(local, Some(TENANT_UID_BASE + TENANT_UID_SLOTS));
        assert_ne!(local, other);
        assert_eq!(uids.uid("local").ok(), local);
        uids.set("broken", TENANT_UID_SLOTS);
        assert!(uids.uid("broken").is_err());
    }
}
