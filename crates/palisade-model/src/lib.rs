//! Palisade's data model: extension manifests, limits, invocation outcomes and error kinds.
//!
//! This crate does no I/O. Everything here is plain data with strict parsing, shared by the
//! runtime, the CLI and (later) the server, so that an error kind or a limit means the same
//! thing in every layer.
//!
//! ```
//! use palisade_model::manifest::Manifest;
//!
//! let manifest = Manifest::parse(r#"
//! [extension]
//! name = "greeter"
//! version = "1.0.0"
//! api = "palisade:extension@1.0.0"
//!
//! [component]
//! path = "greeter.wasm"
//!
//! [limits]
//! wall_time = "250ms"
//! memory = "16 MiB"
//! "#).unwrap();
//! assert_eq!(manifest.extension.name.as_str(), "greeter");
//! ```

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod egress;
pub mod kv;
pub mod limits;
pub mod manifest;
pub mod outcome;
pub mod units;

pub use api::ApiPackage;
pub use limits::{Limits, RequestedLimits};
pub use manifest::{Manifest, ManifestError};
pub use outcome::{
    ErrorClass, ErrorKind, InvocationError, InvocationRequest, Isolation, IsolationMode, LogEntry,
    LogLevel, LogSource, Outcome, Output, Usage,
};
