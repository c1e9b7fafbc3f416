//! Configuration values from the extension's manifest and deployment.

/// The value configured for `key`, or `None` when it is not configured.
///
/// Values come from the `[config]` table of the extension's manifest and from its deployment,
/// never from the host's environment.
pub fn get(key: &str) -> Option<String> {
    crate::bindings::palisade::extension::config::get(key)
}
