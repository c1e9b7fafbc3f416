//! Jail start-up cost: spawn p50/p99 with each layer added, cumulatively.
//!
//! Run (debug profile, like the tests): `cargo test -p palisade-jail --bench spawn`
//! (`PALISADE_BENCH_N=300` for more samples). Prints a Markdown table. Each sample is
//! `spawn` (launcher exec, clone3, every layer, exec of `palisade-jail-probe exit`) until
//! it returns ("ready"), and until the jail has exited, been reaped and its cgroup removed
//! ("round trip").
#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use palisade_jail::{JailConfig, Layer, Layers, readonly_paths_for, spawn};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_palisade-jail-probe"));
    let launcher = PathBuf::from(env!("CARGO_BIN_EXE_palisade-jail-launcher"));
    let n: usize = std::env::var("PALISADE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let none = Layers {
        user_ns: false,
        pid_ns: false,
        mount_ns: false,
        net_ns: false,
        ipc_ns: false,
        uts_ns: false,
        cgroup_ns: false,
        cgroups: false,
        rlimits: false,
        setsid: false,
        close_fds: false,
        no_new_privs: false,
        landlock: false,
        capabilities: false,
        sysctls: false,
        seccomp: false,
    };
    let steps: Vec<(&str, Vec<Layer>)> = vec![
        ("launcher + exec, no layers", vec![]),
        (
            "+ user, pid, ipc, uts, cgroup namespaces",
            vec![
                Layer::UserNs,
                Layer::PidNs,
                Layer::IpcNs,
                Layer::UtsNs,
                Layer::CgroupNs,
            ],
        ),
        (
            "+ mount ns: tmpfs root, 4 RO binds, pivot_root",
            vec![Layer::MountNs],
        ),
        ("+ in-jail sysctls", vec![Layer::Sysctls]),
        (
            "+ setsid, rlimits, close fds, no_new_privs, caps",
            vec![
                Layer::Setsid,
                Layer::Rlimits,
                Layer::CloseFds,
                Layer::NoNewPrivs,
                Layer::Capabilities,
            ],
        ),
        ("+ Landlock", vec![Layer::Landlock]),
        ("+ seccomp stage 1", vec![Layer::Seccomp]),
        ("+ cgroup (v1 memory, cpu, pids)", vec![Layer::Cgroups]),
        ("+ net ns (= full jail)", vec![Layer::NetNs]),
    ];
    let mut layers = none;
    println!("n = {n} per row\n");
    println!("| layers | ready p50 | ready p99 | round trip p50 | round trip p99 |");
    println!("|---|---|---|---|---|");
    for (label, add) in steps {
        for l in add {
            layers.set(l, true);
        }
        let mut config = JailConfig::new("bench", 190_000, 190_000);
        config.launcher = Some(launcher.clone());
        config.readonly_paths = match readonly_paths_for(&probe) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("ldd failed: {e}");
                return;
            }
        };
        config.layers = layers;
        let mut ready = Vec::with_capacity(n);
        let mut total = Vec::with_capacity(n);
        for i in 0..n + 10 {
            let Ok((_ours, theirs)) = UnixStream::pair() else {
                return;
            };
            let start = Instant::now();
            let jailed = match spawn(&config, &probe, &["exit".into()], theirs.into()) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("{label}: {e}");
                    return;
                }
            };
            let r = start.elapsed();
            let _ = jailed.wait();
            let t = start.elapsed();
            if i >= 10 {
                ready.push(r);
                total.push(t);
            }
        }
        ready.sort();
        total.sort();
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&ready, 0.5),
            percentile(&ready, 0.99),
            percentile(&total, 0.5),
            percentile(&total, 0.99)
        );
    }
}
