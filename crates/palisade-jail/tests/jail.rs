//! End-to-end tests of the jail: the probe program (`src/bin/palisade-jail-probe.rs`) runs
//! inside real jails built by `spawn`, exactly as the worker will, and reports every escape
//! attempt on fd 3. Needs root, user namespaces, cgroups and Landlock (see `doctor`).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers panic on setup failures"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use palisade_jail::{
    AppliedLayers, CgroupVersion, ExitReason, ExitReport, JailConfig, JailError, Layer, Mode,
    doctor, readonly_paths_for, spawn,
};
use serde_json::Value;

const EPERM: i64 = 1;
const ENOENT: i64 = 2;
const EAGAIN: i64 = 11;
const EACCES: i64 = 13;
const EFAULT: i64 = 14;
const ENOSPC: i64 = 28;
const EFBIG: i64 = 27;
const EROFS: i64 = 30;
const ENOSYS: i64 = 38;
const ENETUNREACH: i64 = 101;
const ECONNREFUSED: i64 = 111;

fn probe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_palisade-jail-probe"))
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A full-strength config with a unique tenant (and host uid) per call.
fn config(name: &str) -> JailConfig {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let id = 200_000 + 1000 * (std::process::id() % 50) + n;
    let mut c = JailConfig::new(format!("test-{name}-{}-{n}", std::process::id()), id, id);
    c.launcher = Some(env!("CARGO_BIN_EXE_palisade-jail-launcher").into());
    c.readonly_paths = readonly_paths_for(&probe_bin()).expect("ldd");
    c.scratch_bytes = Some(4 << 20);
    c.limits.memory_max = Some(256 << 20);
    c.limits.pids_max = Some(32);
    c.inherit_stderr = true;
    c
}

fn off(mut c: JailConfig, layers: &[Layer]) -> JailConfig {
    for l in layers {
        c.layers.set(*l, false);
    }
    c
}

#[derive(Debug)]
struct Run {
    probes: HashMap<String, Value>,
    lines: Vec<Value>,
    report: ExitReport,
    applied: AppliedLayers,
}

impl Run {
    fn probe(&self, name: &str) -> &Value {
        self.probes
            .get(name)
            .unwrap_or_else(|| panic!("probe {name} did not report; lines: {:?}", self.lines))
    }
    fn ok(&self, name: &str) -> bool {
        self.probe(name)["ok"].as_bool().unwrap_or(false)
    }
    fn errno(&self, name: &str) -> i64 {
        self.probe(name)["errno"].as_i64().unwrap_or(-1)
    }
    fn line(&self, key: &str) -> &Value {
        self.lines
            .iter()
            .rev()
            .find(|l| l.get(key).is_some())
            .unwrap_or_else(|| panic!("no line with {key}: {:?}", self.lines))
    }
}

fn run(c: &JailConfig, args: &[&str]) -> Run {
    try_run(c, args).unwrap_or_else(|e| panic!("spawn failed: {e}"))
}

fn try_run(c: &JailConfig, args: &[&str]) -> Result<Run, JailError> {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let args: Vec<_> = args.iter().map(Into::into).collect();
    let mut jailed = spawn(c, &probe_bin(), &args, theirs.into())?;
    let applied = jailed.applied().clone();
    let mut lines = Vec::new();
    for line in BufReader::new(ours).lines() {
        let Ok(line) = line else { break };
        lines.push(serde_json::from_str::<Value>(&line).expect("probe JSON"));
    }
    // A probe that stops (say, traced and signalled) must fail the test, not hang it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        if let Some(report) = jailed.try_wait()? {
            break report;
        }
        if Instant::now() > deadline {
            jailed.kill()?;
            panic!("the probe never exited; its lines: {lines:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let probes = lines
        .iter()
        .filter_map(|l| Some((l.get("probe")?.as_str()?.to_owned(), l.clone())))
        .collect();
    Ok(Run {
        probes,
        lines,
        report,
        applied,
    })
}

/// What each suite probe must do in the full jail (after stage 2): allowed, or denied with
/// this errno.
const FULL_JAIL: &[(&str, Option<i64>)] = &[
    ("stage2_applied", None),
    ("pid_is_1", None),
    ("session_leader", None),
    ("hostname_isolated", None),
    ("no_new_privs", None),
    ("caps_empty", None),
    ("only_fds_0_to_3", None),
    ("thread_spawn", None),
    ("jit_rw_then_rx", None),
    ("fork", Some(EPERM)),
    ("clone_process", Some(EPERM)),
    ("clone3", Some(ENOSYS)),
    ("clone_newuser", Some(EPERM)),
    ("execve", Some(EPERM)),
    ("memfd_exec", Some(ENOSYS)),
    ("socket_inet_tcp", Some(EPERM)),
    ("socket_inet_udp", Some(EPERM)),
    ("socket_inet_raw", Some(EPERM)),
    ("socket_inet6_tcp", Some(EPERM)),
    ("socket_unix_stream", Some(EPERM)),
    ("socket_unix_dgram", Some(EPERM)),
    ("socket_netlink_route", Some(EPERM)),
    ("socket_netlink_netfilter", Some(EPERM)),
    ("socket_packet", Some(EPERM)),
    ("socket_vsock", Some(EPERM)),
    ("socket_alg", Some(EPERM)),
    ("socket_key", Some(EPERM)),
    ("socketpair_unix", Some(EPERM)),
    ("connect_tcp_loopback", Some(EPERM)),
    ("connect_abstract_unix", Some(EPERM)),
    ("open_etc_passwd", Some(ENOENT)),
    ("open_proc_self_status", Some(ENOENT)),
    ("open_sys_kernel", Some(ENOENT)),
    ("open_dev_kvm", Some(ENOENT)),
    ("readdir_root", Some(EACCES)),
    ("write_root", Some(EROFS)),
    ("write_own_binary", Some(EACCES)),
    ("symlink_in_scratch", Some(EPERM)),
    ("mknod_device", Some(EPERM)),
    ("mount_tmpfs", Some(EPERM)),
    ("umount_root", Some(EPERM)),
    ("pivot_root", Some(EPERM)),
    ("chroot", Some(EPERM)),
    ("unshare_user", Some(EPERM)),
    ("unshare_mount", Some(EPERM)),
    ("setns", Some(EPERM)),
    ("process_vm_readv", Some(EPERM)),
    ("io_uring_setup", Some(EPERM)),
    ("bpf", Some(EPERM)),
    ("userfaultfd", Some(EPERM)),
    ("keyctl", Some(EPERM)),
    ("add_key", Some(EPERM)),
    ("perf_event_open", Some(EPERM)),
    ("inotify_init", Some(EPERM)),
    ("open_by_handle_at", Some(EPERM)),
    ("kcmp", Some(EPERM)),
    ("modify_ldt", Some(EPERM)),
    ("personality", Some(EPERM)),
    ("splice", Some(EPERM)),
    ("mmap_wx", Some(EPERM)),
    ("mprotect_to_wx", Some(EPERM)),
    ("kill_all", Some(EPERM)),
    ("tiocsti", Some(EPERM)),
    ("raise_nofile", Some(EPERM)),
    ("nofile_exhaustion", Some(24)),
    ("setuid", Some(EPERM)),
    ("capset_all", Some(EPERM)),
    ("set_dumpable", Some(EPERM)),
    ("sethostname", Some(EPERM)),
    ("shmget", Some(EPERM)),
    ("msgget", Some(EPERM)),
    ("reboot", Some(EPERM)),
    ("init_module", Some(EPERM)),
    ("clock_settime", Some(EPERM)),
    ("ptrace_traceme", Some(EPERM)),
];

/// Host-side targets the probe tries to reach: a TCP listener on loopback and an abstract
/// unix socket. Both are only reachable when the jail's layers are switched off.
struct Targets {
    tcp: std::net::TcpListener,
    _abstract: UnixListener,
    name: String,
}

fn targets() -> Targets {
    use std::os::linux::net::SocketAddrExt;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let name = format!(
        "palisade-probe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let unix = UnixListener::bind_addr(&addr).expect("bind abstract");
    Targets {
        tcp,
        _abstract: unix,
        name,
    }
}

fn suite(c: &JailConfig, t: &Targets, stage2: bool) -> Run {
    let port = t.tcp.local_addr().expect("addr").port().to_string();
    let mut args = vec!["suite", "--tcp-port", &port, "--abstract", &t.name];
    if !stage2 {
        args.push("--no-stage2");
    }
    let r = run(c, &args);
    assert!(
        r.lines.iter().any(|l| l.get("done").is_some()),
        "suite did not finish: {r:?}"
    );
    r
}

#[test]
fn every_escape_in_the_checklist_is_denied_in_the_full_jail() {
    let t = targets();
    let r = suite(&config("full"), &t, true);
    assert_eq!(r.applied.active.len(), Layer::ALL.len(), "{:?}", r.applied);
    assert!(r.applied.missing.is_empty() && r.applied.disabled.is_empty());
    let mut denied = 0;
    for (name, expect) in FULL_JAIL {
        match expect {
            None => assert!(r.ok(name), "{name} should work: {}", r.probe(name)),
            Some(errno) => {
                assert!(!r.ok(name), "{name} must be denied: {}", r.probe(name));
                assert_eq!(r.errno(name), *errno, "{name}: {}", r.probe(name));
                denied += 1;
            }
        }
    }
    assert!(denied >= 60, "only {denied} escapes probed");
    assert_eq!(
        r.probes.len(),
        FULL_JAIL.len() + 1,
        "unlisted probes: {:?}",
        r.probes.keys()
    );
    let identity = r.probe("identity")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        identity.contains("uid=0 pid=1 sid=1 host=palisade env=0"),
        "{identity}"
    );
    assert_eq!(r.report.reason, ExitReason::Exited);
    assert_eq!(r.report.code, Some(0));
}

#[test]
fn a_worker_like_program_runs_threads_jit_and_ipc_under_both_seccomp_stages() {
    let c = config("worker");
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let jailed = spawn(&c, &probe_bin(), &["worker".into()], theirs.into()).expect("spawn");
    ours.write_all(&5u32.to_le_bytes()).expect("write");
    ours.write_all(b"hello").expect("write");
    let mut len = [0u8; 4];
    ours.read_exact(&mut len).expect("frame length");
    let mut body = vec![0; u32::from_le_bytes(len) as usize];
    ours.read_exact(&mut body).expect("frame");
    let v: Value = serde_json::from_slice(&body).expect("json");
    for key in [
        "reserved_64g",
        "jit",
        "stage2",
        "thread_after_stage2",
        "jit_after_stage2",
    ] {
        assert_eq!(v[key], Value::Bool(true), "{key}: {v}");
    }
    assert!(v["ticks"].as_u64().unwrap_or(0) > 5, "{v}");
    assert_eq!(v["echo"], "hello");
    let report = jailed.wait().expect("wait");
    assert_eq!((report.code, report.reason), (Some(0), ExitReason::Exited));
}

#[test]
fn int_0x80_is_killed_by_seccomp_and_works_without_it() {
    let r = run(&config("int80"), &["int80"]);
    assert_eq!(r.report.reason, ExitReason::Seccomp, "{:?}", r.report);
    assert_eq!(r.report.signal, Some(libc_sigsys()));
    assert!(!r.probes.contains_key("int80") || r.probes["int80"].get("starting").is_some());
    let r = run(
        &off(config("int80-noseccomp"), &[Layer::Seccomp]),
        &["int80"],
    );
    assert!(r.ok("int80"), "{:?}", r.lines);
}

fn libc_sigsys() -> i32 {
    31
}

#[test]
fn fork_bomb_stops_at_seccomp_then_pids_max_then_rlimit_nproc() {
    let r = run(&config("forkbomb"), &["forkbomb"]);
    let l = r.line("children");
    assert_eq!(
        (l["children"].as_u64(), l["errno"].as_i64()),
        (Some(0), Some(EPERM)),
        "{l}"
    );

    let r = run(
        &off(config("forkbomb-pids"), &[Layer::Seccomp]),
        &["forkbomb"],
    );
    let l = r.line("children");
    let n = l["children"].as_u64().unwrap_or(0);
    assert_eq!(l["errno"].as_i64(), Some(EAGAIN), "{l}");
    assert!((1..32).contains(&n), "pids.max = 32 but {n} children: {l}");

    let mut c = off(config("forkbomb-nproc"), &[Layer::Seccomp, Layer::Cgroups]);
    c.rlimits.nproc = 12;
    let r = run(&c, &["forkbomb"]);
    let l = r.line("children");
    let n = l["children"].as_u64().unwrap_or(0);
    assert_eq!(l["errno"].as_i64(), Some(EAGAIN), "{l}");
    assert!(
        (1..12).contains(&n),
        "RLIMIT_NPROC = 12 but {n} children: {l}"
    );
}

#[test]
fn thread_bomb_stops_at_pids_max() {
    let r = run(&config("threadbomb"), &["threadbomb"]);
    let l = r.line("threads");
    assert_eq!(l["errno"].as_i64(), Some(EAGAIN), "{l}");
    assert!(l["threads"].as_u64().unwrap_or(99) < 32, "{l}");
}

#[test]
fn memory_bomb_is_oom_killed_by_the_memory_cgroup_and_not_without_it() {
    let mut c = config("membomb");
    c.limits.memory_max = Some(64 << 20);
    let r = run(&c, &["membomb", "160"]);
    assert_eq!(
        r.report.reason,
        ExitReason::Oom,
        "{:?} {:?}",
        r.report,
        r.lines.last()
    );
    assert_eq!(r.report.signal, Some(9));

    let mut c = off(config("membomb-nocg"), &[Layer::Cgroups]);
    c.limits.memory_max = Some(64 << 20);
    let r = run(&c, &["membomb", "160"]);
    assert_eq!(r.line("survived_mib")["survived_mib"].as_u64(), Some(160));
}

#[test]
fn cpu_hog_is_throttled_by_the_cpu_quota() {
    let mut c = config("cpuhog");
    c.limits.cpu_percent = Some(10);
    let r = run(&c, &["cpuhog", "1000"]);
    let cpu = r.line("cpu_ms")["cpu_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(cpu <= 250, "10 % quota over 1 s wall, but {cpu} ms CPU");

    let r = run(&off(c, &[Layer::Cgroups]), &["cpuhog", "1000"]);
    let free = r.line("cpu_ms")["cpu_ms"].as_u64().unwrap_or(0);
    assert!(free > cpu, "without the quota {free} ms <= {cpu} ms");
}

#[test]
fn rlimit_cpu_kills_a_spinning_program() {
    let mut c = config("spin");
    c.rlimits.cpu_seconds = Some(1);
    let r = run(&c, &["spin"]);
    assert_eq!(r.report.reason, ExitReason::CpuLimit, "{:?}", r.report);
}

#[test]
fn scratch_fills_up_at_its_size_and_rlimit_fsize_caps_one_file() {
    let mut c = config("fill");
    c.scratch_bytes = Some(1 << 20);
    let r = run(&c, &["fill"]);
    let l = r.line("bytes");
    assert_eq!(l["errno"].as_i64(), Some(ENOSPC), "{l}");
    assert!(l["bytes"].as_u64().unwrap_or(u64::MAX) <= 1 << 20, "{l}");

    let mut c = config("fsize");
    c.rlimits.fsize = 256 << 10;
    let r = run(&c, &["fill"]);
    let l = r.line("bytes");
    assert_eq!(l["errno"].as_i64(), Some(EFBIG), "{l}");
    assert_eq!(l["bytes"].as_u64(), Some(256 << 10), "{l}");
}

// ---- One test per layer: switch it off and show which probes then get through. ----------
// Layers that seccomp masks are ablated against a baseline with seccomp (and, where it also
// masks, Landlock) already off, so a regression in each layer shows even while another
// layer still covers it.

#[test]
fn layer_seccomp_stage1() {
    let t = targets();
    let base = suite(&config("sc-base"), &t, false);
    let r = suite(&off(config("sc-off"), &[Layer::Seccomp]), &t, false);
    for name in [
        "socket_inet_tcp",
        "socket_unix_stream",
        "fork",
        "clone3",
        "mmap_wx",
        "mprotect_to_wx",
        "personality",
        "keyctl",
        "inotify_init",
    ] {
        assert_eq!(
            base.errno(name),
            if name == "clone3" { ENOSYS } else { EPERM },
            "{name}"
        );
        assert!(
            r.ok(name),
            "{name} should get through without seccomp: {}",
            r.probe(name)
        );
    }
    // Reached the kernel: different errors than seccomp's EPERM.
    assert_eq!(r.errno("io_uring_setup"), EFAULT);
    assert_eq!(r.errno("perf_event_open"), EFAULT);
    // The next layers still hold.
    assert_eq!(
        r.errno("unshare_user"),
        ENOSPC,
        "sysctl user.max_user_namespaces=0"
    );
    assert_eq!(r.errno("shmget"), ENOSPC, "sysctl kernel.shmmni=0");
    assert_eq!(r.errno("connect_tcp_loopback"), EACCES, "Landlock TCP");
    assert_eq!(
        r.errno("connect_abstract_unix"),
        ECONNREFUSED,
        "netns: host names invisible"
    );
    assert_eq!(r.errno("chroot"), EPERM, "capabilities");
}

#[test]
fn layer_seccomp_stage2() {
    let t = targets();
    let with = suite(&config("s2-on"), &t, true);
    let without = suite(&config("s2-off"), &t, false);
    assert_eq!(with.errno("execve"), EPERM);
    assert_eq!(with.errno("memfd_exec"), ENOSYS);
    assert_eq!(with.errno("socketpair_unix"), EPERM);
    assert!(
        without.ok("socketpair_unix"),
        "stage 1 allows AF_UNIX pairs (tokio)"
    );
    assert_eq!(without.errno("execve"), ENOENT, "exec reached the kernel");
    assert!(without.ok("memfd_exec"), "{}", without.probe("memfd_exec"));
}

#[test]
fn layer_landlock() {
    let t = targets();
    let base = suite(&config("ll-base"), &t, true);
    let r = suite(&off(config("ll-off"), &[Layer::Landlock]), &t, true);
    assert_eq!(base.errno("readdir_root"), EACCES);
    assert!(r.ok("readdir_root"), "{}", r.probe("readdir_root"));
    // File ownership (host root, unmapped) and the read-only bind still refuse writes.
    assert!(!r.ok("write_own_binary"));
    // TCP and abstract-socket scoping are masked by seccomp and the netns; visible once
    // both are off.
    let base = off(config("ll-base2"), &[Layer::Seccomp, Layer::NetNs]);
    let b = suite(&base, &t, false);
    let r = suite(&off(base, &[Layer::Landlock]), &t, false);
    assert_eq!(
        b.errno("connect_tcp_loopback"),
        EACCES,
        "Landlock ConnectTcp"
    );
    assert!(
        r.ok("connect_tcp_loopback"),
        "{}",
        r.probe("connect_tcp_loopback")
    );
    assert_eq!(
        b.errno("connect_abstract_unix"),
        EPERM,
        "Landlock abstract-socket scope"
    );
    assert!(
        r.ok("connect_abstract_unix"),
        "{}",
        r.probe("connect_abstract_unix")
    );
}

#[test]
fn layer_net_ns() {
    let t = targets();
    let base = off(
        config("net-base"),
        &[Layer::Seccomp, Layer::Landlock, Layer::NoNewPrivs],
    );
    let r0 = suite(&base, &t, false);
    let r = suite(&off(base, &[Layer::NetNs]), &t, false);
    assert_eq!(r0.errno("connect_tcp_loopback"), ENETUNREACH);
    assert!(
        r.ok("connect_tcp_loopback"),
        "{}",
        r.probe("connect_tcp_loopback")
    );
    assert_eq!(r0.errno("connect_abstract_unix"), ECONNREFUSED);
    assert!(
        r.ok("connect_abstract_unix"),
        "{}",
        r.probe("connect_abstract_unix")
    );
}

#[test]
fn layer_mount_ns_and_pivot_root() {
    let t = targets();
    let r = suite(&off(config("mnt-off"), &[Layer::MountNs]), &t, true);
    // The host filesystem is back; only Landlock stands in the way.
    assert_eq!(r.errno("open_etc_passwd"), EACCES);
    assert_eq!(r.errno("open_proc_self_status"), EACCES);
    let r = suite(
        &off(config("mnt-ll-off"), &[Layer::MountNs, Layer::Landlock]),
        &t,
        true,
    );
    assert!(r.ok("open_etc_passwd"), "{}", r.probe("open_etc_passwd"));
}

#[test]
fn layer_pid_uts_setsid_nnp_and_close_fds() {
    let t = targets();
    let r = suite(&off(config("pid-off"), &[Layer::PidNs]), &t, true);
    assert!(!r.ok("pid_is_1"));
    let r = suite(&off(config("uts-off"), &[Layer::UtsNs]), &t, true);
    assert!(!r.ok("hostname_isolated"));
    let r = suite(&off(config("setsid-off"), &[Layer::Setsid]), &t, true);
    assert!(!r.ok("session_leader"));
    let r = suite(
        &off(
            config("nnp-off"),
            &[Layer::NoNewPrivs, Layer::Seccomp, Layer::Landlock],
        ),
        &t,
        false,
    );
    assert!(!r.ok("no_new_privs"));

    // An fd the supervisor leaked without CLOEXEC reaches the jail only without close_fds.
    let leaked = std::fs::File::open("/dev/null").expect("open");
    rustix::io::fcntl_setfd(&leaked, rustix::io::FdFlags::empty()).expect("clear cloexec");
    let r = suite(&off(config("fds-off"), &[Layer::CloseFds]), &t, true);
    let on = suite(&config("fds-on"), &t, true);
    drop(leaked);
    assert!(!r.ok("only_fds_0_to_3"), "{}", r.probe("only_fds_0_to_3"));
    assert!(on.ok("only_fds_0_to_3"));
}

#[test]
fn layer_capabilities_sysctls_rlimits_and_user_ns() {
    let t = targets();
    let base = off(config("caps-base"), &[Layer::Seccomp]);
    let r = suite(&off(base.clone(), &[Layer::Capabilities]), &t, false);
    assert!(!r.ok("caps_empty"));
    assert!(r.ok("chroot"), "{}", r.probe("chroot"));
    assert!(r.ok("sethostname"), "{}", r.probe("sethostname"));

    let r = suite(&off(base.clone(), &[Layer::Sysctls]), &t, false);
    assert!(r.ok("unshare_user"), "{}", r.probe("unshare_user"));
    assert!(r.ok("shmget"), "{}", r.probe("shmget"));
    assert!(r.ok("msgget"), "{}", r.probe("msgget"));

    let r = suite(&off(config("rl-off"), &[Layer::Rlimits]), &t, true);
    let note = r
        .lines
        .iter()
        .filter_map(|l| l.get("note")?.as_str())
        .find(|n| n.starts_with("nofile"))
        .unwrap_or("opened many");
    assert!(
        r.ok("nofile_exhaustion") || !note.contains("after 60 "),
        "{note}"
    );

    // Without a user namespace the jail runs as the unprivileged host uid itself.
    let c = off(config("userns-off"), &[Layer::UserNs, Layer::Sysctls]);
    let uid = c.host_uid;
    let r = suite(&c, &t, true);
    let identity = r.probe("identity")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(identity.contains(&format!("uid={uid} ")), "{identity}");
    assert!(r.ok("caps_empty"));
}

// ---- Strict and degraded modes. ----------------------------------------------------------

fn v2_lacks_memory() -> bool {
    let ctrls = [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.controllers",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .collect::<String>();
    !ctrls.split_whitespace().any(|c| c == "memory")
}

#[test]
fn strict_mode_fails_closed_naming_a_missing_cgroup_controller() {
    if !v2_lacks_memory() {
        eprintln!("skipped: this host's cgroup v2 has the memory controller");
        return;
    }
    let mut c = config("strict");
    c.cgroup_version = CgroupVersion::V2;
    let err = try_run(&c, &["exit"]).expect_err("strict mode must refuse");
    match &err {
        JailError::LayerUnavailable {
            layer,
            reason,
            how_to_enable,
        } => {
            assert_eq!(*layer, Layer::Cgroups);
            assert!(reason.contains("memory"), "{reason}");
            assert!(!how_to_enable.is_empty());
        }
        other => panic!("expected LayerUnavailable, got {other:?}"),
    }
    assert!(err.to_string().contains("`cgroups`"), "{err}");
}

#[test]
fn allow_degraded_runs_and_lists_the_missing_layer() {
    if !v2_lacks_memory() {
        eprintln!("skipped: this host's cgroup v2 has the memory controller");
        return;
    }
    let mut c = config("degraded");
    c.cgroup_version = CgroupVersion::V2;
    c.mode = Mode::AllowDegraded;
    let r = run(&c, &["exit", "3"]);
    assert_eq!(r.report.code, Some(3));
    assert_eq!(r.applied.missing.len(), 1, "{:?}", r.applied);
    assert_eq!(r.applied.missing[0].layer, Layer::Cgroups);
    assert!(!r.applied.is_active(Layer::Cgroups));
    assert!(r.applied.is_active(Layer::Seccomp));
}

#[test]
fn invalid_configs_are_rejected_before_anything_runs() {
    let probe = probe_bin();
    let (_a, b) = UnixStream::pair().expect("pair");
    let mut c = config("x");
    c.tenant = "../escape".into();
    assert!(matches!(
        spawn(&c, &probe, &[], b.into()),
        Err(JailError::InvalidConfig(_))
    ));
    let (_a, b) = UnixStream::pair().expect("pair");
    let mut c = config("x");
    c.readonly_paths.retain(|p| p != &probe);
    assert!(matches!(
        spawn(&c, &probe, &[], b.into()),
        Err(JailError::InvalidConfig(_))
    ));
    let (_a, b) = UnixStream::pair().expect("pair");
    let c = off(config("x"), &[Layer::NoNewPrivs]);
    assert!(matches!(
        spawn(&c, &probe, &[], b.into()),
        Err(JailError::InvalidConfig(_))
    ));
    let (_a, b) = UnixStream::pair().expect("pair");
    let mut c = config("x");
    c.launcher = Some("/nonexistent/palisade-jail-launcher".into());
    assert!(matches!(
        spawn(&c, &probe, &[], b.into()),
        Err(JailError::Io { .. })
    ));
}

// ---- Lifecycle. ---------------------------------------------------------------------------

fn cgroup_dir(c: &JailConfig) -> PathBuf {
    Path::new("/sys/fs/cgroup/pids/palisade")
        .join(&c.instance)
        .join(&c.tenant)
}

fn read_cgroup(c: &JailConfig, controller: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("palisade")
        .join(&c.instance)
        .join(&c.tenant)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// Gone, or a zombie waiting for a reaper that is not ours.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn same_tenant_in_two_instances_gets_separate_cgroups_and_limits() {
    if !Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        eprintln!("skipped: needs the cgroup v1 pids and memory controllers");
        return;
    }
    let mut a = config("inst");
    a.cgroup_version = CgroupVersion::V1;
    a.instance = format!("test-a-{}", std::process::id());
    a.limits.pids_max = Some(32);
    a.limits.memory_max = Some(256 << 20);
    let mut b = a.clone();
    b.instance = format!("test-b-{}", std::process::id());
    b.limits.pids_max = Some(17);
    b.limits.memory_max = Some(128 << 20);
    assert_eq!(a.tenant, b.tenant);

    let (_oa, ta) = UnixStream::pair().expect("pair");
    let ja = spawn(&a, &probe_bin(), &["sleep".into()], ta.into()).expect("spawn a");
    let (_ob, tb) = UnixStream::pair().expect("pair");
    let jb = spawn(&b, &probe_bin(), &["sleep".into()], tb.into()).expect("spawn b");
    assert_ne!(cgroup_dir(&a), cgroup_dir(&b));
    // b was created second: it must not have overwritten a's limits.
    assert_eq!(read_cgroup(&a, "pids", "pids.max"), "32");
    assert_eq!(read_cgroup(&b, "pids", "pids.max"), "17");
    assert_eq!(
        read_cgroup(&a, "memory", "memory.limit_in_bytes"),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        read_cgroup(&b, "memory", "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    let procs_a = read_cgroup(&a, "pids", "cgroup.procs");
    assert_eq!(procs_a, ja.pid().to_string());
    assert_eq!(
        read_cgroup(&b, "pids", "cgroup.procs"),
        jb.pid().to_string()
    );

    // Removing one instance's cgroup leaves the other's alone; each instance directory goes
    // once empty.
    drop(ja);
    assert!(!cgroup_dir(&a).exists(), "a's cgroup left behind");
    assert!(
        !cgroup_dir(&a).parent().expect("instance dir").exists(),
        "a's instance directory left behind"
    );
    assert_eq!(read_cgroup(&b, "pids", "pids.max"), "17");
    assert_eq!(
        read_cgroup(&b, "pids", "cgroup.procs"),
        jb.pid().to_string()
    );
    drop(jb);
    assert!(!cgroup_dir(&b).parent().expect("instance dir").exists());
}

#[test]
fn killing_the_launcher_kills_the_jail_and_its_cgroup_is_removed() {
    let c = config("orphan");
    let (_ours, theirs) = UnixStream::pair().expect("pair");
    let jailed = spawn(&c, &probe_bin(), &["sleep".into()], theirs.into()).expect("spawn");
    let pid = jailed.pid();
    let launcher = i32::try_from(jailed.launcher_pid()).expect("pid");
    assert!(!process_gone(pid));
    // SIGKILL the launcher, as an OOM kill or a crash would (kill(1): no unsafe in tests).
    let status = std::process::Command::new("kill")
        .args(["-KILL", &launcher.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        process_gone(pid),
        "jail {pid} survived its launcher {launcher}"
    );
    // The launcher died before removing the cgroup: the supervisor side (drop) does it.
    drop(jailed);
    assert!(!cgroup_dir(&c).exists(), "cgroup left behind");
}

#[test]
fn kill_try_wait_pidfd_and_cgroup_cleanup() {
    let c = config("kill");
    let (_ours, theirs) = UnixStream::pair().expect("pair");
    let mut jailed = spawn(&c, &probe_bin(), &["sleep".into()], theirs.into()).expect("spawn");
    assert!(cgroup_dir(&c).exists() || !Path::new("/sys/fs/cgroup/pids").exists());
    assert_eq!(jailed.try_wait().expect("try_wait"), None);
    jailed.kill().expect("kill");
    // The pidfd becomes readable once the jail is gone.
    {
        let pidfd = jailed.pidfd();
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(&mut fds, None);
    }
    let report = loop {
        if let Some(r) = jailed.try_wait().expect("try_wait") {
            break r;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(report.reason, ExitReason::Killed);
    jailed.kill().expect("kill is idempotent");
    drop(jailed);
    assert!(!cgroup_dir(&c).exists(), "cgroup left behind");

    // Dropping a running jail kills it and removes its cgroup too.
    let c = config("drop");
    let (_ours, theirs) = UnixStream::pair().expect("pair");
    let jailed = spawn(&c, &probe_bin(), &["sleep".into()], theirs.into()).expect("spawn");
    let pid = jailed.pid();
    drop(jailed);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "jail {pid} survived the drop"
    );
    assert!(!cgroup_dir(&c).exists(), "cgroup left behind");
}

#[test]
fn doctor_reports_every_layer() {
    let report = doctor();
    for layer in Layer::ALL {
        let s = report
            .iter()
            .find(|s| s.name == layer.name())
            .unwrap_or_else(|| panic!("doctor lacks {layer}"));
        assert!(s.available, "{layer} unavailable here: {}", s.detail);
    }
    let pool = report
        .iter()
        .find(|s| s.name == "pooling_address_space")
        .expect("pooling");
    assert!(pool.detail.contains("vm.max_map_count"), "{}", pool.detail);
}
