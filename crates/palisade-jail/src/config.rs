//! The jail's configuration: plain data, serialised as JSON to the launcher.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the launcher needs to build one jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// Tenant id: names the cgroup `/<controller>/palisade/<instance>/<tenant>`.
    /// `[A-Za-z0-9_.-]`, at most 64 bytes, not `.` or `..`.
    pub tenant: String,
    /// This server instance's id: scopes the cgroups (`palisade/<instance>/<tenant>`) so two
    /// servers on one host never share or overwrite each other's limits, even for tenants of
    /// the same name. `[a-z0-9-]`, 1 to 32 bytes. [`JailConfig::new`] sets
    /// [`default_instance`], random per process.
    pub instance: String,
    /// Host uid that the jail's root (uid 0 inside) maps to. Use one per tenant
    /// (e.g. `100_000 + 1000 * n`): `RLIMIT_NPROC` counts per host uid.
    pub host_uid: u32,
    /// Host gid that the jail's gid 0 maps to.
    pub host_gid: u32,
    /// Host paths bind-mounted read-only (nosuid, nodev) at the same path inside: the program,
    /// the shared libraries it needs (see [`crate::shared_libraries`]), the artifact directory.
    /// They must be absolute, trusted and not writable by tenants.
    pub readonly_paths: Vec<PathBuf>,
    /// Size of a tmpfs (nosuid, nodev, noexec) mounted at `/tmp`; none by default.
    pub scratch_bytes: Option<u64>,
    /// cgroup limits for the tenant.
    pub limits: CgroupLimits,
    /// Resource limits set with `setrlimit` before exec.
    pub rlimits: RlimitConfig,
    /// One switch per layer; all on by default. Switch layers off only in tests.
    pub layers: Layers,
    /// What happens when a layer cannot be applied on this host.
    pub mode: Mode,
    /// Which cgroup hierarchy to use; `Auto` picks v2 when it has the memory controller, else v1.
    pub cgroup_version: CgroupVersion,
    /// Keep the caller's stderr as the jailed program's fd 2 (debugging). Off by default: fds
    /// 0, 1 and 2 are `/dev/null`.
    pub inherit_stderr: bool,
    /// The launcher binary; `None` means `$PALISADE_JAIL_LAUNCHER`, then
    /// `palisade-jail-launcher` next to the current executable (or one directory up).
    pub launcher: Option<PathBuf>,
    /// Arguments for the launcher: lets a multi-call binary (the `palisade` CLI, as
    /// `palisade __jail-launcher`) serve as its own launcher.
    #[serde(default)]
    pub launcher_args: Vec<String>,
}

impl JailConfig {
    /// A config with every layer on, strict mode and moderate limits.
    pub fn new(tenant: impl Into<String>, host_uid: u32, host_gid: u32) -> Self {
        JailConfig {
            tenant: tenant.into(),
            instance: default_instance().to_owned(),
            host_uid,
            host_gid,
            readonly_paths: Vec::new(),
            scratch_bytes: None,
            limits: CgroupLimits::default(),
            rlimits: RlimitConfig::default(),
            layers: Layers::default(),
            mode: Mode::Strict,
            cgroup_version: CgroupVersion::Auto,
            inherit_stderr: false,
            launcher: None,
            launcher_args: Vec::new(),
        }
    }
}

/// The process's default instance id: 12 hex characters, random per process (from the
/// randomly seeded std hasher, mixed with the pid and the start time), fixed for its life.
pub fn default_instance() -> &'static str {
    use std::hash::{BuildHasher, Hasher};
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(now);
        format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
    })
}

/// Whether `instance` is a valid [`JailConfig::instance`]: `[a-z0-9-]{1,32}`.
pub fn valid_instance(instance: &str) -> bool {
    !instance.is_empty()
        && instance.len() <= 32
        && instance
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Per-tenant cgroup limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupLimits {
    /// Memory limit in bytes (v1 `memory.limit_in_bytes` and `memsw`, v2 `memory.max`, swap 0).
    pub memory_max: Option<u64>,
    /// CPU quota in percent of one core (v1 `cpu.cfs_quota_us`, v2 `cpu.max`); 200 = two cores.
    pub cpu_percent: Option<u32>,
    /// Maximum number of tasks (processes and threads).
    pub pids_max: Option<u64>,
    /// Block I/O throttles (v1 `blkio.throttle.*`, v2 `io.max`), per device.
    pub io: Vec<IoThrottle>,
}

impl Default for CgroupLimits {
    fn default() -> Self {
        CgroupLimits {
            memory_max: Some(1 << 30),
            cpu_percent: Some(100),
            pids_max: Some(64),
            io: Vec::new(),
        }
    }
}

/// A block-I/O throttle for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoThrottle {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Bytes per second read.
    pub read_bps: Option<u64>,
    /// Bytes per second written.
    pub write_bps: Option<u64>,
    /// Read operations per second.
    pub read_iops: Option<u64>,
    /// Write operations per second.
    pub write_iops: Option<u64>,
}

/// rlimits (soft = hard). `RLIMIT_AS` is deliberately absent: wasmtime reserves large address
/// space; memory is bounded by the memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlimitConfig {
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_NPROC` (counted per host uid, so map each tenant to its own uid).
    pub nproc: u64,
    /// `RLIMIT_FSIZE` in bytes.
    pub fsize: u64,
    /// `RLIMIT_MEMLOCK` in bytes.
    pub memlock: u64,
    /// `RLIMIT_CPU` in seconds (SIGKILL at the limit); `None` leaves it unlimited (the
    /// supervisor's deadline and the cpu quota bound a long-lived worker instead).
    pub cpu_seconds: Option<u64>,
}

impl Default for RlimitConfig {
    fn default() -> Self {
        RlimitConfig {
            nofile: 64,
            nproc: 64,
            fsize: 64 << 20,
            memlock: 0,
            cpu_seconds: None,
        }
    }
}

/// One switch per layer. All `true` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one switch per layer is the point"
)]
pub struct Layers {
    /// New user namespace; root inside maps to `host_uid`/`host_gid`, setgroups denied.
    pub user_ns: bool,
    /// New PID namespace (the program is PID 1).
    pub pid_ns: bool,
    /// New mount namespace with a tmpfs root holding only the read-only binds, `pivot_root`.
    pub mount_ns: bool,
    /// New, empty network namespace.
    pub net_ns: bool,
    /// New IPC namespace.
    pub ipc_ns: bool,
    /// New UTS namespace (hostname `palisade`).
    pub uts_ns: bool,
    /// New cgroup namespace rooted at the tenant's cgroup.
    pub cgroup_ns: bool,
    /// Per-tenant cgroup with the limits.
    pub cgroups: bool,
    /// rlimits.
    pub rlimits: bool,
    /// `setsid` (no controlling terminal).
    pub setsid: bool,
    /// Close every fd but 0-2 (`/dev/null`) and the IPC fd 3.
    pub close_fds: bool,
    /// `PR_SET_NO_NEW_PRIVS`. Required by `landlock` and `seccomp`.
    pub no_new_privs: bool,
    /// Landlock: read/execute only beneath the read-only binds, read/write in scratch, no TCP,
    /// abstract unix sockets and signals scoped to the jail.
    pub landlock: bool,
    /// Drop every capability (bounding, ambient, permitted, effective, inheritable), lock
    /// securebits.
    pub capabilities: bool,
    /// Inside the jail's namespaces: `kernel.shmmni=0`, `kernel.msgmni=0`, `kernel.sem=0`
    /// (no SysV IPC) and `user.max_user_namespaces=0` (no nested user namespaces).
    pub sysctls: bool,
    /// Seccomp stage 1 (allowlist from `seccomp/worker.json`, `clone3` → ENOSYS, TSYNC).
    pub seccomp: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            user_ns: true,
            pid_ns: true,
            mount_ns: true,
            net_ns: true,
            ipc_ns: true,
            uts_ns: true,
            cgroup_ns: true,
            cgroups: true,
            rlimits: true,
            setsid: true,
            close_fds: true,
            no_new_privs: true,
            landlock: true,
            capabilities: true,
            sysctls: true,
            seccomp: true,
        }
    }
}

impl Layers {
    /// Whether `layer` is switched on.
    pub fn get(&self, layer: Layer) -> bool {
        match layer {
            Layer::UserNs => self.user_ns,
            Layer::PidNs => self.pid_ns,
            Layer::MountNs => self.mount_ns,
            Layer::NetNs => self.net_ns,
            Layer::IpcNs => self.ipc_ns,
            Layer::UtsNs => self.uts_ns,
            Layer::CgroupNs => self.cgroup_ns,
            Layer::Cgroups => self.cgroups,
            Layer::Rlimits => self.rlimits,
            Layer::Setsid => self.setsid,
            Layer::CloseFds => self.close_fds,
            Layer::NoNewPrivs => self.no_new_privs,
            Layer::Landlock => self.landlock,
            Layer::Capabilities => self.capabilities,
            Layer::Sysctls => self.sysctls,
            Layer::Seccomp => self.seccomp,
        }
    }

    /// Switches `layer` on or off.
    pub fn set(&mut self, layer: Layer, on: bool) {
        let slot = match layer {
            Layer::UserNs => &mut self.user_ns,
            Layer::PidNs => &mut self.pid_ns,
            Layer::MountNs => &mut self.mount_ns,
            Layer::NetNs => &mut self.net_ns,
            Layer::IpcNs => &mut self.ipc_ns,
            Layer::UtsNs => &mut self.uts_ns,
            Layer::CgroupNs => &mut self.cgroup_ns,
            Layer::Cgroups => &mut self.cgroups,
            Layer::Rlimits => &mut self.rlimits,
            Layer::Setsid => &mut self.setsid,
            Layer::CloseFds => &mut self.close_fds,
            Layer::NoNewPrivs => &mut self.no_new_privs,
            Layer::Landlock => &mut self.landlock,
            Layer::Capabilities => &mut self.capabilities,
            Layer::Sysctls => &mut self.sysctls,
            Layer::Seccomp => &mut self.seccomp,
        };
        *slot = on;
    }

    /// Returns a copy with `layer` switched off.
    #[must_use]
    pub fn without(mut self, layer: Layer) -> Self {
        self.set(layer, false);
        self
    }
}

/// The layers, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Layer {
    /// See [`Layers::cgroups`].
    Cgroups,
    /// See [`Layers::user_ns`].
    UserNs,
    /// See [`Layers::pid_ns`].
    PidNs,
    /// See [`Layers::net_ns`].
    NetNs,
    /// See [`Layers::ipc_ns`].
    IpcNs,
    /// See [`Layers::uts_ns`].
    UtsNs,
    /// See [`Layers::cgroup_ns`].
    CgroupNs,
    /// See [`Layers::sysctls`].
    Sysctls,
    /// See [`Layers::mount_ns`].
    MountNs,
    /// See [`Layers::setsid`].
    Setsid,
    /// See [`Layers::rlimits`].
    Rlimits,
    /// See [`Layers::close_fds`].
    CloseFds,
    /// See [`Layers::no_new_privs`].
    NoNewPrivs,
    /// See [`Layers::landlock`].
    Landlock,
    /// See [`Layers::capabilities`].
    Capabilities,
    /// See [`Layers::seccomp`].
    Seccomp,
}

impl Layer {
    /// Every layer, in application order.
    pub const ALL: [Layer; 16] = [
        Layer::Cgroups,
        Layer::UserNs,
        Layer::PidNs,
        Layer::NetNs,
        Layer::IpcNs,
        Layer::UtsNs,
        Layer::CgroupNs,
        Layer::Sysctls,
        Layer::MountNs,
        Layer::Setsid,
        Layer::Rlimits,
        Layer::CloseFds,
        Layer::NoNewPrivs,
        Layer::Landlock,
        Layer::Capabilities,
        Layer::Seccomp,
    ];

    /// The layer's name as used in errors, JSON and `palisade doctor`.
    pub fn name(self) -> &'static str {
        match self {
            Layer::UserNs => "user_ns",
            Layer::PidNs => "pid_ns",
            Layer::MountNs => "mount_ns",
            Layer::NetNs => "net_ns",
            Layer::IpcNs => "ipc_ns",
            Layer::UtsNs => "uts_ns",
            Layer::CgroupNs => "cgroup_ns",
            Layer::Cgroups => "cgroups",
            Layer::Rlimits => "rlimits",
            Layer::Setsid => "setsid",
            Layer::CloseFds => "close_fds",
            Layer::NoNewPrivs => "no_new_privs",
            Layer::Landlock => "landlock",
            Layer::Capabilities => "capabilities",
            Layer::Sysctls => "sysctls",
            Layer::Seccomp => "seccomp",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do when a layer cannot be applied on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Fail with [`crate::JailError::LayerUnavailable`] naming the layer and how to enable it.
    #[default]
    Strict,
    /// Skip the layer and list it in [`AppliedLayers::missing`].
    AllowDegraded,
}

/// Which cgroup hierarchy to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    /// v2 if its hierarchy has the memory controller, else v1.
    #[default]
    Auto,
    /// Legacy per-controller hierarchies under `/sys/fs/cgroup/<controller>`.
    V1,
    /// The unified hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
    V2,
}

/// Which layers a jail has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLayers {
    /// Layers in force.
    pub active: Vec<Layer>,
    /// Layers that could not be applied (only in [`Mode::AllowDegraded`]).
    pub missing: Vec<MissingLayer>,
    /// Layers switched off in [`JailConfig::layers`].
    pub disabled: Vec<Layer>,
}

impl AppliedLayers {
    /// Whether `layer` is in force.
    pub fn is_active(&self, layer: Layer) -> bool {
        self.active.contains(&layer)
    }
}

/// A layer that could not be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingLayer {
    /// The layer.
    pub layer: Layer,
    /// Why it is missing and how to enable it.
    pub reason: String,
}
