//! Palisade's confinement layer: run a program as a per-tenant worker process in a Linux jail.
//!
//! [`spawn`] starts `palisade-jail-launcher`, a freshly exec'd single-threaded process (the
//! supervisor is a multithreaded tokio process and must never fork itself into a jail). The
//! launcher creates the tenant's cgroup, `clone3`s a child into new user, PID, mount, network,
//! IPC and UTS namespaces, writes its uid/gid maps and attaches it to the cgroup; the child
//! then applies, in order: cgroup namespace, in-jail sysctls (no SysV IPC, no nested user
//! namespaces), a tmpfs root holding only the read-only binds (`pivot_root`, old root
//! detached, root read-only), hostname, `setsid`, rlimits, fds (0-2 `/dev/null`, the IPC fd
//! at 3, nothing else), `no_new_privs`, Landlock, capability drop and the seccomp stage-1
//! allowlist (TSYNC), and execs the program with an empty environment.
//!
//! ```no_run
//! use std::os::unix::net::UnixStream;
//! use std::path::Path;
//! use palisade_jail::{JailConfig, spawn};
//!
//! let worker = Path::new("/opt/palisade/bin/palisade-worker");
//! let mut config = JailConfig::new("tenant-7", 107_000, 107_000);
//! config.readonly_paths = palisade_jail::readonly_paths_for(worker)?;
//! let (ours, theirs) = UnixStream::pair()?;
//! let jailed = spawn(&config, worker, &[], theirs.into())?;
//! println!("worker {} runs with {:?}", jailed.pid(), jailed.applied().active);
//! let report = jailed.wait()?;
//! # drop(ours);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The worker calls [`seccomp_stage2`] once its runtime is initialised. [`doctor`] reports
//! which layers this host supports. This is the only crate of the workspace with `unsafe`
//! code; it lives in `sys.rs` and `seccomp.rs` (plus one `pre_exec` below).
#![allow(
    unsafe_code,
    reason = "the jail needs raw system calls (clone3, mount, capset, seccomp); each unsafe block has a SAFETY comment"
)]

mod cgroup;
mod config;
mod doctor;
mod error;
mod landlock;
#[doc(hidden)]
pub mod launcher;
mod seccomp;
mod sys;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub use crate::config::{
    AppliedLayers, CgroupLimits, CgroupVersion, IoThrottle, JailConfig, Layer, Layers,
    MissingLayer, Mode, RlimitConfig, default_instance, valid_instance,
};
pub use crate::doctor::{LayerStatus, doctor};
pub use crate::error::JailError;
use crate::launcher::{LaunchRequest, LauncherMsg};

/// Landlock ABI the strict mode requires (6: filesystem, TCP, abstract-socket and signal
/// scopes; Linux 6.12).
pub const LANDLOCK_MIN_ABI: i32 = 6;

/// Environment variable naming the launcher binary.
pub const LAUNCHER_ENV: &str = "PALISADE_JAIL_LAUNCHER";

/// The launcher's file name.
pub const LAUNCHER_NAME: &str = "palisade-jail-launcher";

/// How a jailed program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Terminating signal, if it was killed.
    pub signal: Option<i32>,
    /// Why, classified.
    pub reason: ExitReason,
    /// CPU time (user + system) it used, in microseconds.
    pub cpu_usec: u64,
}

/// Why a jailed program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExitReason {
    /// It exited by itself (see `code`).
    Exited,
    /// The memory cgroup's OOM killer killed it.
    Oom,
    /// Seccomp killed it (SIGSYS), e.g. a 32-bit system call.
    Seccomp,
    /// It reached `RLIMIT_CPU`.
    CpuLimit,
    /// [`Jailed::kill`] killed it.
    Killed,
    /// Another signal.
    Signal(i32),
}

/// A running jail.
#[derive(Debug)]
pub struct Jailed {
    pid: u32,
    pidfd: OwnedFd,
    applied: AppliedLayers,
    launcher: Child,
    /// The cgroup directories the launcher created (it removes them itself unless it dies).
    cgroups: Vec<PathBuf>,
    lifeline: Option<ChildStdin>,
    reports: BufReader<ChildStdout>,
    killed: AtomicBool,
    exit: Option<ExitReport>,
}

impl Jailed {
    /// The jailed process's pid (in the caller's PID namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The launcher's pid (the jailed process's parent).
    pub fn launcher_pid(&self) -> u32 {
        self.launcher.id()
    }

    /// Which layers are active, missing (degraded mode) or switched off.
    pub fn applied(&self) -> &AppliedLayers {
        &self.applied
    }

    /// A pidfd for the jailed process; it becomes readable when the process exits (poll it,
    /// then call [`Jailed::try_wait`]).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// SIGKILL through the pidfd (kills the whole PID namespace). Idempotent.
    pub fn kill(&self) -> Result<(), JailError> {
        self.killed.store(true, Ordering::SeqCst);
        match sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(JailError::io("pidfd_send_signal(SIGKILL)", e)),
        }
    }

    /// The exit report if the process has exited, without blocking (beyond the moment the
    /// launcher needs to reap it).
    pub fn try_wait(&mut self) -> Result<Option<ExitReport>, JailError> {
        if self.exit.is_some() {
            return Ok(self.exit.clone());
        }
        let ready = sys::poll_readable(&[self.pidfd.as_fd()], 0)
            .map_err(|e| JailError::io("poll pidfd", e))?;
        if ready[0] {
            self.read_exit().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Blocks until the process has exited and returns how.
    pub fn wait(mut self) -> Result<ExitReport, JailError> {
        self.read_exit()
    }

    fn read_exit(&mut self) -> Result<ExitReport, JailError> {
        if let Some(r) = &self.exit {
            return Ok(r.clone());
        }
        match read_msg(&mut self.reports)? {
            LauncherMsg::Exit { mut report } => {
                if self.killed.load(Ordering::SeqCst)
                    && report.signal == Some(libc::SIGKILL)
                    && report.reason != ExitReason::Oom
                {
                    report.reason = ExitReason::Killed;
                }
                self.exit = Some(report.clone());
                Ok(report)
            }
            other => Err(JailError::Protocol(format!(
                "expected an exit report, got {other:?}"
            ))),
        }
    }
}

impl Drop for Jailed {
    /// Closes the lifeline (the launcher kills the jail if it still runs), then reaps the
    /// launcher, which removes the cgroup first. If the launcher died instead of exiting
    /// normally (killed, say), its cgroup is still there: kill the jail (its whole PID
    /// namespace, through the pidfd), wait for it to exit and remove the cgroup here. Blocks
    /// for as long as that takes (milliseconds); async callers drop it in `spawn_blocking`.
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let clean_exit = self.launcher.wait().is_ok_and(|s| s.success());
        if !clean_exit && !self.cgroups.is_empty() {
            let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
            // The pidfd turns readable once the process has exited (left its cgroup).
            let _ = sys::poll_readable(&[self.pidfd.as_fd()], 2000);
            cgroup::remove_dirs(&self.cgroups, std::time::Duration::from_secs(2));
        }
    }
}

fn read_msg(r: &mut BufReader<ChildStdout>) -> Result<LauncherMsg, JailError> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .map_err(|e| JailError::io("read from the launcher", e))?;
    if n == 0 {
        return Err(JailError::Protocol(
            "the launcher exited without a report".into(),
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| JailError::Protocol(format!("bad launcher message {line:?}: {e}")))
}

/// Runs `program` with `args` inside a new jail built from `config`.
///
/// `ipc` becomes fd 3 in the jailed program; fds 0, 1 and 2 are `/dev/null` (fd 2 is the
/// caller's stderr with [`JailConfig::inherit_stderr`]); every other fd is closed; the
/// environment is empty. `program` must be absolute and inside one of
/// [`JailConfig::readonly_paths`]. The launcher is found as documented on
/// [`JailConfig::launcher`].
pub fn spawn(
    config: &JailConfig,
    program: &Path,
    args: &[OsString],
    ipc: OwnedFd,
) -> Result<Jailed, JailError> {
    validate(config, program)?;
    let launcher = find_launcher(config)?;
    let request = LaunchRequest {
        config: config.clone(),
        program: program.to_path_buf(),
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
    };
    let mut line = serde_json::to_vec(&request)
        .map_err(|e| JailError::Protocol(format!("serialise the request: {e}")))?;
    line.push(b'\n');

    let mut cmd = Command::new(&launcher);
    cmd.args(&config.launcher_args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let ipc_raw = ipc.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls dup2/fcntl,
    // which are async-signal-safe (no allocation, no locks), as required after fork in a
    // multithreaded process. `ipc` stays open in the parent until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            if ipc_raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(ipc_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| JailError::io(format!("start {}", launcher.display()), e))?;
    drop(ipc);
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(JailError::Protocol("launcher pipes missing".into()));
    };
    let mut reports = BufReader::new(stdout);
    let fail = |mut child: Child, e: JailError| {
        let _ = child.kill();
        let _ = child.wait();
        Err(e)
    };
    if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
        // The launcher may have died early; prefer its own error message.
        return match read_msg(&mut reports) {
            Ok(LauncherMsg::Failed { error }) => fail(child, error.into()),
            _ => fail(child, JailError::io("write to the launcher", e)),
        };
    }
    let pid = match read_msg(&mut reports) {
        Ok(LauncherMsg::Pid { pid }) => pid,
        Ok(LauncherMsg::Failed { error }) => return fail(child, error.into()),
        Ok(other) => {
            return fail(
                child,
                JailError::Protocol(format!("expected a pid, got {other:?}")),
            );
        }
        Err(e) => return fail(child, e),
    };
    // The child is parked on its go pipe, so the pid cannot have been reused yet.
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => return fail(child, JailError::io("pidfd_open", e)),
    };
    if let Err(e) = stdin.write_all(b"ack\n").and_then(|()| stdin.flush()) {
        return fail(child, JailError::io("ack to the launcher", e));
    }
    let (applied, cgroups) = match read_msg(&mut reports) {
        Ok(LauncherMsg::Started { applied, cgroups }) => (applied, cgroups),
        Ok(LauncherMsg::Failed { error }) => {
            let _ = child.wait();
            return Err(error.into());
        }
        Ok(other) => {
            return fail(
                child,
                JailError::Protocol(format!("expected started, got {other:?}")),
            );
        }
        Err(e) => return fail(child, e),
    };
    Ok(Jailed {
        pid,
        pidfd,
        applied,
        launcher: child,
        cgroups,
        lifeline: Some(stdin),
        reports,
        killed: AtomicBool::new(false),
        exit: None,
    })
}

/// Writes `config.limits` into the running cgroup of `config.tenant` (this instance's), so a
/// policy change reaches workers that are already running; workers started later get the
/// limits from their own `config`. Creates nothing: `Ok(false)` when the tenant has no
/// cgroup now (no worker runs) or the cgroup layer is off.
pub fn update_cgroup_limits(config: &JailConfig) -> Result<bool, JailError> {
    if !config.layers.cgroups {
        return Ok(false);
    }
    if !valid_tenant(&config.tenant) {
        return Err(JailError::InvalidConfig(format!(
            "tenant {:?} is not a valid cgroup name",
            config.tenant
        )));
    }
    cgroup::update(
        config.cgroup_version,
        &config.instance,
        &config.tenant,
        &config.limits,
    )
}

/// Installs seccomp stage 2 on every thread of the calling process (TSYNC): from then on
/// `execve`, `execveat`, `fork`, `vfork`, `clone` without `CLONE_THREAD`, `socket`,
/// `socketpair`, `ptrace` and `prctl(PR_SET_DUMPABLE)` fail with EPERM, and `memfd_create`
/// with ENOSYS (wasmtime then loads modules without copy-on-write images instead of
/// failing). Threads keep working. Call it in the worker once the tokio runtime and
/// wasmtime are initialised and before reading any guest byte. Sets `no_new_privs`
/// (already set inside a jail).
pub fn seccomp_stage2() -> Result<(), JailError> {
    seccomp::apply_stage2()
}

/// The fd number the IPC socket has inside a jail.
pub const IPC_FD: i32 = 3;

static IPC_TAKEN: AtomicBool = AtomicBool::new(false);

/// In the jailed program: takes ownership of the IPC socket at fd 3. Fails if fd 3 is not an
/// open socket, or on a second call. Call it once, before anything else wraps fd 3.
pub fn take_ipc_fd() -> Result<OwnedFd, JailError> {
    if IPC_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(JailError::Protocol("the IPC fd was already taken".into()));
    }
    sys::check_socket(IPC_FD).map_err(|e| JailError::io("fd 3 is not the IPC socket", e))?;
    // SAFETY: fd 3 is open and a socket (checked just above), the jail hands it to this
    // process for its whole life, and `IPC_TAKEN` guarantees this is the only `OwnedFd` this
    // function ever creates for it (the documented contract covers other code).
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(IPC_FD) })
}

/// The launcher binary: [`JailConfig::launcher`], then `$PALISADE_JAIL_LAUNCHER`, then
/// `palisade-jail-launcher` in the current executable's directory or its parent (test
/// binaries live in `target/<profile>/deps`).
pub fn find_launcher(config: &JailConfig) -> Result<PathBuf, JailError> {
    if let Some(p) = &config.launcher {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os(LAUNCHER_ENV) {
        return Ok(PathBuf::from(p));
    }
    let mut searched = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(LAUNCHER_NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate);
            dir = d.parent();
        }
    }
    Err(JailError::LauncherNotFound { searched })
}

/// `program` plus the shared libraries and dynamic loader it needs (from `ldd`): the
/// minimum [`JailConfig::readonly_paths`] for a dynamically linked program.
pub fn readonly_paths_for(program: &Path) -> Result<Vec<PathBuf>, JailError> {
    let mut paths = vec![program.to_path_buf()];
    paths.extend(shared_libraries(program)?);
    Ok(paths)
}

/// The shared libraries and loader `program` needs, resolved by `ldd`. Empty for static
/// binaries.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, JailError> {
    let out = Command::new("ldd")
        .arg(program)
        .env_clear()
        .output()
        .map_err(|e| JailError::io("run ldd", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let p = PathBuf::from(p);
            if !libs.contains(&p) {
                libs.push(p);
            }
        }
    }
    Ok(libs)
}

/// A tenant name usable as a cgroup directory: 1-64 of `[A-Za-z0-9_.-]`, not `.` or `..`.
fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Checks a config before anything is created.
pub(crate) fn validate(config: &JailConfig, program: &Path) -> Result<(), JailError> {
    let bad = |m: String| Err(JailError::InvalidConfig(m));
    let t = &config.tenant;
    if !valid_tenant(t) {
        return bad(format!(
            "tenant {t:?} must be 1-64 characters of [A-Za-z0-9_.-], not . or .."
        ));
    }
    if !valid_instance(&config.instance) {
        return bad(format!(
            "instance {:?} must be 1-32 characters of [a-z0-9-]",
            config.instance
        ));
    }
    if config.layers.user_ns && (config.host_uid == 0 || config.host_gid == 0) {
        return bad("host_uid and host_gid must not be 0".into());
    }
    for p in &config.readonly_paths {
        if !p.is_absolute()
            || p.components().any(|c| matches!(c, Component::ParentDir))
            || p == Path::new("/")
        {
            return bad(format!(
                "read-only path {} must be absolute, without `..`, and not /",
                p.display()
            ));
        }
    }
    if !program.is_absolute() {
        return bad(format!("program {} must be absolute", program.display()));
    }
    if config.layers.mount_ns && !config.readonly_paths.iter().any(|p| program.starts_with(p)) {
        return bad(format!(
            "program {} is not inside any read-only path, so it would not exist in the jail",
            program.display()
        ));
    }
    if !config.layers.no_new_privs && (config.layers.seccomp || config.layers.landlock) {
        return bad("seccomp and landlock require no_new_privs".into());
    }
    if config.scratch_bytes == Some(0) {
        return bad("scratch_bytes must be > 0 (or None)".into());
    }
    Ok(())
}
