//! Per-tenant worker processes: the supervisor ⇄ worker protocol, the worker's serve loop
//! (which runs the wasm runtime) and the supervisor's pool (start, evict, deadline, crash).
//!
//! Guest code never runs in the supervisor. Each tenant's invocations run in that tenant's
//! worker process, started through a [`launch::Launcher`]: confined by the jail in production,
//! a plain child process only when isolation is switched off for debugging.

pub mod jailed;
pub mod launch;
pub mod protocol;
pub mod supervisor;
pub mod worker;

pub use jailed::JailLauncher;
pub use launch::{Launcher, PlainLauncher, WorkerCommand, WorkerLimitTable, WorkerLimits};
pub use supervisor::{ExtensionSource, PoolSnapshot, Supervisor, SupervisorConfig};
pub use worker::{WorkerOptions, worker_main};
