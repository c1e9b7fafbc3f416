//! Exit statuses of `palisade`, one per class of failure, so scripts can tell an extension
//! that failed from an invocation that was wrong.

use palisade_model::{ErrorClass, ErrorKind};

/// The extension ran and succeeded (or every test vector passed).
pub const OK: u8 = 0;
/// The extension ran and failed: a limit, a trap or its own error (or a test vector failed).
pub const EXTENSION_FAILED: u8 = 1;
/// The command line was wrong (clap's own status, reused for a bad `palisade new` name).
pub const USAGE: u8 = 2;
/// The extension could not be loaded: manifest, component or imports.
pub const LOAD_FAILED: u8 = 3;
/// The input was refused (too large, unreadable).
pub const BAD_INPUT: u8 = 4;
/// No capacity to run the invocation now.
pub const OVERLOADED: u8 = 5;
/// The server refused the request (invalid, not found, conflict).
pub const REFUSED: u8 = 6;
/// No usable token, or the token's role may not do this.
pub const DENIED: u8 = 77;
/// The server could not be reached.
pub const UNREACHABLE: u8 = 69;
/// Palisade itself failed.
pub const INTERNAL: u8 = 70;

pub fn for_kind(kind: ErrorKind) -> u8 {
    match kind.class() {
        ErrorClass::Extension => EXTENSION_FAILED,
        ErrorClass::Load => LOAD_FAILED,
        ErrorClass::Input => BAD_INPUT,
        ErrorClass::Capacity => OVERLOADED,
        ErrorClass::Internal => INTERNAL,
    }
}
