//! The seccomp filters compiled by `build.rs` from `seccomp/worker.json`, and how they are
//! installed.
//!
//! - `stage1`: the allowlist applied by the jail right before exec (mismatch: EPERM; a
//!   foreign architecture such as `int 0x80` kills the process).
//! - `clone3_enosys`: stacked after `stage1` so `clone3` fails with ENOSYS (the most recently
//!   installed filter's errno wins among equal actions) and glibc falls back to `clone(2)`,
//!   whose flags `stage1` can inspect.
//! - `stage2` + `stage2_enosys`: applied by the worker itself ([`crate::seccomp_stage2`])
//!   once wasmtime is initialised: no exec, no processes, no sockets (EPERM), and
//!   `memfd_create` fails with ENOSYS, which wasmtime treats as "no memfd support" and falls
//!   back from copy-on-write memory images instead of failing the module load.

use std::io;

use crate::error::JailError;

static STAGE1: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_stage1.bpf"));
static CLONE3_ENOSYS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_clone3_enosys.bpf"));
static STAGE2: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_stage2.bpf"));
static STAGE2_ENOSYS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_stage2_enosys.bpf"));

/// A decoded BPF program.
#[derive(Debug, Clone)]
pub struct Program(Vec<libc::sock_filter>);

impl Program {
    fn decode(bytes: &[u8]) -> Program {
        Program(
            bytes
                .chunks_exact(8)
                .map(|c| libc::sock_filter {
                    code: u16::from_le_bytes([c[0], c[1]]),
                    jt: c[2],
                    jf: c[3],
                    k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                })
                .collect(),
        )
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the program is empty (unsupported architecture).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Installs the filter on every thread of the calling process (TSYNC). Does not set
    /// `no_new_privs`: the caller must have it set or hold `CAP_SYS_ADMIN`.
    pub fn apply_all_threads(&self) -> Result<(), JailError> {
        if self.0.is_empty() {
            return Err(JailError::Seccomp(
                "no filter for this architecture (the policy is x86_64-only)".into(),
            ));
        }
        let len = u16::try_from(self.0.len())
            .map_err(|_| JailError::Seccomp("filter longer than 65535 instructions".into()))?;
        let prog = libc::sock_fprog {
            len,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.0`, a live, correctly sized array of `sock_filter`
        // for the duration of the call; the kernel copies the program and keeps no pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &raw const prog,
            )
        };
        if rc < 0 {
            Err(JailError::Seccomp(format!(
                "seccomp(SET_MODE_FILTER, TSYNC): {}",
                io::Error::last_os_error()
            )))
        } else if rc > 0 {
            Err(JailError::Seccomp(format!(
                "TSYNC failed: thread {rc} has a diverging filter"
            )))
        } else {
            Ok(())
        }
    }
}

/// The stage-1 allowlist.
pub fn stage1() -> Program {
    Program::decode(STAGE1)
}

/// The `clone3` → ENOSYS filter.
pub fn clone3_enosys() -> Program {
    Program::decode(CLONE3_ENOSYS)
}

/// The stage-2 denylist.
pub fn stage2() -> Program {
    Program::decode(STAGE2)
}

/// Applies stage 2 to every thread of the calling process. See [`crate::seccomp_stage2`].
pub fn apply_stage2() -> Result<(), JailError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| JailError::Seccomp(format!("prctl(PR_SET_NO_NEW_PRIVS): {e}")))?;
    stage2().apply_all_threads()?;
    Program::decode(STAGE2_ENOSYS).apply_all_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_compiles_to_nonempty_programs() {
        if cfg!(target_arch = "x86_64") {
            assert!(stage1().len() > 100);
            assert!(!clone3_enosys().is_empty());
            assert!(!stage2().is_empty());
        }
    }
}
