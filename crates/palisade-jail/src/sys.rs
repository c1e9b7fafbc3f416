//! Thin safe wrappers over the Linux system calls the jail needs. All OS-specific `unsafe`
//! of the crate's core lives here (plus the seccomp installer in `seccomp.rs`); each block
//! states why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn check_long(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `mount(2)`.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is either null (allowed by mount(2) for source, fstype and data)
    // or points at a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(rc).map(drop)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check_long(rc).map(drop)
}

/// `statvfs(3)` mount flags (`ST_*`).
pub fn statvfs_flags(path: &CStr) -> io::Result<libc::c_ulong> {
    let mut buf = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated; `buf` is a writable `statvfs` the call fills in.
    check(unsafe { libc::statvfs(path.as_ptr(), buf.as_mut_ptr()) })?;
    // SAFETY: statvfs returned success, so it initialised `buf` (and it was zeroed before).
    Ok(unsafe { buf.assume_init() }.f_flag)
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `setsid(2)`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and touches no memory of ours.
    check(unsafe { libc::setsid() }).map(drop)
}

/// `unshare(2)`. Only ever called in the single-threaded jail child, with namespace flags
/// (never `CLONE_FILES`, which would invalidate borrowed fds).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    debug_assert_eq!(flags & libc::CLONE_FILES, 0);
    // SAFETY: namespace flags only; unsharing namespaces does not invalidate any memory or fd
    // this process holds.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Raw `setresuid(2)` (this thread only; the jail child has one thread).
pub fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// Raw `setresgid(2)`.
pub fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

/// `setgroups(0, NULL)`: no supplementary groups.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: a zero-length list; the kernel reads nothing through the null pointer.
    check_long(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })
        .map(drop)
}

/// `prctl(2)` with integer arguments.
pub fn prctl(
    option: libc::c_int,
    a2: libc::c_ulong,
    a3: libc::c_ulong,
    a4: libc::c_ulong,
    a5: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: every option this crate uses takes integer arguments only (no pointers).
    check(unsafe { libc::prctl(option, a2, a3, a4, a5) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset(2)` with empty effective, permitted and inheritable sets.
pub fn capset_zero() -> io::Result<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and an array of two data structs, both live and
    // correctly laid out (`repr(C)`) for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    check_long(rc).map(drop)
}

/// `close_range(2)`.
pub fn close_range(first: u32, last: u32, flags: u32) -> io::Result<()> {
    // SAFETY: integer arguments. Closing (or marking close-on-exec) fds that Rust objects
    // still own is only done in the jail child right before exec, where no such object is
    // used afterwards except through fds below `first`.
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// `dup2(2)` onto a fixed fd number; the new fd is not close-on-exec.
pub fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    if from.as_raw_fd() == to {
        return clear_cloexec(to);
    }
    // SAFETY: `from` is a valid open fd; `to` is a plain number the caller dedicates to this
    // copy (0, 1, 2 or 3 in the jail child, where nothing else owns those numbers).
    check(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

/// Clears `FD_CLOEXEC` on `fd`.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with an integer argument; an invalid fd yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// `execve(2)` with an empty environment. Returns only on failure.
pub fn execve(program: &CStr, argv: &[CString]) -> io::Error {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: `program` and every `argv` element are NUL-terminated strings that outlive the
    // call; both pointer arrays are null-terminated.
    unsafe { libc::execve(program.as_ptr(), ptrs.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// `_exit(2)`: ends the process without running destructors or atexit handlers (the jail
/// child shares copies of the launcher's buffers, which must not be flushed twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Result of [`clone3_fork`].
#[derive(Debug)]
pub enum Forked {
    /// In the parent: the child's pid and a pidfd for it.
    Parent { pid: u32, pidfd: OwnedFd },
    /// In the child.
    Child,
}

/// `clone3(2)` with fork semantics (no new stack, `SIGCHLD` on exit, `CLONE_PIDFD`).
///
/// The caller must be single-threaded (the launcher is), so that the child, a copy of the
/// only thread, holds no lock owned by another thread.
pub fn clone3_fork(ns_flags: u64) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: ns_flags | libc::CLONE_PIDFD as u64,
        pidfd: (&raw mut pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a correctly laid out `clone_args` (size passed explicitly) and
    // `pidfd` is a live `c_int` the kernel writes the new pidfd to. With no stack given the
    // child continues on a copy of this stack, exactly like fork(2); the process is
    // single-threaded (documented precondition), so the child's memory is consistent.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, size_of::<CloneArgs>()) };
    let pid = check_long(rc)?;
    if pid == 0 {
        return Ok(Forked::Child);
    }
    // SAFETY: CLONE_PIDFD succeeded, so the kernel stored a fresh, open fd that nothing else
    // owns in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Forked::Parent {
        pid: u32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?,
        pidfd,
    })
}

/// Landlock ABI version of the running kernel (0 if unsupported or disabled).
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the call only
    // returns a number.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(rc).unwrap_or(0).max(0)
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: pidfd_open returned a new open fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo (null), no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    check_long(rc).map(drop)
}

/// How a child ended, from `waitid`.
#[derive(Debug, Clone, Copy)]
pub struct ChildStatus {
    /// `CLD_EXITED`, `CLD_KILLED` or `CLD_DUMPED`.
    pub code: libc::c_int,
    /// Exit code or signal number.
    pub status: libc::c_int,
}

/// `waitid(P_PIDFD, fd, WEXITED)`: blocks until the child has exited and reaps it.
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<ChildStatus> {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    loop {
        // SAFETY: `info` is a writable siginfo_t; P_PIDFD with a valid pidfd.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                info.as_mut_ptr(),
                libc::WEXITED,
            )
        };
        match check(rc) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: waitid succeeded and filled `info` (zeroed before, so fully initialised).
    let info = unsafe { info.assume_init() };
    // SAFETY: for SIGCHLD siginfo filled by waitid, `si_status` is the valid union member.
    let status = unsafe { info.si_status() };
    Ok(ChildStatus {
        code: info.si_code,
        status,
    })
}

/// `poll(2)` on fds for readability; returns which ones are ready (readable, hung up or in
/// error). `timeout_ms < 0` blocks.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pfds` is a live array of `pfds.len()` pollfd structs.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        match check(rc) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// `getppid(2)`.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid has no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::getppid() }
}

/// Whether the read end of the pipe whose write end is `fd` is closed everywhere (`poll`
/// reports `POLLERR` on a pipe's write end without readers). Does not block.
pub fn pipe_reader_gone(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one live pollfd struct, and nfds is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        match check(rc) {
            Ok(_) => return Ok(pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// CPU time (user + system, microseconds) of reaped children.
pub fn children_cpu_usec() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a writable rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded and filled `usage` (zeroed before).
    let u = unsafe { usage.assume_init() };
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    us(u.ru_utime) + us(u.ru_stime)
}

/// `setrlimit(2)` with soft = hard = `value` (`u64::MAX` = unlimited).
pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit struct for the duration of the call.
    check(unsafe { libc::setrlimit(resource, &raw const lim) }).map(drop)
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded; both fds are new, open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A path as a C string.
pub fn cstring(path: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// `getrlimit(2)`; leaves `lim` untouched on failure.
pub fn getrlimit(resource: libc::__rlimit_resource_t, lim: &mut libc::rlimit) {
    // SAFETY: `lim` is a valid, writable rlimit struct.
    unsafe { libc::getrlimit(resource, lim) };
}

/// Closes a raw fd this process owns but holds in no Rust object (the launcher's copy of
/// the IPC fd 3, placed there by the supervisor's `pre_exec`).
pub fn close_raw(fd: RawFd) {
    // SAFETY: the caller guarantees no Rust object owns `fd`, so closing it cannot cause a
    // double close or a use after close.
    unsafe { libc::close(fd) };
}

/// Checks that `fd` is open and a socket.
pub fn check_socket(fd: RawFd) -> io::Result<()> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a writable stat struct; an invalid fd yields EBADF.
    check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled `st` (zeroed before).
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & libc::S_IFMT == libc::S_IFSOCK {
        Ok(())
    } else {
        Err(io::Error::other("not a socket"))
    }
}
