//! Palisade's language-level sandbox: runs an extension component in wasmtime with a fresh
//! instance per invocation and every limit enforced.
//!
//! ```no_run
//! # async fn demo(manifest: palisade_model::Manifest, wasm: Vec<u8>) {
//! use palisade_model::InvocationRequest;
//! use palisade_runtime::{Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default()).expect("engine");
//! let extension = runtime.load(&manifest, &wasm).expect("a valid extension");
//! let request = InvocationRequest { body: b"{}".to_vec(), content_type: "application/json".into(), metadata: vec![] };
//! let outcome = runtime.invoke(&extension, request, &extension.limits()).await;
//! println!("{}", outcome.to_json());
//! # }
//! ```
//!
//! What this layer enforces: fuel (instructions), a wall-clock deadline (epochs, plus a host
//! timeout around host calls), linear memory and tables (a resource limiter), wasm stack
//! depth, input, output and log sizes, and the import catalog. What it does not: anything
//! about the process it runs in. That is the confinement layer's job.

pub mod bounds;
pub mod cache;
pub mod capture;
pub mod catalog;
mod egress;
mod host;
pub mod host_calls;
mod runtime;

pub use cache::CacheSource;
pub use catalog::Catalog;
pub use host::{KvBudgetExhausted, MemoryLimitExceeded, TableLimitExceeded};
pub use host_calls::{HostCalls, NoHostCalls};
pub use runtime::{Extension, Runtime, RuntimeConfig, RuntimeError};
