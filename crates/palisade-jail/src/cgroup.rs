//! Per-tenant cgroups behind one small trait, with v1 (legacy, per-controller hierarchies) and
//! v2 (unified) implementations. The launcher creates the cgroup, attaches the jailed process
//! before it runs any untrusted code, reads the OOM counter after it exits and removes the
//! cgroup when it is empty.
//!
//! Paths are `<controller>/palisade/<instance>/<tenant>` (v1) and
//! `<root>/palisade/<instance>/<tenant>` (v2): scoped by server instance, so two servers on one
//! host never share a tenant's cgroup. Removal also removes the instance directory once empty,
//! and only ever touches this instance's directories.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{CgroupLimits, CgroupVersion, Layer};
use crate::error::JailError;

const CGROUP_FS: &str = "/sys/fs/cgroup";
const PALISADE: &str = "palisade";
const CPU_PERIOD_US: u64 = 100_000;

/// One tenant's cgroup.
pub trait Cgroup: std::fmt::Debug {
    /// Moves `pid` into the cgroup (every controller).
    fn attach(&self, pid: u32) -> Result<(), JailError>;
    /// How many processes the kernel OOM-killed in this cgroup so far.
    fn oom_kills(&self) -> u64;
    /// Removes the cgroup once empty; waits up to `timeout` for exiting tasks. A cgroup still
    /// used by another worker of the same tenant is left in place.
    fn remove(&self, timeout: Duration);
    /// The cgroup's directories (one per controller on v1, one on v2).
    fn dirs(&self) -> Vec<PathBuf>;
    /// Writes `limits` into the cgroup's files (at creation and on later updates).
    fn apply(&self, limits: &CgroupLimits) -> Result<(), JailError>;
}

/// Why the cgroup layer is unavailable: (reason, how to enable).
pub type Unavailable = (String, String);

/// Picks the hierarchy and creates the tenant's cgroup with its limits.
pub fn create(
    version: CgroupVersion,
    instance: &str,
    tenant: &str,
    limits: &CgroupLimits,
) -> Result<Result<Box<dyn Cgroup>, Unavailable>, JailError> {
    // Both are validated by `crate::validate`; checked again because they become paths.
    if !crate::config::valid_instance(instance) {
        return Err(JailError::InvalidConfig(format!(
            "instance {instance:?} must be 1-32 characters of [a-z0-9-]"
        )));
    }
    let v2_root = v2_root();
    if uses_v2(version, v2_root.as_deref()) {
        let Some(root) = v2_root else {
            return Ok(Err((
                "no cgroup v2 hierarchy is mounted".into(),
                "mount cgroup2 at /sys/fs/cgroup (systemd.unified_cgroup_hierarchy=1)".into(),
            )));
        };
        V2::create(root, instance, tenant, limits)
            .map(|r| r.map(|c| Box::new(c) as Box<dyn Cgroup>))
    } else {
        V1::create(instance, tenant, limits).map(|r| r.map(|c| Box::new(c) as Box<dyn Cgroup>))
    }
}

fn uses_v2(version: CgroupVersion, v2_root: Option<&Path>) -> bool {
    let v2_has_memory = v2_root.is_some_and(|r| v2_controllers(r).iter().any(|c| c == "memory"));
    match version {
        CgroupVersion::V2 => true,
        CgroupVersion::V1 => false,
        CgroupVersion::Auto => v2_has_memory || !Path::new(CGROUP_FS).join("memory").exists(),
    }
}

/// Writes `limits` into the tenant's cgroup if it exists (a worker of the tenant runs), and
/// never creates one: the launcher that made it removes it. `Ok(false)` when there is none.
/// A cgroup removed while this runs is not an error.
pub fn update(
    version: CgroupVersion,
    instance: &str,
    tenant: &str,
    limits: &CgroupLimits,
) -> Result<bool, JailError> {
    if !crate::config::valid_instance(instance) {
        return Err(JailError::InvalidConfig(format!(
            "instance {instance:?} must be 1-32 characters of [a-z0-9-]"
        )));
    }
    let root = v2_root();
    let cgroup: Box<dyn Cgroup> = if uses_v2(version, root.as_deref()) {
        let Some(root) = root else { return Ok(false) };
        Box::new(V2 {
            dir: root.join(PALISADE).join(instance).join(tenant),
        })
    } else {
        Box::new(V1 {
            dirs: V1::dirs_of(instance, tenant, limits),
        })
    };
    let exists = || {
        let dirs = cgroup.dirs();
        !dirs.is_empty() && dirs.iter().all(|d| d.is_dir())
    };
    if !exists() {
        return Ok(false);
    }
    match cgroup.apply(limits) {
        Ok(()) => Ok(true),
        // The tenant's last worker exited and its launcher removed the cgroup meanwhile.
        Err(_) if !exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The v2 hierarchy root: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones.
pub fn v2_root() -> Option<PathBuf> {
    let pure = Path::new(CGROUP_FS);
    if pure.join("cgroup.controllers").exists() {
        return Some(pure.to_path_buf());
    }
    let hybrid = pure.join("unified");
    hybrid.join("cgroup.controllers").exists().then_some(hybrid)
}

/// Controllers available in a v2 hierarchy.
pub fn v2_controllers(root: &Path) -> Vec<String> {
    fs::read_to_string(root.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether a v1 controller hierarchy is mounted.
pub fn v1_controller(name: &str) -> bool {
    Path::new(CGROUP_FS)
        .join(name)
        .join("cgroup.procs")
        .exists()
}

fn write(path: &Path, value: &str) -> Result<(), JailError> {
    fs::write(path, value).map_err(|e| JailError::Setup {
        layer: Layer::Cgroups,
        message: format!("write {value:?} to {}: {e}", path.display()),
    })
}

fn mkdir(path: &Path) -> Result<(), JailError> {
    // A concurrent launcher of this instance may remove the (then empty) instance directory
    // between our mkdirs: retry a few times.
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && attempts < 5 => attempts += 1,
            Err(e) => {
                return Err(JailError::Setup {
                    layer: Layer::Cgroups,
                    message: format!("mkdir {}: {e}", path.display()),
                });
            }
        }
    }
}

fn counter(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Removes `dir` once its tasks are gone. Our jail's tasks are already reaped when this runs
/// (the PID namespace's init exits last), so tasks still listed after a short grace belong
/// to another worker of the same tenant: leave the cgroup to it.
fn rmdir_when_empty(dir: &Path, deadline: Instant) {
    let grace = Instant::now() + Duration::from_millis(100);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(_) => {
                let now = Instant::now();
                let shared = now > grace
                    && !fs::read_to_string(dir.join("cgroup.procs"))
                        .unwrap_or_default()
                        .trim()
                        .is_empty();
                if shared || now >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Removes a tenant cgroup directory once empty, then its instance directory if that is
/// empty too (another tenant of this instance keeps it; `rmdir` never removes a non-empty
/// directory, so other instances' and tenants' directories are never touched).
fn remove_tenant_dir(dir: &Path, deadline: Instant) {
    rmdir_when_empty(dir, deadline);
    if let Some(instance_dir) = dir.parent() {
        let _ = fs::remove_dir(instance_dir);
    }
}

/// Supervisor-side cleanup after the launcher died without removing its cgroup: removes each
/// of `dirs` (as reported by the launcher) once empty, plus the instance directory when
/// empty. Only paths of the form `.../palisade/<instance>/<tenant>` under the cgroup mount
/// are touched. The caller has already killed its jail (through its pidfd: the whole PID
/// namespace); tasks still listed after a short grace belong to another worker of the same
/// tenant and keep the cgroup.
pub(crate) fn remove_dirs(dirs: &[PathBuf], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for d in dirs {
        let ours = d.starts_with(CGROUP_FS)
            && d.parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|n| n == PALISADE);
        if ours {
            remove_tenant_dir(d, deadline);
        }
    }
}

/// The controllers `limits` needs; the block I/O controller is `blkio` on v1 and `io` on v2.
fn wanted_controllers(limits: &CgroupLimits, io: &'static str) -> Vec<&'static str> {
    [
        (limits.memory_max.is_some(), "memory"),
        (limits.cpu_percent.is_some(), "cpu"),
        (limits.pids_max.is_some(), "pids"),
        (!limits.io.is_empty(), io),
    ]
    .into_iter()
    .filter_map(|(needed, controller)| needed.then_some(controller))
    .collect()
}

/// cgroup v1: one directory per controller,
/// `/sys/fs/cgroup/<controller>/palisade/<instance>/<tenant>`.
#[derive(Debug)]
pub struct V1 {
    dirs: Vec<(&'static str, PathBuf)>,
}

impl V1 {
    fn create(
        instance: &str,
        tenant: &str,
        limits: &CgroupLimits,
    ) -> Result<Result<V1, Unavailable>, JailError> {
        let wanted = wanted_controllers(limits, "blkio");
        for c in &wanted {
            if !v1_controller(c) {
                return Ok(Err((
                    format!("cgroup v1 controller `{c}` is not mounted at {CGROUP_FS}/{c}"),
                    format!(
                        "mount it (`mount -t cgroup -o {c} cgroup {CGROUP_FS}/{c}`) or use a cgroup v2 host with `{c}` enabled"
                    ),
                )));
            }
        }
        let dirs = Self::dirs_of(instance, tenant, limits);
        for (_, d) in &dirs {
            mkdir(d)?;
        }
        let cg = V1 { dirs };
        cg.write_limits(limits)?;
        Ok(Ok(cg))
    }

    fn dirs_of(
        instance: &str,
        tenant: &str,
        limits: &CgroupLimits,
    ) -> Vec<(&'static str, PathBuf)> {
        wanted_controllers(limits, "blkio")
            .into_iter()
            .map(|c| {
                let dir = Path::new(CGROUP_FS)
                    .join(c)
                    .join(PALISADE)
                    .join(instance)
                    .join(tenant);
                (c, dir)
            })
            .collect()
    }

    fn write_limits(&self, limits: &CgroupLimits) -> Result<(), JailError> {
        let cg = self;
        if let (Some(max), Some(d)) = (limits.memory_max, cg.dir("memory")) {
            let limit = d.join("memory.limit_in_bytes");
            let memsw = d.join("memory.memsw.limit_in_bytes");
            // memsw must stay >= limit: raise memsw first when growing, limit first when shrinking.
            if memsw.exists() {
                let _ = fs::write(&memsw, max.to_string());
                write(&limit, &max.to_string())?;
                write(&memsw, &max.to_string())?;
            } else {
                write(&limit, &max.to_string())?;
            }
        }
        if let (Some(pct), Some(d)) = (limits.cpu_percent, cg.dir("cpu")) {
            write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let quota = (u64::from(pct) * CPU_PERIOD_US / 100).max(1000);
            write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let (Some(max), Some(d)) = (limits.pids_max, cg.dir("pids")) {
            write(&d.join("pids.max"), &max.to_string())?;
        }
        if let Some(d) = cg.dir("blkio") {
            for t in &limits.io {
                let dev = format!("{}:{}", t.major, t.minor);
                for (file, v) in [
                    ("blkio.throttle.read_bps_device", t.read_bps),
                    ("blkio.throttle.write_bps_device", t.write_bps),
                    ("blkio.throttle.read_iops_device", t.read_iops),
                    ("blkio.throttle.write_iops_device", t.write_iops),
                ] {
                    if let Some(v) = v {
                        write(&d.join(file), &format!("{dev} {v}"))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }
}

impl Cgroup for V1 {
    fn attach(&self, pid: u32) -> Result<(), JailError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn oom_kills(&self) -> u64 {
        self.dir("memory")
            .map(|d| counter(&d.join("memory.oom_control"), "oom_kill"))
            .unwrap_or(0)
    }

    fn remove(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (_, d) in &self.dirs {
            remove_tenant_dir(d, deadline);
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    fn apply(&self, limits: &CgroupLimits) -> Result<(), JailError> {
        self.write_limits(limits)
    }
}

/// cgroup v2: one directory, `<root>/palisade/<instance>/<tenant>`.
#[derive(Debug)]
pub struct V2 {
    dir: PathBuf,
}

impl V2 {
    fn create(
        root: PathBuf,
        instance: &str,
        tenant: &str,
        limits: &CgroupLimits,
    ) -> Result<Result<V2, Unavailable>, JailError> {
        let available = v2_controllers(&root);
        let wanted = wanted_controllers(limits, "io");
        for c in &wanted {
            if !available.iter().any(|a| a == c) {
                return Ok(Err((
                    format!(
                        "cgroup v2 controller `{c}` is not available in {} (it has: {})",
                        root.display(),
                        if available.is_empty() {
                            "none".to_owned()
                        } else {
                            available.join(" ")
                        }
                    ),
                    format!(
                        "boot with systemd.unified_cgroup_hierarchy=1 (cgroup_no_v1=all) so `{c}` is on the unified hierarchy, or use cgroup_version = v1"
                    ),
                )));
            }
        }
        let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        let palisade = root.join(PALISADE);
        let parent = palisade.join(instance);
        if !wanted.is_empty() {
            write(&root.join("cgroup.subtree_control"), enable.trim())?;
        }
        mkdir(&palisade)?;
        if !wanted.is_empty() {
            write(&palisade.join("cgroup.subtree_control"), enable.trim())?;
        }
        mkdir(&parent)?;
        if !wanted.is_empty() {
            write(&parent.join("cgroup.subtree_control"), enable.trim())?;
        }
        let dir = parent.join(tenant);
        mkdir(&dir)?;
        let cg = V2 { dir };
        cg.write_limits(limits)?;
        Ok(Ok(cg))
    }

    fn write_limits(&self, limits: &CgroupLimits) -> Result<(), JailError> {
        let dir = &self.dir;
        if let Some(max) = limits.memory_max {
            write(&dir.join("memory.max"), &max.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(pct) = limits.cpu_percent {
            let quota = (u64::from(pct) * CPU_PERIOD_US / 100).max(1000);
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        if let Some(max) = limits.pids_max {
            write(&dir.join("pids.max"), &max.to_string())?;
        }
        for t in &limits.io {
            let mut line = format!("{}:{}", t.major, t.minor);
            for (k, v) in [
                ("rbps", t.read_bps),
                ("wbps", t.write_bps),
                ("riops", t.read_iops),
                ("wiops", t.write_iops),
            ] {
                if let Some(v) = v {
                    line.push_str(&format!(" {k}={v}"));
                }
            }
            write(&dir.join("io.max"), &line)?;
        }
        Ok(())
    }
}

impl Cgroup for V2 {
    fn attach(&self, pid: u32) -> Result<(), JailError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn oom_kills(&self) -> u64 {
        counter(&self.dir.join("memory.events"), "oom_kill")
    }

    fn remove(&self, timeout: Duration) {
        remove_tenant_dir(&self.dir, Instant::now() + timeout);
    }

    fn dirs(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    fn apply(&self, limits: &CgroupLimits) -> Result<(), JailError> {
        self.write_limits(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_key_value_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(counter(&f, "oom_kill"), 2);
        assert_eq!(counter(&f, "oom"), 1);
        assert_eq!(counter(&f, "missing"), 0);
    }
}
