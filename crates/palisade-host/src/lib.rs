//! Palisade's core: the one path from "invoke this deployment with this input" to an
//! [`Outcome`](palisade_model::Outcome), shared by every front end. The HTTP server, `palisade
//! run`/`test` and a Rust service embedding Palisade all do the same three things:
//!
//! 1. make an [`Executor`]: jailed per-tenant workers (the default), plain workers, or in
//!    this process (tests and debugging);
//! 2. plan a deployment under a policy engine ([`DeploymentPlan::new`]): its limits, key-value
//!    quotas and grants, admission quota, outbound destinations and egress rules, all from the
//!    effective policy (the shipped baseline if nothing else is installed);
//! 3. call [`Host::invoke`] with the plan and the input. The host answers the guest's host
//!    calls from its [`Services`] (key-value over a [`KvBackend`]: the encrypted store or
//!    memory; outbound HTTP over the egress gateway; secrets) and reports every invocation to
//!    its [`InvocationEvents`] observer.
//!
//! Embedding, in process, with the shipped baseline and in-memory key-value state:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use palisade_host::{DeploymentPlan, Executor, Host, MemoryKv, NoEvents, NoSecrets, Services};
//! use palisade_model::InvocationRequest;
//! use palisade_policy::{PolicyEngine, TenantId};
//! use palisade_worker::ExtensionSource;
//!
//! # let dir = palisade_testkit::guest_dir("examples/order-totals");
//! let manifest_text = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
//! let manifest = palisade_model::Manifest::parse(&manifest_text).unwrap();
//! let wasm = std::fs::read(dir.join(&manifest.component.path)).unwrap();
//!
//! // Jailed workers in production: `Executor::new(&Isolation::Jailed { .. }, ..)`.
//! let executor = Executor::in_process(Default::default()).unwrap();
//! let host = Host::new(Arc::new(executor), Services {
//!     kv: Arc::new(MemoryKv::default()),
//!     secrets: Arc::new(NoSecrets),
//!     egress: None,
//!     egress_off: "outbound HTTP is off in this example",
//!     events: Arc::new(NoEvents),
//! });
//! let engine = Arc::new(PolicyEngine::shipped().unwrap());
//! let plan = DeploymentPlan::new(
//!     &engine,
//!     TenantId::new("acme").unwrap(),
//!     manifest,
//!     ExtensionSource::new(manifest_text, wasm),
//! );
//! let input = br#"{"currency":"EUR","items":[{"sku":"a","quantity":2,"unit_price_cents":150}]}"#;
//! let outcome = host
//!     .invoke(&plan, "inv-1", InvocationRequest {
//!         body: input.to_vec(),
//!         content_type: "application/json".into(),
//!         metadata: vec![],
//!     })
//!     .await;
//! assert!(outcome.result.is_ok(), "{}", outcome.to_json());
//! # }
//! ```
//!
//! What this crate does not do yet (it is the seam they land in): admission and resolution
//! caches still live in the server's state, publishing's rules in its route.

#![forbid(unsafe_code)]

pub mod admission;
mod calls;
pub mod events;
pub mod executor;
mod host;
pub mod http;
pub mod kv;
pub mod plan;

pub use admission::{Admission, AdmissionConfig, Refused, Rejection, TenantQuota};
pub use events::{InvocationEvents, NoEvents};
pub use executor::{Executor, ExecutorError, Isolation, WorkerProgram};
pub use host::{EgressDecisions, EgressService, Host, Services, quota_deadline};
pub use http::{NoSecrets, SecretBackend};
pub use kv::{KvBackend, MemoryKv};
pub use plan::{DeploymentPlan, EgressSetup};
