//! What the host tells the outside about invocations as they happen: metrics today, baselines
//! and automatic containment next. One observer per host; every method has a default that
//! does nothing, so an observer implements only what it watches.

use palisade_model::Outcome;

/// An observer of invocations and of their host calls.
pub trait InvocationEvents: Send + Sync + std::fmt::Debug {
    /// An invocation finished (successfully or not) after `seconds` in the executor.
    fn invocation(
        &self,
        _tenant: &str,
        _extension: &str,
        _version: &str,
        _outcome: &Outcome,
        _seconds: f64,
    ) {
    }

    /// One outbound HTTP request finished: `outcome` is `ok` or the egress error kind.
    fn egress(&self, _tenant: &str, _outcome: &str, _sent: u64, _received: u64) {}

    /// A call was refused before it ran (`rate`, `concurrency`, `overloaded`, `suspended`).
    fn rejected(&self, _tenant: &str, _reason: &str) {}
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl InvocationEvents for NoEvents {}
