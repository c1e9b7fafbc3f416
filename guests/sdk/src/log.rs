//! Structured logs, captured by the host per invocation (volume is limited by policy).

use crate::bindings::palisade::extension::log::{Level, write};

/// Logs `message` at debug level.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Logs `message` at error level.
pub fn error(message: &str) {
    write(Level::Error, message);
}
