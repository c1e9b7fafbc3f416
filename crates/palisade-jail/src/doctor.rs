//! `doctor`: which layers this host supports, and why not.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroup;
use crate::config::{JailConfig, Layer};
use crate::sys;

/// One line of `palisade doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStatus {
    /// The layer (see [`Layer::name`]) or host check (`launcher`, `pooling_address_space`,
    /// `io_uring`).
    pub name: String,
    /// Whether it can be applied here.
    pub available: bool,
    /// What was found; when unavailable, why and how to enable it.
    pub detail: String,
}

fn status(name: &str, available: bool, detail: impl Into<String>) -> LayerStatus {
    LayerStatus {
        name: name.to_owned(),
        available,
        detail: detail.into(),
    }
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Checks each layer without creating anything (no namespaces, no cgroups), so it is safe to
/// call from a multithreaded process.
pub fn doctor() -> Vec<LayerStatus> {
    let mut out = Vec::new();
    let max_userns: u64 = read("/proc/sys/user/max_user_namespaces")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ns = |file: &str| Path::new("/proc/self/ns").join(file).exists();
    out.push(if ns("user") && max_userns > 0 {
        status(
            Layer::UserNs.name(),
            true,
            format!("user.max_user_namespaces = {max_userns}"),
        )
    } else {
        status(
            Layer::UserNs.name(),
            false,
            "user namespaces are off: set sysctl user.max_user_namespaces > 0 (kernel with CONFIG_USER_NS)",
        )
    });
    for (layer, file) in [
        (Layer::PidNs, "pid"),
        (Layer::MountNs, "mnt"),
        (Layer::NetNs, "net"),
        (Layer::IpcNs, "ipc"),
        (Layer::UtsNs, "uts"),
        (Layer::CgroupNs, "cgroup"),
    ] {
        out.push(if ns(file) {
            status(layer.name(), true, format!("/proc/self/ns/{file} present"))
        } else {
            status(
                layer.name(),
                false,
                format!(
                    "kernel without the {file} namespace (CONFIG_{}_NS)",
                    file.to_uppercase()
                ),
            )
        });
    }

    // cgroups: what Auto would pick.
    let v2 = cgroup::v2_root();
    let v2_ctrls = v2
        .as_deref()
        .map(cgroup::v2_controllers)
        .unwrap_or_default();
    let v1: Vec<&str> = ["memory", "cpu", "pids", "blkio"]
        .into_iter()
        .filter(|c| cgroup::v1_controller(c))
        .collect();
    let v2_text = match &v2 {
        Some(root) => format!(
            "v2 at {} with controllers [{}]",
            root.display(),
            v2_ctrls.join(" ")
        ),
        None => "no v2 hierarchy".to_owned(),
    };
    let v2_ok = ["memory", "cpu", "pids"]
        .iter()
        .all(|c| v2_ctrls.iter().any(|x| x == c));
    let v1_ok = ["memory", "cpu", "pids"].iter().all(|c| v1.contains(c));
    out.push(if v2_ok {
        status(
            Layer::Cgroups.name(),
            true,
            format!("using v2; {v2_text}; v1 controllers [{}]", v1.join(" ")),
        )
    } else if v1_ok {
        status(
            Layer::Cgroups.name(),
            true,
            format!("using v1 controllers [{}]; {v2_text}", v1.join(" ")),
        )
    } else {
        status(
            Layer::Cgroups.name(),
            false,
            format!(
                "need memory, cpu and pids on v2 or v1 ({v2_text}; v1 [{}]); boot with systemd.unified_cgroup_hierarchy=1, and run the supervisor as root",
                v1.join(" ")
            ),
        )
    });

    let sysctls_ok = ns("user") && ns("ipc") && max_userns > 0;
    out.push(status(
        Layer::Sysctls.name(),
        sysctls_ok,
        if sysctls_ok {
            "kernel.shmmni/msgmni/sem and user.max_user_namespaces are set to 0 inside each jail"
        } else {
            "needs user and IPC namespaces"
        },
    ));
    out.push(status(Layer::Setsid.name(), true, "always available"));
    out.push(status(Layer::Rlimits.name(), true, "always available"));
    out.push(status(
        Layer::CloseFds.name(),
        true,
        "close_range(2) (Linux >= 5.11)",
    ));
    out.push(status(
        Layer::NoNewPrivs.name(),
        true,
        "PR_SET_NO_NEW_PRIVS (Linux >= 3.5)",
    ));
    let abi = sys::landlock_abi();
    out.push(if abi >= crate::LANDLOCK_MIN_ABI {
        status(Layer::Landlock.name(), true, format!("Landlock ABI {abi}"))
    } else {
        status(
            Layer::Landlock.name(),
            false,
            format!(
                "Landlock ABI {abi}, need {}: Linux >= 6.12 with CONFIG_SECURITY_LANDLOCK=y and `landlock` in lsm=",
                crate::LANDLOCK_MIN_ABI
            ),
        )
    });
    let last_cap = read("/proc/sys/kernel/cap_last_cap").unwrap_or_else(|| "?".into());
    out.push(status(
        Layer::Capabilities.name(),
        true,
        format!("cap_last_cap = {last_cap}"),
    ));
    let actions = read("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let seccomp_ok = !crate::seccomp::stage1().is_empty() && actions.contains("errno");
    out.push(if seccomp_ok {
        status(
            Layer::Seccomp.name(),
            true,
            format!(
                "stage 1: {} BPF instructions; actions: {actions}",
                crate::seccomp::stage1().len()
            ),
        )
    } else {
        status(
            Layer::Seccomp.name(),
            false,
            "seccomp filters need CONFIG_SECCOMP_FILTER=y and an x86_64 build",
        )
    });

    // Host checks beyond the layers.
    out.push(
        match crate::find_launcher(&JailConfig::new("doctor", 1, 1)) {
            Ok(p) if p.is_file() => status("launcher", true, p.display().to_string()),
            Ok(p) => status("launcher", false, format!("{} does not exist", p.display())),
            Err(e) => status("launcher", false, e.to_string()),
        },
    );
    let map_count: u64 = read("/proc/sys/vm/max_map_count")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let overcommit = read("/proc/sys/vm/overcommit_memory").unwrap_or_else(|| "?".into());
    let mut as_limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let as_unlimited = rustix_free_getrlimit_as(&mut as_limit);
    let pooling_ok = map_count >= 65_530 && overcommit != "2" && as_unlimited;
    out.push(status(
        "pooling_address_space",
        pooling_ok,
        format!(
            "vm.max_map_count = {map_count} (>= 65530; raise for many pooled instances), vm.overcommit_memory = {overcommit} (must not be 2), RLIMIT_AS {} (must be unlimited)",
            if as_unlimited { "unlimited" } else { "limited" }
        ),
    ));
    let uring = read("/proc/sys/kernel/io_uring_disabled").unwrap_or_else(|| "?".into());
    out.push(status(
        "io_uring",
        true,
        format!(
            "kernel.io_uring_disabled = {uring} (seccomp denies io_uring in jails either way; 2 also protects the host)"
        ),
    ));
    out
}

fn rustix_free_getrlimit_as(lim: &mut libc::rlimit) -> bool {
    sys::getrlimit(libc::RLIMIT_AS, lim);
    lim.rlim_cur == libc::RLIM_INFINITY
}
