//! Per-tenant cgroups behind one small trait, with v1 (legacy, per-controller hierarchies) and
//! v2 (unified) implementations. The launcher creates the cgroup, attaches the jailed process
//! before it runs any untrusted code, reads the OOM counter after it exits and removes the
//! cgroup when it is empty.

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
}

/// Why the cgroup layer is unavailable: (reason, how to enable).
pub type Unavailable = (String, String);

/// Picks the hierarchy and creates the tenant's cgroup with its limits.
pub fn create(
    version: CgroupVersion,
    tenant: &str,
    limits: &CgroupLimits,
) -> Result<Result<Box<dyn Cgroup>, Unavailable>, JailError> {
    let v2_root = v2_root();
    let v2_has_memory = v2_root
        .as_deref()
        .map(|r| v2_controllers(r).iter().any(|c| c == "memory"))
        .unwrap_or(false);
    let use_v2 = match version {
        CgroupVersion::V2 => true,
        CgroupVersion::V1 => false,
        CgroupVersion::Auto => v2_has_memory || !Path::new(CGROUP_FS).join("memory").exists(),
    };
    if use_v2 {
        let Some(root) = v2_root else {
            return Ok(Err((
                "no cgroup v2 hierarchy is mounted".into(),
                "mount cgroup2 at /sys/fs/cgroup (systemd.unified_cgroup_hierarchy=1)".into(),
            )));
        };
        V2::create(root, tenant, limits).map(|r| r.map(|c| Box::new(c) as Box<dyn Cgroup>))
    } else {
        V1::create(tenant, limits).map(|r| r.map(|c| Box::new(c) as Box<dyn Cgroup>))
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
    match fs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(JailError::Setup {
            layer: Layer::Cgroups,
            message: format!("mkdir {}: {e}", path.display()),
        }),
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

/// cgroup v1: one directory per controller, `/sys/fs/cgroup/<controller>/palisade/<tenant>`.
#[derive(Debug)]
pub struct V1 {
    dirs: Vec<(&'static str, PathBuf)>,
}

impl V1 {
    fn create(tenant: &str, limits: &CgroupLimits) -> Result<Result<V1, Unavailable>, JailError> {
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
        let dirs: Vec<(&'static str, PathBuf)> = wanted
            .iter()
            .map(|c| (*c, Path::new(CGROUP_FS).join(c).join(PALISADE).join(tenant)))
            .collect();
        for (_, d) in &dirs {
            mkdir(d)?;
        }
        let cg = V1 { dirs };
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
        Ok(Ok(cg))
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
            rmdir_when_empty(d, deadline);
        }
    }
}

/// cgroup v2: one directory, `<root>/palisade/<tenant>`.
#[derive(Debug)]
pub struct V2 {
    dir: PathBuf,
}

impl V2 {
    fn create(
        root: PathBuf,
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
        let parent = root.join(PALISADE);
        if !wanted.is_empty() {
            write(&root.join("cgroup.subtree_control"), enable.trim())?;
        }
        mkdir(&parent)?;
        if !wanted.is_empty() {
            write(&parent.join("cgroup.subtree_control"), enable.trim())?;
        }
        let dir = parent.join(tenant);
        mkdir(&dir)?;
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
        Ok(Ok(V2 { dir }))
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
        rmdir_when_empty(&self.dir, Instant::now() + timeout);
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
