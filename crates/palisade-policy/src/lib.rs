//! Palisade's policy engine: what an extension may do and with how much, as data that is
//! validated, versioned, diffed, enforced and explained.
//!
//! Three layers decide: the **platform baseline** (operator), the **tenant policy**
//! (operator, per tenant or plan) and the **manifest request** (author). Effective limits are
//! the minimum of all three; a capability is granted only if the manifest requests it and
//! every policy layer's Cedar policies allow it; a `forbid` in any layer denies; a policy that
//! cannot be evaluated denies.
//!
//! A policy document is TOML with a `[limits]` table and Cedar policies validated against
//! `schema/palisade.cedarschema`:
//!
//! ```
//! use palisade_policy::{Action, CallContext, PolicyDocument, PolicyEngine, Principal, Resource};
//!
//! let tenant = PolicyDocument::parse(r#"
//! format = 1
//! layer = "tenant"
//! tenant = "acme"
//!
//! [limits]
//! wall_time = "500ms"
//!
//! [cedar]
//! text = '''
//! @id("acme-logs")
//! permit (principal, action == Action::"log:write", resource);
//! '''
//! "#, None).unwrap();
//!
//! let mut engine = PolicyEngine::shipped().unwrap();
//! engine.install(tenant.compile().unwrap());
//!
//! let extension = Principal::parse("acme/order-totals@1.0.0").unwrap();
//! let logs = Resource::parse("log", &extension.tenant).unwrap();
//! let decision = engine.authorize(&extension, Action::LogWrite, &logs, &CallContext::now());
//! assert!(decision.allowed);
//!
//! let other = Resource::parse("log:globex", &extension.tenant).unwrap();
//! let decision = engine.authorize(&extension, Action::LogWrite, &other, &CallContext::now());
//! assert!(!decision.allowed);
//! assert_eq!(
//!     decision.reasons[0].policy.as_deref(),
//!     Some("baseline-forbid-cross-tenant-logs")
//! );
//! ```
//!
//! On the hot path, `PolicyEngine::prepare` precomputes a deployment's decisions that do not
//! depend on the call; `PreparedDeployment::authorize` answers those from a table.

#![forbid(unsafe_code)]

pub mod deployment;
pub mod diff;
pub mod document;
pub mod engine;
pub mod error;
pub mod limits;
pub mod request;
pub mod store;

pub use deployment::{Deployment, DeploymentImpact, PreparedDeployment, dry_run};
pub use diff::LayerDiff;
pub use document::{
    CaRule, ClientCertRule, CredentialRule, EgressRules, PolicyDocument, Scope, TokenRule,
    parse_cidr,
};
pub use engine::{CompiledLayer, Decision, PolicyEngine, Reason, ReasonKind};
pub use error::{Location, PolicyError, RequestError, StoreError};
pub use limits::{EffectiveLimits, LimitKey, LimitSet};
pub use request::{Action, CallContext, Host, Principal, Resource, TenantId};
pub use store::{ChangeMeta, DirStore, PolicyStore, VersionRecord};

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2025-06-01T12:00:00Z` for a Unix time, for people reading history.
pub fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_format_as_utc() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_time(1_748_779_200), "2025-06-01T12:00:00Z");
        assert_eq!(super::format_time(951_782_400), "2000-02-29T00:00:00Z");
    }
}
