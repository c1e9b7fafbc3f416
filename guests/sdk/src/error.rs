//! The error an extension returns: invalid input, or a failure of its own.

use core::fmt;

use crate::bindings;

/// An error returned by an extension's handler. The host reports it as `guest_error`, with
/// the kind and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input was not acceptable; the caller should not retry it unchanged.
    InvalidInput(String),
    /// The extension failed for another reason.
    Failed(String),
}

impl Error {
    /// An [`Error::InvalidInput`] with this message.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// An [`Error::Failed`] with this message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(message) | Self::Failed(message) => message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(message) => write!(f, "invalid input: {message}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for bindings::ExtensionError {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(message) => Self::InvalidInput(message),
            Error::Failed(message) => Self::Failed(message),
        }
    }
}
