//! `palisade-jail-probe`: a test program run inside the jail by the same `spawn` path as the
//! worker. It tries escapes and reports each result as one JSON line on fd 3:
//! `{"probe":"socket_inet_tcp","ok":false,"errno":1,"detail":"..."}`.
//!
//! Modes (first argument):
//! - `suite [--no-stage2] [--tcp-port N] [--abstract NAME]`: applies seccomp stage 2 like the
//!   worker (unless `--no-stage2`), then runs every probe and writes `{"done":true}`.
//! - `worker`: behaves like the real worker (threads, a 64 GiB PROT_NONE reservation, an
//!   RW→RX JIT transition, stage 2, more threads) and echoes one frame on fd 3.
//! - `int80`, `forkbomb`, `threadbomb`, `membomb MIB`, `cpuhog MS`, `spin`, `fill`, `sleep`:
//!   one destructive probe each.
//!
//! This is test code that calls arbitrary system calls on purpose; it never runs outside a
//! test jail in production.
#![allow(
    unsafe_code,
    reason = "the probe issues raw system calls to attack its own jail"
)]

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static OUT: OnceLock<std::sync::Mutex<File>> = OnceLock::new();

fn out_line(line: &str) {
    let out = OUT.get_or_init(|| {
        // SAFETY: fd 3 is the IPC socket the jail guarantees; this process owns it for its
        // whole life and nothing else wraps it.
        std::sync::Mutex::new(unsafe { File::from_raw_fd(3) })
    });
    if let Ok(mut f) = out.lock() {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn esc(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}

fn report(name: &str, r: Result<String, i32>) {
    match r {
        Ok(detail) => out_line(&format!(
            r#"{{"probe":"{name}","ok":true,"errno":0,"detail":"{}"}}"#,
            esc(&detail)
        )),
        Err(errno) => out_line(&format!(
            r#"{{"probe":"{name}","ok":false,"errno":{errno},"detail":"{}"}}"#,
            esc(&std::io::Error::from_raw_os_error(errno).to_string())
        )),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Raw system call.
///
/// # Safety
/// Every pointer argument must be null or point at live memory of the size and kind the
/// kernel expects for `nr`, and the call must not unmap or overwrite memory Rust owns.
unsafe fn raw(nr: libc::c_long, a: [usize; 6]) -> Result<i64, i32> {
    // SAFETY: forwarded to the caller's contract.
    let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if rc < 0 { Err(errno()) } else { Ok(rc) }
}

/// Raw system call whose arguments are all integers or null pointers.
fn int(nr: libc::c_long, a: [usize; 6]) -> Result<i64, i32> {
    // SAFETY: callers pass integers and null pointers only, which the kernel validates; none
    // of the calls made through this helper maps or unmaps memory.
    unsafe { raw(nr, a) }
}

fn close(fd: i64) {
    let _ = int(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
}

fn ok_fd(r: Result<i64, i32>) -> Result<String, i32> {
    r.map(|fd| {
        close(fd);
        format!("fd {fd}")
    })
}

fn path(p: &str) -> CString {
    CString::new(p).unwrap_or_default()
}

fn open(p: &str, flags: i32) -> Result<String, i32> {
    let c = path(p);
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    ok_fd(unsafe {
        raw(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                c.as_ptr() as usize,
                flags as usize,
                0o600,
                0,
                0,
            ],
        )
    })
}

/// fork-like clone; the child exits at once.
fn fork_like(nr: libc::c_long, args: [usize; 6]) -> Result<String, i32> {
    let pid = int(nr, args)?;
    if pid == 0 {
        // SAFETY: _exit in the child of a fork-like clone is always allowed.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: `status` is a live int.
    unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    Ok(format!("child {pid}"))
}

fn socket(domain: i32, ty: i32, proto: i32) -> Result<String, i32> {
    ok_fd(int(
        libc::SYS_socket,
        [domain as usize, ty as usize, proto as usize, 0, 0, 0],
    ))
}

fn connect_tcp(port: u16) -> Result<String, i32> {
    let fd = int(
        libc::SYS_socket,
        [
            libc::AF_INET as usize,
            libc::SOCK_STREAM as usize,
            0,
            0,
            0,
            0,
        ],
    )?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a live sockaddr_in of the given size.
    let r = unsafe {
        raw(
            libc::SYS_connect,
            [
                fd as usize,
                &raw const addr as usize,
                size_of::<libc::sockaddr_in>(),
                0,
                0,
                0,
            ],
        )
    };
    close(fd);
    r.map(|_| format!("connected to 127.0.0.1:{port}"))
}

fn connect_abstract(name: &str) -> Result<String, i32> {
    let fd = int(
        libc::SYS_socket,
        [
            libc::AF_UNIX as usize,
            libc::SOCK_STREAM as usize,
            0,
            0,
            0,
            0,
        ],
    )?;
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    for (i, b) in name.bytes().take(100).enumerate() {
        addr.sun_path[i + 1] = b as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + name.len().min(100);
    // SAFETY: `addr` is a live sockaddr_un; `len` is within its size.
    let r = unsafe {
        raw(
            libc::SYS_connect,
            [fd as usize, &raw const addr as usize, len, 0, 0, 0],
        )
    };
    close(fd);
    r.map(|_| format!("connected to @{name}"))
}

fn mmap(prot: i32) -> Result<usize, i32> {
    int(
        libc::SYS_mmap,
        [
            0,
            4096,
            prot as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize,
            usize::MAX,
            0,
        ],
    )
    .map(|a| a as usize)
}

fn munmap(addr: usize, len: usize) {
    // SAFETY: `addr..addr+len` is a mapping this file created and no Rust object refers to.
    let _ = unsafe { raw(libc::SYS_munmap, [addr, len, 0, 0, 0, 0]) };
}

fn mprotect(addr: usize, len: usize, prot: i32) -> Result<i64, i32> {
    // SAFETY: `addr..addr+len` is a mapping this file created; no Rust reference points into
    // it while its protection changes.
    unsafe { raw(libc::SYS_mprotect, [addr, len, prot as usize, 0, 0, 0]) }
}

/// W^X JIT: RW, write `mov eax, 42; ret`, RX, call it.
fn jit_rw_to_rx() -> Result<String, i32> {
    let page = mmap(libc::PROT_READ | libc::PROT_WRITE)?;
    let code: [u8; 6] = [0xb8, 42, 0, 0, 0, 0xc3];
    // SAFETY: `page` is a fresh, writable 4096-byte anonymous mapping.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len()) };
    let r = mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC);
    let result = r.map(|_| {
        // SAFETY: the page now holds a complete `mov eax, 42; ret` and is executable.
        let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(page) };
        format!("jit returned {}", f())
    });
    munmap(page, 4096);
    result
}

fn fds_open() -> String {
    (0..1024)
        // SAFETY: F_GETFD on any number only queries the fd table.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
        .map(|fd| fd.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn capget() -> Result<(u64, u64), i32> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: version-3 header and two data structs, live and repr(C).
    unsafe {
        raw(
            libc::SYS_capget,
            [&raw mut h as usize, d.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    }?;
    let j = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        j(d[0].effective, d[1].effective),
        j(d[0].permitted, d[1].permitted),
    ))
}

fn suite(args: &[String]) {
    let mut stage2 = true;
    let mut tcp_port: u16 = 9;
    let mut abstract_name = String::from("palisade-probe-none");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-stage2" => stage2 = false,
            "--tcp-port" => tcp_port = it.next().and_then(|v| v.parse().ok()).unwrap_or(9),
            "--abstract" => abstract_name = it.next().cloned().unwrap_or_default(),
            _ => {}
        }
    }
    let me = std::env::args().next().unwrap_or_default();
    if stage2 {
        report(
            "stage2_applied",
            palisade_jail::seccomp_stage2()
                .map(|()| "stage 2 on".into())
                .map_err(|_| errno()),
        );
    }

    // Identity and environment.
    report("identity", {
        let mut uts: libc::utsname = unsafe_zeroed_utsname();
        // SAFETY: `uts` is a live utsname.
        unsafe { libc::uname(&mut uts) };
        let host: String = uts
            .nodename
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect();
        let sid = int(libc::SYS_getsid, [0; 6]).unwrap_or(-1);
        Ok(format!(
            "uid={} pid={} sid={sid} host={host} env={}",
            int(libc::SYS_getuid, [0; 6]).unwrap_or(-1),
            std::process::id(),
            std::env::vars_os().count()
        ))
    });
    report(
        "pid_is_1",
        if std::process::id() == 1 {
            Ok("pid 1".into())
        } else {
            Err(libc::ESRCH)
        },
    );
    report(
        "session_leader",
        match int(libc::SYS_getsid, [0; 6]) {
            Ok(s) if s == i64::from(std::process::id()) => Ok(format!("sid {s}")),
            Ok(_) => Err(libc::EPERM),
            Err(e) => Err(e),
        },
    );
    report(
        "hostname_isolated",
        if std::fs::read("/proc/sys/kernel/hostname").is_ok() {
            Err(libc::EEXIST)
        } else {
            let mut uts = unsafe_zeroed_utsname();
            // SAFETY: `uts` is a live utsname.
            unsafe { libc::uname(&mut uts) };
            let host: String = uts
                .nodename
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8 as char)
                .collect();
            if host == "palisade" {
                Ok(host)
            } else {
                Err(libc::EEXIST)
            }
        },
    );
    report(
        "no_new_privs",
        match int(
            libc::SYS_prctl,
            [libc::PR_GET_NO_NEW_PRIVS as usize, 0, 0, 0, 0, 0],
        ) {
            Ok(1) => Ok("no_new_privs=1".into()),
            Ok(_) => Err(libc::EPERM),
            Err(e) => Err(e),
        },
    );
    report(
        "caps_empty",
        match capget() {
            Ok((0, 0)) => Ok("effective=0 permitted=0".into()),
            Ok((e, p)) => {
                out_line(&format!(
                    r#"{{"note":"caps effective={e:#x} permitted={p:#x}"}}"#
                ));
                Err(libc::EPERM)
            }
            Err(e) => Err(e),
        },
    );
    report("only_fds_0_to_3", {
        let fds = fds_open();
        if fds == "0,1,2,3" {
            Ok(fds)
        } else {
            out_line(&format!(r#"{{"note":"open fds {fds}"}}"#));
            Err(libc::EBADF)
        }
    });
    report("thread_spawn", {
        std::thread::spawn(|| 7)
            .join()
            .map(|v| format!("thread returned {v}"))
            .map_err(|_| libc::EAGAIN)
    });
    report("jit_rw_then_rx", jit_rw_to_rx());

    // Processes and programs.
    report("fork", fork_like(libc::SYS_fork, [0; 6]));
    report(
        "clone_process",
        fork_like(libc::SYS_clone, [libc::SIGCHLD as usize, 0, 0, 0, 0, 0]),
    );
    report("clone3", {
        let args: [u64; 11] = [0, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0, 0, 0, 0];
        // SAFETY: a live clone_args (11 u64 fields) with fork semantics; the child exits at
        // once.
        match unsafe { raw(libc::SYS_clone3, [args.as_ptr() as usize, 88, 0, 0, 0, 0]) } {
            Ok(0) => {
                // SAFETY: child of a fork-like clone.
                unsafe { libc::_exit(0) }
            }
            Ok(pid) => {
                // Reap it now: a child left to exit later would send SIGCHLD after the
                // ptrace_traceme probe below, and a traced process stops on every signal until
                // its tracer (the launcher) continues it, which it never does.
                let mut status = 0;
                // SAFETY: `status` is a live int.
                unsafe { libc::waitpid(pid as i32, &mut status, 0) };
                Ok(format!("child {pid}"))
            }
            Err(e) => Err(e),
        }
    });
    report(
        "clone_newuser",
        fork_like(
            libc::SYS_clone,
            [
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as usize,
                0,
                0,
                0,
                0,
                0,
            ],
        ),
    );
    report("execve", {
        let p = path("/nonexistent-palisade");
        let argv = [p.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: NUL-terminated path and null-terminated arrays; the path does not exist, so
        // a permitted call returns ENOENT instead of replacing this process.
        unsafe {
            raw(
                libc::SYS_execve,
                [
                    p.as_ptr() as usize,
                    argv.as_ptr() as usize,
                    envp.as_ptr() as usize,
                    0,
                    0,
                    0,
                ],
            )
        }
        .map(|_| "exec returned".into())
    });
    report("memfd_exec", {
        let name = path("x");
        // SAFETY: NUL-terminated name.
        match unsafe {
            raw(
                libc::SYS_memfd_create,
                [name.as_ptr() as usize, 0, 0, 0, 0, 0],
            )
        } {
            Err(e) => Err(e),
            Ok(fd) => {
                let empty = path("");
                let argv = [empty.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null::<libc::c_char>()];
                // SAFETY: as for execve; the memfd is empty, so a permitted exec fails with
                // ENOEXEC and returns.
                let r = unsafe {
                    raw(
                        libc::SYS_execveat,
                        [
                            fd as usize,
                            empty.as_ptr() as usize,
                            argv.as_ptr() as usize,
                            envp.as_ptr() as usize,
                            libc::AT_EMPTY_PATH as usize,
                            0,
                        ],
                    )
                };
                close(fd);
                match r {
                    Err(libc::ENOEXEC) => Ok("memfd created, execveat reached the loader".into()),
                    Err(e) => Ok(format!("memfd created, execveat errno {e}")),
                    Ok(_) => Ok("exec returned".into()),
                }
            }
        }
    });

    // Sockets and the network.
    for (name, d, t, p) in [
        ("socket_inet_tcp", libc::AF_INET, libc::SOCK_STREAM, 0),
        ("socket_inet_udp", libc::AF_INET, libc::SOCK_DGRAM, 0),
        (
            "socket_inet_raw",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        ("socket_inet6_tcp", libc::AF_INET6, libc::SOCK_STREAM, 0),
        ("socket_unix_stream", libc::AF_UNIX, libc::SOCK_STREAM, 0),
        ("socket_unix_dgram", libc::AF_UNIX, libc::SOCK_DGRAM, 0),
        (
            "socket_netlink_route",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
        ),
        (
            "socket_netlink_netfilter",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_NETFILTER,
        ),
        ("socket_packet", libc::AF_PACKET, libc::SOCK_RAW, 0),
        ("socket_vsock", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        ("socket_alg", libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        ("socket_key", libc::AF_KEY, libc::SOCK_RAW, 2),
    ] {
        report(name, socket(d, t, p));
    }
    report("socketpair_unix", {
        let mut sv = [0i32; 2];
        // SAFETY: `sv` is a live array of two ints.
        unsafe {
            raw(
                libc::SYS_socketpair,
                [
                    libc::AF_UNIX as usize,
                    libc::SOCK_STREAM as usize,
                    0,
                    sv.as_mut_ptr() as usize,
                    0,
                    0,
                ],
            )
        }
        .map(|_| {
            close(i64::from(sv[0]));
            close(i64::from(sv[1]));
            "pair".into()
        })
    });
    report("connect_tcp_loopback", connect_tcp(tcp_port));
    report("connect_abstract_unix", connect_abstract(&abstract_name));

    // Files.
    report("open_etc_passwd", open("/etc/passwd", libc::O_RDONLY));
    report(
        "open_proc_self_status",
        open("/proc/self/status", libc::O_RDONLY),
    );
    report("open_sys_kernel", open("/sys/kernel/notes", libc::O_RDONLY));
    report("open_dev_kvm", open("/dev/kvm", libc::O_RDWR));
    report(
        "readdir_root",
        open("/", libc::O_RDONLY | libc::O_DIRECTORY),
    );
    report(
        "write_root",
        open("/palisade-probe-file", libc::O_WRONLY | libc::O_CREAT),
    );
    report("write_own_binary", open(&me, libc::O_RDWR));
    report("symlink_in_scratch", {
        let (t, l) = (path("/etc/shadow"), path("/tmp/palisade-link"));
        // SAFETY: two NUL-terminated paths.
        unsafe {
            raw(
                libc::SYS_symlinkat,
                [
                    t.as_ptr() as usize,
                    libc::AT_FDCWD as usize,
                    l.as_ptr() as usize,
                    0,
                    0,
                    0,
                ],
            )
        }
        .map(|_| "symlink created".into())
    });
    report("mknod_device", {
        let p = path("/tmp/palisade-kvm");
        // SAFETY: NUL-terminated path, integer mode and device.
        unsafe {
            raw(
                libc::SYS_mknodat,
                [
                    libc::AT_FDCWD as usize,
                    p.as_ptr() as usize,
                    (libc::S_IFCHR | 0o600) as usize,
                    libc::makedev(10, 232) as usize,
                    0,
                    0,
                ],
            )
        }
        .map(|_| "device node created".into())
    });

    // Mounts and namespaces.
    report("mount_tmpfs", {
        let (s, t, f) = (path("none"), path("/"), path("tmpfs"));
        // SAFETY: NUL-terminated strings, null data.
        unsafe {
            raw(
                libc::SYS_mount,
                [
                    s.as_ptr() as usize,
                    t.as_ptr() as usize,
                    f.as_ptr() as usize,
                    0,
                    0,
                    0,
                ],
            )
        }
        .map(|_| "mounted".into())
    });
    report("umount_root", {
        let t = path("/");
        // SAFETY: NUL-terminated path.
        unsafe {
            raw(
                libc::SYS_umount2,
                [t.as_ptr() as usize, libc::MNT_DETACH as usize, 0, 0, 0, 0],
            )
        }
        .map(|_| "unmounted".into())
    });
    report("pivot_root", {
        let d = path(".");
        // SAFETY: NUL-terminated paths.
        unsafe {
            raw(
                libc::SYS_pivot_root,
                [d.as_ptr() as usize, d.as_ptr() as usize, 0, 0, 0, 0],
            )
        }
        .map(|_| "pivoted".into())
    });
    report("chroot", {
        let d = path("/");
        // SAFETY: NUL-terminated path.
        unsafe { raw(libc::SYS_chroot, [d.as_ptr() as usize, 0, 0, 0, 0, 0]) }
            .map(|_| "chrooted".into())
    });
    report(
        "unshare_user",
        int(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as usize, 0, 0, 0, 0, 0],
        )
        .map(|_| "unshared".into()),
    );
    report(
        "unshare_mount",
        int(
            libc::SYS_unshare,
            [libc::CLONE_NEWNS as usize, 0, 0, 0, 0, 0],
        )
        .map(|_| "unshared".into()),
    );
    report(
        "setns",
        int(libc::SYS_setns, [3, 0, 0, 0, 0, 0]).map(|_| "joined".into()),
    );

    // Kernel attack surface.
    report(
        "process_vm_readv",
        int(libc::SYS_process_vm_readv, [1, 0, 0, 0, 0, 0]).map(|_| "read".into()),
    );
    report(
        "io_uring_setup",
        ok_fd(int(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0])),
    );
    report("bpf", ok_fd(int(libc::SYS_bpf, [5, 0, 0, 0, 0, 0])));
    report(
        "userfaultfd",
        ok_fd(int(libc::SYS_userfaultfd, [1, 0, 0, 0, 0, 0])),
    );
    report(
        "keyctl",
        int(libc::SYS_keyctl, [0, (-3i64) as usize, 0, 0, 0, 0]).map(|k| format!("keyring {k}")),
    );
    report("add_key", {
        let (t, d, p) = (path("user"), path("palisade"), path("secret"));
        // SAFETY: NUL-terminated strings and a 6-byte payload.
        unsafe {
            raw(
                libc::SYS_add_key,
                [
                    t.as_ptr() as usize,
                    d.as_ptr() as usize,
                    p.as_ptr() as usize,
                    6,
                    (-2i64) as usize,
                    0,
                ],
            )
        }
        .map(|k| format!("key {k}"))
    });
    report(
        "perf_event_open",
        ok_fd(int(
            libc::SYS_perf_event_open,
            [0, 0, usize::MAX, usize::MAX, 0, 0],
        )),
    );
    report(
        "inotify_init",
        ok_fd(int(libc::SYS_inotify_init1, [0, 0, 0, 0, 0, 0])),
    );
    report(
        "open_by_handle_at",
        int(libc::SYS_open_by_handle_at, [usize::MAX, 0, 0, 0, 0, 0]).map(|_| "opened".into()),
    );
    report(
        "kcmp",
        int(libc::SYS_kcmp, [1, 1, 0, 0, 0, 0]).map(|_| "compared".into()),
    );
    report(
        "modify_ldt",
        int(libc::SYS_modify_ldt, [0, 0, 0, 0, 0, 0]).map(|_| "read ldt".into()),
    );
    report(
        "personality",
        int(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0])
            .map(|_| "READ_IMPLIES_EXEC".into()),
    );
    report(
        "splice",
        int(libc::SYS_splice, [usize::MAX, 0, usize::MAX, 0, 1, 0]).map(|_| "spliced".into()),
    );
    report(
        "mmap_wx",
        mmap(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC).map(|a| {
            munmap(a, 4096);
            "W+X page".into()
        }),
    );
    report(
        "mprotect_to_wx",
        match mmap(libc::PROT_READ | libc::PROT_WRITE) {
            Err(e) => Err(e),
            Ok(a) => {
                let r = mprotect(
                    a,
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                );
                munmap(a, 4096);
                r.map(|_| "W+X page".into())
            }
        },
    );

    // Privileges, signals, terminals, limits.
    report(
        "kill_all",
        int(libc::SYS_kill, [usize::MAX, 0, 0, 0, 0, 0]).map(|_| "kill(-1, 0) succeeded".into()),
    );
    report("tiocsti", {
        let c: u8 = b'x';
        // SAFETY: TIOCSTI reads one byte from a live u8.
        unsafe {
            raw(
                libc::SYS_ioctl,
                [0, libc::TIOCSTI as usize, &raw const c as usize, 0, 0, 0],
            )
        }
        .map(|_| "injected".into())
    });
    report("raise_nofile", {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a live rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let new = libc::rlimit {
            rlim_cur: lim.rlim_max.saturating_add(1),
            rlim_max: lim.rlim_max.saturating_add(1),
        };
        // SAFETY: `new` is a live rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            Ok(format!("raised to {}", new.rlim_max))
        } else {
            Err(errno())
        }
    });
    report("nofile_exhaustion", {
        let mut fds = Vec::new();
        let mut err = 0;
        for _ in 0..4096 {
            match int(libc::SYS_dup, [0, 0, 0, 0, 0, 0]) {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    err = e;
                    break;
                }
            }
        }
        let n = fds.len();
        fds.into_iter().for_each(close);
        if err == 0 {
            Ok(format!("opened {n} fds"))
        } else {
            out_line(&format!(r#"{{"note":"nofile stopped after {n} fds"}}"#));
            Err(err)
        }
    });
    report(
        "setuid",
        int(libc::SYS_setuid, [1000, 0, 0, 0, 0, 0]).map(|_| "uid 1000".into()),
    );
    report("capset_all", {
        let h: [u32; 2] = [0x2008_0522, 0];
        let d: [u32; 6] = [u32::MAX; 6];
        // SAFETY: version-3 header and two data structs (3 u32 each), live.
        unsafe {
            raw(
                libc::SYS_capset,
                [h.as_ptr() as usize, d.as_ptr() as usize, 0, 0, 0, 0],
            )
        }
        .map(|_| "all caps".into())
    });
    report(
        "set_dumpable",
        int(
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as usize, 1, 0, 0, 0, 0],
        )
        .map(|_| "dumpable".into()),
    );
    report("sethostname", {
        let n = path("pwned");
        // SAFETY: 5 bytes of a live string.
        unsafe { raw(libc::SYS_sethostname, [n.as_ptr() as usize, 5, 0, 0, 0, 0]) }
            .map(|_| "renamed".into())
    });
    report(
        "shmget",
        match int(
            libc::SYS_shmget,
            [0, 1 << 20, (libc::IPC_CREAT | 0o600) as usize, 0, 0, 0],
        ) {
            Ok(id) => {
                let _ = int(
                    libc::SYS_shmctl,
                    [id as usize, libc::IPC_RMID as usize, 0, 0, 0, 0],
                );
                Ok(format!("segment {id}"))
            }
            Err(e) => Err(e),
        },
    );
    report(
        "msgget",
        match int(
            libc::SYS_msgget,
            [0, (libc::IPC_CREAT | 0o600) as usize, 0, 0, 0, 0],
        ) {
            Ok(id) => {
                let _ = int(
                    libc::SYS_msgctl,
                    [id as usize, libc::IPC_RMID as usize, 0, 0, 0, 0],
                );
                Ok(format!("queue {id}"))
            }
            Err(e) => Err(e),
        },
    );
    report(
        "reboot",
        int(libc::SYS_reboot, [0, 0, 0, 0, 0, 0]).map(|_| "rebooted?".into()),
    );
    report(
        "init_module",
        int(libc::SYS_init_module, [0, 0, 0, 0, 0, 0]).map(|_| "loaded".into()),
    );
    report("clock_settime", {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a live timespec. The call is expected to fail; if permitted it
        // would only affect the jail's view... it is not: this is why it is probed.
        unsafe {
            raw(
                libc::SYS_clock_settime,
                [
                    libc::CLOCK_MONOTONIC as usize,
                    &raw const ts as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )
        }
        .map(|_| "clock set".into())
    });
    // Last: if permitted, TRACEME makes the launcher our tracer.
    report(
        "ptrace_traceme",
        int(
            libc::SYS_ptrace,
            [libc::PTRACE_TRACEME as usize, 0, 0, 0, 0, 0],
        )
        .map(|_| "traced by the parent".into()),
    );
    out_line(r#"{"done":true}"#);
}

fn unsafe_zeroed_utsname() -> libc::utsname {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn worker() {
    // Threads before and after stage 2, like tokio workers and wasmtime's epoch ticker.
    let ticker = std::thread::spawn(|| {
        let start = Instant::now();
        let mut ticks = 0u32;
        while start.elapsed() < Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(1));
            ticks += 1;
        }
        ticks
    });
    let reserve: usize = 64 << 30;
    let base = int(
        libc::SYS_mmap,
        [
            0,
            reserve,
            libc::PROT_NONE as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as usize,
            usize::MAX,
            0,
        ],
    );
    let reserved = match base {
        Ok(b) => {
            let b = b as usize;
            // Commit 1 MiB, touch it, give it back with MADV_DONTNEED (pool reset).
            let commit = mprotect(b, 1 << 20, libc::PROT_READ | libc::PROT_WRITE).is_ok();
            if commit {
                // SAFETY: the first MiB of the reservation is now readable and writable.
                unsafe { std::ptr::write_bytes(b as *mut u8, 0xAB, 1 << 20) };
                let _ = int(
                    libc::SYS_madvise,
                    [b, 1 << 20, libc::MADV_DONTNEED as usize, 0, 0, 0],
                );
            }
            munmap(b, reserve);
            commit
        }
        Err(_) => false,
    };
    let jit = jit_rw_to_rx();
    // tokio's signal driver makes an AF_UNIX socketpair when the runtime starts.
    let pair = std::os::unix::net::UnixStream::pair().is_ok();
    let stage2 = palisade_jail::seccomp_stage2().is_ok();
    // wasmtime's copy-on-write images: ENOSYS makes it fall back instead of failing.
    let name = path("wasm-memory-image");
    // SAFETY: NUL-terminated name.
    let memfd = unsafe {
        raw(
            libc::SYS_memfd_create,
            [name.as_ptr() as usize, 0, 0, 0, 0, 0],
        )
    };
    let memfd_enosys = memfd == Err(libc::ENOSYS);
    let after = std::thread::spawn(|| 1).join().is_ok();
    let ticks = ticker.join().unwrap_or(0);
    let jit_after = jit_rw_to_rx();
    // One frame: a length-prefixed message in, the same message out.
    let Ok(fd) = palisade_jail::take_ipc_fd() else {
        std::process::exit(3);
    };
    let mut file = File::from(fd);
    let mut len = [0u8; 4];
    let mut body = Vec::new();
    if file.read_exact(&mut len).is_ok() {
        body.resize(u32::from_le_bytes(len).min(1 << 20) as usize, 0);
        let _ = file.read_exact(&mut body);
    }
    let msg = format!(
        r#"{{"reserved_64g":{reserved},"jit":{},"socketpair_before_stage2":{pair},"stage2":{stage2},"memfd_enosys_after_stage2":{memfd_enosys},"thread_after_stage2":{after},"ticks":{ticks},"jit_after_stage2":{},"echo":"{}"}}"#,
        jit.is_ok(),
        jit_after.is_ok(),
        esc(&String::from_utf8_lossy(&body))
    );
    let _ = file.write_all(&(msg.len() as u32).to_le_bytes());
    let _ = file.write_all(msg.as_bytes());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("suite");
    let rest = args.get(1..).unwrap_or(&[]);
    let num = |d: u64| rest.first().and_then(|v| v.parse().ok()).unwrap_or(d);
    match mode {
        "suite" => suite(rest),
        "worker" => worker(),
        "int80" => {
            out_line(r#"{"probe":"int80","starting":true}"#);
            let mut eax: u32 = 20; // i386 getpid
            // SAFETY: `int 0x80` enters the 32-bit syscall ABI; getpid touches no memory.
            unsafe { std::arch::asm!("int 0x80", inout("eax") eax, options(nostack)) };
            report("int80", Ok(format!("32-bit getpid returned {eax}")));
        }
        "forkbomb" => {
            let mut n = 0u32;
            let mut err = 0;
            while n < 10_000 {
                match int(libc::SYS_clone, [libc::SIGCHLD as usize, 0, 0, 0, 0, 0]) {
                    Ok(0) => loop {
                        std::thread::sleep(Duration::from_secs(60));
                    },
                    Ok(_) => n += 1,
                    Err(e) => {
                        err = e;
                        break;
                    }
                }
            }
            out_line(&format!(
                r#"{{"probe":"forkbomb","children":{n},"errno":{err}}}"#
            ));
        }
        "threadbomb" => {
            let mut handles = Vec::new();
            let mut err = String::new();
            while handles.len() < 10_000 {
                match std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(|| std::thread::sleep(Duration::from_secs(30)))
                {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        err = format!("{}", e.raw_os_error().unwrap_or(0));
                        break;
                    }
                }
            }
            out_line(&format!(
                r#"{{"probe":"threadbomb","threads":{},"errno":{}}}"#,
                handles.len(),
                if err.is_empty() { "0".into() } else { err }
            ));
            std::process::exit(0);
        }
        "membomb" => {
            let mib = num(256) as usize;
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for i in 0..mib {
                chunks.push(vec![0x5A; 1 << 20]);
                if i % 16 == 0 {
                    out_line(&format!(r#"{{"probe":"membomb","mib":{i}}}"#));
                }
            }
            out_line(&format!(
                r#"{{"probe":"membomb","survived_mib":{}}}"#,
                chunks.len()
            ));
        }
        "cpuhog" => {
            let ms = num(1000);
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(ms) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a live timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
            let cpu_ms = ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000;
            out_line(&format!(
                r#"{{"probe":"cpuhog","wall_ms":{ms},"cpu_ms":{cpu_ms},"x":{}}}"#,
                x % 2
            ));
        }
        "spin" => loop {
            std::hint::spin_loop();
        },
        "fill" => {
            let mut written: u64 = 0;
            let mut err = 0;
            match File::create("/tmp/fill") {
                Err(e) => err = e.raw_os_error().unwrap_or(0),
                Ok(mut f) => {
                    let block = vec![0u8; 64 << 10];
                    loop {
                        match f.write(&block) {
                            Ok(0) => break,
                            Ok(n) => written += n as u64,
                            Err(e) => {
                                err = e.raw_os_error().unwrap_or(0);
                                break;
                            }
                        }
                        if written > (1 << 30) {
                            break;
                        }
                    }
                }
            }
            out_line(&format!(
                r#"{{"probe":"fill","bytes":{written},"errno":{err}}}"#
            ));
        }
        "sleep" => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
        "exit" => std::process::exit(num(0) as i32),
        other => {
            out_line(&format!(r#"{{"error":"unknown mode {other}"}}"#));
            std::process::exit(2);
        }
    }
}
