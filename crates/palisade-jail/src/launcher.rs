//! The launcher: a freshly exec'd, single-threaded process (`palisade-jail-launcher`) that
//! builds one jail and then watches it.
//!
//! Protocol with [`crate::spawn`] (one JSON object per line):
//! 1. stdin: a [`LaunchRequest`]; fd 3: the IPC fd for the jailed program.
//! 2. stdout: `{"pid":N}` once the child exists (held before any setup), then stdin: `ack`
//!    once the supervisor has its pidfd.
//! 3. stdout: `{"started":{..applied layers..}}` after a successful exec, or `{"failed":..}`.
//! 4. stdout: `{"exit":{..}}` when the jailed program has exited and been reaped; the
//!    launcher then removes the cgroup and exits.
//!
//! End of file on stdin (the supervisor died or dropped its [`crate::Jailed`]) kills the jail.

use std::ffi::{CString, OsString};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroup::{self, Cgroup};
use crate::config::{AppliedLayers, JailConfig, Layer, MissingLayer, Mode};
use crate::error::{JailError, WireError};
use crate::seccomp;
use crate::sys;
use crate::{ExitReason, ExitReport};

/// The launcher's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LaunchRequest {
    pub config: JailConfig,
    pub program: PathBuf,
    /// argv[1..], as bytes.
    pub args: Vec<Vec<u8>>,
}

/// One line on the launcher's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LauncherMsg {
    Pid {
        pid: u32,
    },
    Started {
        applied: AppliedLayers,
        /// The cgroup directories the launcher created, so the supervisor can remove them
        /// if the launcher dies before it does.
        #[serde(default)]
        cgroups: Vec<PathBuf>,
    },
    Failed {
        error: WireError,
    },
    Exit {
        report: ExitReport,
    },
}

/// A message from the jail child to the launcher, before exec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChildMsg {
    Applied { applied: AppliedLayers },
    Failed { error: WireError },
}

fn emit(msg: &LauncherMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

/// Entry point of `palisade-jail-launcher` (or of a subcommand of a larger binary, see
/// [`JailConfig::launcher_args`]). Must run before the process starts any thread: it
/// refuses to build a jail from a multithreaded process.
pub fn main() -> ! {
    match single_threaded().and_then(|()| run()) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            emit(&LauncherMsg::Failed {
                error: WireError::from(&e),
            });
            std::process::exit(1)
        }
    }
}

/// `clone3` with fork semantics is only sound in a single-threaded process.
fn single_threaded() -> Result<(), JailError> {
    let threads = fs::read_dir("/proc/self/task")
        .map_err(|e| JailError::io("read /proc/self/task", e))?
        .count();
    if threads == 1 {
        Ok(())
    } else {
        Err(JailError::Protocol(format!(
            "the launcher has {threads} threads; it must call palisade_jail::launcher::main before starting any"
        )))
    }
}

fn run() -> Result<(), JailError> {
    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| JailError::io("read the launch request", e))?;
    let req: LaunchRequest = serde_json::from_str(&line)
        .map_err(|e| JailError::Protocol(format!("bad launch request: {e}")))?;
    let config = &req.config;
    crate::validate(config, &req.program)?;

    let mut applied = AppliedLayers::default();
    for layer in Layer::ALL {
        if !config.layers.get(layer) {
            applied.disabled.push(layer);
        }
    }
    let mut missing = |layer: Layer, reason: String, how: String| -> Result<(), JailError> {
        match config.mode {
            Mode::Strict => Err(JailError::LayerUnavailable {
                layer,
                reason,
                how_to_enable: how,
            }),
            Mode::AllowDegraded => {
                applied.missing.push(MissingLayer {
                    layer,
                    reason: format!("{reason} (to enable: {how})"),
                });
                Ok(())
            }
        }
    };

    // Host capabilities, checked before anything is created.
    let cg: Option<Box<dyn Cgroup>> = if config.layers.cgroups {
        match cgroup::create(
            config.cgroup_version,
            &config.instance,
            &config.tenant,
            &config.limits,
        )? {
            Ok(cg) => Some(cg),
            Err((reason, how)) => {
                missing(Layer::Cgroups, reason, how)?;
                None
            }
        }
    } else {
        None
    };
    let landlock_abi = sys::landlock_abi();
    let use_landlock = config.layers.landlock
        && if landlock_abi < crate::LANDLOCK_MIN_ABI {
            missing(
                Layer::Landlock,
                format!(
                    "kernel Landlock ABI is {landlock_abi}, need {}",
                    crate::LANDLOCK_MIN_ABI
                ),
                "Linux >= 6.12 with CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= boot parameter".into(),
            )?;
            false
        } else {
            true
        };
    let stage1 = seccomp::stage1();
    let clone3 = seccomp::clone3_enosys();
    let use_seccomp = config.layers.seccomp
        && if stage1.is_empty() || !Path::new("/proc/sys/kernel/seccomp/actions_avail").exists() {
            missing(
                Layer::Seccomp,
                "seccomp filters are unavailable (kernel without CONFIG_SECCOMP_FILTER, or a non-x86_64 build)".into(),
                "run an x86_64 kernel with CONFIG_SECCOMP_FILTER=y".into(),
            )?;
            false
        } else {
            true
        };
    let use_sysctls = config.layers.sysctls
        && if !(config.layers.user_ns && config.layers.ipc_ns) {
            missing(
                Layer::Sysctls,
                "the in-jail sysctls need the user and IPC namespaces".into(),
                "switch user_ns and ipc_ns on".into(),
            )?;
            false
        } else {
            true
        };
    let cap_last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let oom_before = cg.as_ref().map_or(0, |c| c.oom_kills());

    let plan = Plan {
        config,
        program: sys::cstring(&req.program).map_err(|e| JailError::io("program path", e))?,
        argv: std::iter::once(req.program.as_os_str().as_bytes().to_vec())
            .chain(req.args.iter().cloned())
            .map(|a| {
                CString::new(a)
                    .map_err(|_| JailError::InvalidConfig("argument contains NUL".into()))
            })
            .collect::<Result<_, _>>()?,
        dev_null: File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| JailError::io("open /dev/null", e))?
            .into(),
        cap_last_cap,
        use_landlock,
        use_seccomp,
        use_sysctls,
        stage1,
        clone3,
        applied: applied.clone(),
        launcher_pid: std::process::id(),
    };

    let (go_r, go_w) = sys::pipe().map_err(|e| JailError::io("pipe", e))?;
    let (rep_r, rep_w) = sys::pipe().map_err(|e| JailError::io("pipe", e))?;
    let l = &config.layers;
    let mut ns: u64 = 0;
    for (on, flag) in [
        (l.user_ns, libc::CLONE_NEWUSER),
        (l.pid_ns, libc::CLONE_NEWPID),
        (l.mount_ns, libc::CLONE_NEWNS),
        (l.net_ns, libc::CLONE_NEWNET),
        (l.ipc_ns, libc::CLONE_NEWIPC),
        (l.uts_ns, libc::CLONE_NEWUTS),
    ] {
        if on {
            ns |= flag as u64;
        }
    }
    let (pid, pidfd) = match sys::clone3_fork(ns) {
        Err(e) => {
            return Err(JailError::LayerUnavailable {
                layer: if l.user_ns { Layer::UserNs } else { Layer::PidNs },
                reason: format!("clone3 into new namespaces failed: {e}"),
                how_to_enable: "allow user namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1 where it exists) and run the launcher as root".into(),
            });
        }
        Ok(sys::Forked::Child) => {
            drop(go_w);
            drop(rep_r);
            child(&plan, go_r, rep_w)
        }
        Ok(sys::Forked::Parent { pid, pidfd }) => (pid, pidfd),
    };
    drop(go_r);
    drop(rep_w);
    // Only the jail keeps the IPC fd: the supervisor must see EOF when the jail dies.
    sys::close_raw(3);

    let setup = (|| -> Result<(), JailError> {
        if l.user_ns {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let w = |file: &str, v: String| {
                fs::write(proc.join(file), &v).map_err(|e| JailError::Setup {
                    layer: Layer::UserNs,
                    message: format!("write {v:?} to /proc/{pid}/{file}: {e}"),
                })
            };
            w("uid_map", format!("0 {} 1\n", config.host_uid))?;
            w("setgroups", "deny".into())?;
            w("gid_map", format!("0 {} 1\n", config.host_gid))?;
        }
        if let Some(cg) = &cg {
            cg.attach(pid)?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::waitid_pidfd(pidfd.as_fd());
        if let Some(cg) = &cg {
            cg.remove(Duration::from_secs(1));
        }
        return Err(e);
    }
    emit(&LauncherMsg::Pid { pid });
    line.clear();
    let acked = stdin
        .read_line(&mut line)
        .map(|n| n > 0 && line.trim() == "ack");
    if !matches!(acked, Ok(true)) {
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::waitid_pidfd(pidfd.as_fd());
        if let Some(cg) = &cg {
            cg.remove(Duration::from_secs(1));
        }
        return Err(JailError::Protocol("no ack from the supervisor".into()));
    }
    let mut go = File::from(go_w);
    let _ = go.write_all(b"g");
    drop(go);

    // The child reports before exec; the pipe closes (CLOEXEC) when exec succeeds.
    let mut report = Vec::new();
    let _ = File::from(rep_r).read_to_end(&mut report);
    let mut outcome: Result<AppliedLayers, JailError> = Err(JailError::Protocol(
        "the jail child died during setup".into(),
    ));
    for msg in report.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<ChildMsg>(msg) {
            Ok(ChildMsg::Applied { applied }) => outcome = Ok(applied),
            Ok(ChildMsg::Failed { error }) => outcome = Err(error.into()),
            Err(e) => outcome = Err(JailError::Protocol(format!("bad child report: {e}"))),
        }
    }
    match outcome {
        Ok(mut applied) => {
            if cg.is_some() {
                applied.active.insert(0, Layer::Cgroups);
            }
            let cgroups = cg.as_ref().map(|c| c.dirs()).unwrap_or_default();
            emit(&LauncherMsg::Started { applied, cgroups });
        }
        Err(e) => {
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::waitid_pidfd(pidfd.as_fd());
            if let Some(cg) = &cg {
                cg.remove(Duration::from_secs(1));
            }
            return Err(e);
        }
    }

    // Watch: the jailed program's exit, or the supervisor going away.
    let stdin_fd = std::io::stdin();
    let mut lifeline_open = true;
    loop {
        let fds: Vec<BorrowedFd<'_>> = if lifeline_open {
            vec![pidfd.as_fd(), stdin_fd.as_fd()]
        } else {
            vec![pidfd.as_fd()]
        };
        let ready = sys::poll_readable(&fds, -1).map_err(|e| JailError::io("poll", e))?;
        if ready[0] {
            break;
        }
        if lifeline_open && ready.get(1).copied().unwrap_or(false) {
            let mut buf = [0u8; 64];
            let n = stdin.get_mut().read(&mut buf).unwrap_or(0);
            if n == 0 {
                lifeline_open = false;
                let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            }
        }
    }
    let status = sys::waitid_pidfd(pidfd.as_fd()).map_err(|e| JailError::io("waitid", e))?;
    let cpu_usec = sys::children_cpu_usec();
    let oom = cg.as_ref().is_some_and(|c| c.oom_kills() > oom_before);
    let report = exit_report(status, oom, config.rlimits.cpu_seconds, cpu_usec);
    emit(&LauncherMsg::Exit { report });
    if let Some(cg) = &cg {
        cg.remove(Duration::from_secs(2));
    }
    Ok(())
}

fn exit_report(
    status: sys::ChildStatus,
    oom: bool,
    cpu_limit_s: Option<u64>,
    cpu_usec: u64,
) -> ExitReport {
    let (code, signal) = match status.code {
        libc::CLD_EXITED => (Some(status.status), None),
        _ => (None, Some(status.status)),
    };
    let cpu_limited = cpu_limit_s.is_some_and(|s| cpu_usec + 50_000 >= s * 1_000_000);
    let reason = match (code, signal) {
        (Some(_), _) => ExitReason::Exited,
        (_, Some(libc::SIGKILL)) if oom => ExitReason::Oom,
        (_, Some(libc::SIGSYS)) => ExitReason::Seccomp,
        (_, Some(libc::SIGXCPU)) => ExitReason::CpuLimit,
        (_, Some(libc::SIGKILL)) if cpu_limited => ExitReason::CpuLimit,
        (_, Some(n)) => ExitReason::Signal(n),
        (None, None) => ExitReason::Signal(0),
    };
    ExitReport {
        code,
        signal,
        reason,
        cpu_usec,
    }
}

/// Everything the child needs, prepared before clone3.
struct Plan<'a> {
    config: &'a JailConfig,
    program: CString,
    argv: Vec<CString>,
    dev_null: OwnedFd,
    cap_last_cap: u32,
    use_landlock: bool,
    use_seccomp: bool,
    use_sysctls: bool,
    stage1: seccomp::Program,
    clone3: seccomp::Program,
    applied: AppliedLayers,
    /// The launcher's pid, saved before clone3: the child's parent.
    launcher_pid: u32,
}

/// The jail child: waits for the go byte, applies every layer in order, execs.
fn child(plan: &Plan<'_>, go: OwnedFd, report: OwnedFd) -> ! {
    let mut report = File::from(report);
    let err = match child_setup(plan, go, &mut report) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = ChildMsg::Failed {
        error: WireError::from(&err),
    };
    if let Ok(mut line) = serde_json::to_vec(&msg) {
        line.push(b'\n');
        let _ = report.write_all(&line);
    }
    sys::exit_now(127)
}

fn step(layer: Layer, what: &str, r: std::io::Result<()>) -> Result<(), JailError> {
    r.map_err(|e| JailError::Setup {
        layer,
        message: format!("{what}: {e}"),
    })
}

fn child_setup(
    plan: &Plan<'_>,
    go: OwnedFd,
    report: &mut File,
) -> Result<std::convert::Infallible, JailError> {
    let c = plan.config;
    let l = &c.layers;
    let mut active: Vec<Layer> = Vec::new();
    // Die with the launcher. Set before waiting, so no window exists where the launcher is
    // gone and we are not yet armed: if it died already, the go pipe reads EOF.
    step(
        Layer::PidNs,
        "prctl(PR_SET_PDEATHSIG)",
        sys::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
        .map(drop),
    )?;
    let mut byte = [0u8; 1];
    if !matches!(File::from(go).read(&mut byte), Ok(1)) {
        sys::exit_now(126);
    }

    if l.user_ns {
        step(Layer::UserNs, "setresgid(0)", sys::setresgid(0))?;
        step(Layer::UserNs, "setresuid(0)", sys::setresuid(0))?;
        active.push(Layer::UserNs);
    }
    if l.pid_ns {
        active.push(Layer::PidNs);
    }
    if l.net_ns {
        active.push(Layer::NetNs);
    }
    if l.ipc_ns {
        active.push(Layer::IpcNs);
    }
    if l.uts_ns {
        step(Layer::UtsNs, "sethostname", sys::sethostname("palisade"))?;
        active.push(Layer::UtsNs);
    }
    if l.cgroup_ns {
        // After the launcher attached us, so the namespace root is the tenant's cgroup.
        step(
            Layer::CgroupNs,
            "unshare(CLONE_NEWCGROUP)",
            sys::unshare(libc::CLONE_NEWCGROUP),
        )?;
        active.push(Layer::CgroupNs);
    }
    if plan.use_sysctls {
        for (file, value) in [
            ("/proc/sys/kernel/shmmni", "0"),
            ("/proc/sys/kernel/msgmni", "0"),
            ("/proc/sys/kernel/sem", "0 0 0 0"),
            ("/proc/sys/user/max_user_namespaces", "0"),
        ] {
            step(
                Layer::Sysctls,
                &format!("write {file}"),
                fs::write(file, value),
            )?;
        }
        active.push(Layer::Sysctls);
    }
    if l.mount_ns {
        build_root(c)?;
        active.push(Layer::MountNs);
    }
    if l.setsid {
        step(Layer::Setsid, "setsid", sys::setsid())?;
        active.push(Layer::Setsid);
    }
    if l.rlimits {
        let r = &c.rlimits;
        for (res, name, v) in [
            (libc::RLIMIT_NOFILE, "NOFILE", r.nofile),
            (libc::RLIMIT_NPROC, "NPROC", r.nproc),
            (libc::RLIMIT_FSIZE, "FSIZE", r.fsize),
            (libc::RLIMIT_CORE, "CORE", 0),
            (libc::RLIMIT_MEMLOCK, "MEMLOCK", r.memlock),
            (libc::RLIMIT_MSGQUEUE, "MSGQUEUE", 0),
            (libc::RLIMIT_RTPRIO, "RTPRIO", 0),
            (libc::RLIMIT_CPU, "CPU", r.cpu_seconds.unwrap_or(u64::MAX)),
        ] {
            step(
                Layer::Rlimits,
                &format!("setrlimit(RLIMIT_{name}, {v})"),
                sys::setrlimit(res, v),
            )?;
        }
        active.push(Layer::Rlimits);
    }

    // Standard fds: /dev/null (or the launcher's stderr), the IPC fd at 3 (placed there by
    // the supervisor and inherited), everything else closed at exec.
    let null = plan.dev_null.as_fd();
    step(Layer::CloseFds, "dup2 stdin", sys::dup2(null, 0))?;
    step(Layer::CloseFds, "dup2 stdout", sys::dup2(null, 1))?;
    if !c.inherit_stderr {
        step(Layer::CloseFds, "dup2 stderr", sys::dup2(null, 2))?;
    }
    step(Layer::CloseFds, "IPC fd 3", sys::clear_cloexec(3))?;
    if l.close_fds {
        step(
            Layer::CloseFds,
            "close_range(4.., CLOEXEC)",
            sys::close_range(4, u32::MAX, libc::CLOSE_RANGE_CLOEXEC),
        )?;
        active.push(Layer::CloseFds);
    }

    if l.no_new_privs {
        step(
            Layer::NoNewPrivs,
            "prctl(PR_SET_NO_NEW_PRIVS)",
            sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).map(drop),
        )?;
        active.push(Layer::NoNewPrivs);
    }
    if plan.use_landlock {
        crate::landlock::restrict(c)?;
        active.push(Layer::Landlock);
    }
    if l.capabilities {
        drop_capabilities(plan.cap_last_cap, (!l.user_ns).then_some(c))?;
        active.push(Layer::Capabilities);
    } else if !l.user_ns {
        become_host_ids(c)?;
    }
    // The credential changes above (setresuid/setresgid, in the user namespace or to the host
    // ids) cleared the parent-death signal: arm it again, after the last one, then make sure
    // the launcher did not die in between (the signal would then never come).
    rearm_parent_death_signal(plan, report)?;
    if plan.use_seccomp {
        plan.stage1.apply_all_threads()?;
        plan.clone3.apply_all_threads()?;
        active.push(Layer::Seccomp);
    }

    let mut applied = plan.applied.clone();
    applied.active = active;
    if let Ok(mut line) = serde_json::to_vec(&ChildMsg::Applied { applied }) {
        line.push(b'\n');
        let _ = report.write_all(&line);
    }
    let e = sys::execve(&plan.program, &plan.argv);
    Err(JailError::Exec {
        program: PathBuf::from(OsString::from_vec(plan.program.as_bytes().to_vec())),
        message: e.to_string(),
    })
}

/// Sets `PR_SET_PDEATHSIG` (SIGKILL) again and exits at once if the launcher is already
/// gone: outside a PID namespace `getppid()` no longer equals the launcher's pid; inside one
/// the parent is invisible (`getppid()` is 0), so the report pipe tells: the launcher holds
/// its read end until exec, so a write end in error means the launcher is dead.
fn rearm_parent_death_signal(plan: &Plan<'_>, report: &File) -> Result<(), JailError> {
    step(
        Layer::PidNs,
        "prctl(PR_SET_PDEATHSIG) after the credential change",
        sys::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
        .map(drop),
    )?;
    let parent_gone = if plan.config.layers.pid_ns {
        sys::getppid() != 0
    } else {
        u32::try_from(sys::getppid()).ok() != Some(plan.launcher_pid)
    };
    if parent_gone || sys::pipe_reader_gone(report.as_fd()).unwrap_or(true) {
        sys::exit_now(126);
    }
    Ok(())
}

/// Where the new root is assembled before `pivot_root`. `/sys` is never a bind source, so
/// covering it with the staging tmpfs hides nothing the jail needs.
const STAGING: &str = "/sys";

fn cs(p: &str) -> Result<CString, JailError> {
    CString::new(p).map_err(|_| JailError::InvalidConfig(format!("path {p:?} contains NUL")))
}

fn mount_step(what: &str, r: std::io::Result<()>) -> Result<(), JailError> {
    step(Layer::MountNs, what, r)
}

fn build_root(c: &JailConfig) -> Result<(), JailError> {
    let staging = cs(STAGING)?;
    let root = cs("/")?;
    mount_step(
        "make / private",
        sys::mount(None, &root, None, libc::MS_REC | libc::MS_PRIVATE, None),
    )?;
    mount_step(
        "tmpfs root",
        sys::mount(
            Some(&cs("palisade")?),
            &staging,
            Some(&cs("tmpfs")?),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&cs("size=1m,nr_inodes=4096,mode=0755")?),
        ),
    )?;
    // Scratch first: read-only binds under /tmp (a checkout in /tmp, say) then land on top of
    // it instead of being hidden by it.
    if let Some(bytes) = c.scratch_bytes {
        let tmp = Path::new(STAGING).join("tmp");
        mount_step("mkdir /tmp", fs::create_dir_all(&tmp))?;
        let tmp_c = sys::cstring(&tmp).map_err(|e| JailError::io("path", e))?;
        mount_step(
            "scratch tmpfs",
            sys::mount(
                Some(&cs("scratch")?),
                &tmp_c,
                Some(&cs("tmpfs")?),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(&cs(&format!("size={bytes},nr_inodes=1024,mode=1777"))?),
            ),
        )?;
    }
    for src in &c.readonly_paths {
        let meta = fs::metadata(src).map_err(|e| JailError::Setup {
            layer: Layer::MountNs,
            message: format!("read-only path {}: {e}", src.display()),
        })?;
        let target = Path::new(STAGING).join(src.strip_prefix("/").unwrap_or(src));
        if let Some(parent) = target.parent() {
            mount_step(
                &format!("mkdir {}", parent.display()),
                fs::create_dir_all(parent),
            )?;
        }
        let made = if meta.is_dir() {
            fs::create_dir_all(&target)
        } else {
            File::create(&target).map(drop)
        };
        mount_step(&format!("mountpoint {}", target.display()), made)?;
        let src_c = sys::cstring(src).map_err(|e| JailError::io("path", e))?;
        let target_c = sys::cstring(&target).map_err(|e| JailError::io("path", e))?;
        mount_step(
            &format!("bind {}", src.display()),
            sys::mount(Some(&src_c), &target_c, None, libc::MS_BIND, None),
        )?;
        // Keep the flags a user namespace may not clear (locked by the kernel), add ours.
        let locked = sys::statvfs_flags(&src_c).map_err(|e| JailError::io("statvfs", e))?;
        let mut flags =
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        for (st, ms) in [
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if locked & st != 0 {
                flags |= ms;
            }
        }
        mount_step(
            &format!("remount {} read-only", src.display()),
            sys::mount(None, &target_c, None, flags, None),
        )?;
    }
    mount_step("chdir staging", std::env::set_current_dir(STAGING))?;
    let dot = cs(".")?;
    mount_step("pivot_root", sys::pivot_root(&dot, &dot))?;
    mount_step("detach old root", sys::umount2(&dot, libc::MNT_DETACH))?;
    mount_step("chdir /", std::env::set_current_dir("/"))?;
    mount_step(
        "remount / read-only",
        sys::mount(
            None,
            &root,
            None,
            libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        ),
    )?;
    Ok(())
}

/// Without a user namespace (tests only): become the unprivileged host ids directly; the
/// kernel clears every capability on the switch from uid 0.
fn become_host_ids(c: &JailConfig) -> Result<(), JailError> {
    step(Layer::UserNs, "setgroups([])", sys::clear_groups())?;
    step(Layer::UserNs, "setresgid", sys::setresgid(c.host_gid))?;
    step(Layer::UserNs, "setresuid", sys::setresuid(c.host_uid))
}

fn drop_capabilities(cap_last_cap: u32, host_ids: Option<&JailConfig>) -> Result<(), JailError> {
    let cap =
        |what: &str, r: std::io::Result<libc::c_int>| step(Layer::Capabilities, what, r.map(drop));
    for n in 0..=cap_last_cap {
        cap(
            "prctl(PR_CAPBSET_DROP)",
            sys::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0),
        )?;
    }
    cap(
        "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
        sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ),
    )?;
    if let Some(c) = host_ids {
        become_host_ids(c)?;
        return step(Layer::Capabilities, "capset(0)", sys::capset_zero());
    }
    // NOROOT, NO_SETUID_FIXUP, KEEP_CAPS and NO_CAP_AMBIENT_RAISE, each locked.
    const SECUREBITS: libc::c_ulong = 0b1110_1111;
    cap(
        "prctl(PR_SET_SECUREBITS)",
        sys::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0),
    )?;
    step(Layer::Capabilities, "capset(0)", sys::capset_zero())
}
