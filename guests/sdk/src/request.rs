//! One invocation's input, with helpers to read it as text or JSON.

use crate::{Error, bindings};

/// One invocation's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Raw input bytes, exactly as the caller sent them.
    pub body: Vec<u8>,
    /// Media type of `body`, for example `application/json`.
    pub content_type: String,
    /// Caller-supplied key/value pairs (for example a request id), in the caller's order.
    pub metadata: Vec<(String, String)>,
}

impl Request {
    /// The body as UTF-8 text; [`Error::InvalidInput`] when it is not valid UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        core::str::from_utf8(&self.body).map_err(|e| {
            Error::invalid_input(format!(
                "input is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ))
        })
    }

    /// The body parsed as JSON into `T`; [`Error::InvalidInput`] with serde's message when it
    /// does not parse or does not match `T`.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::invalid_input(format!("invalid JSON input: {e}")))
    }

    /// The value of the first metadata entry named `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl From<bindings::Request> for Request {
    fn from(req: bindings::Request) -> Self {
        Self {
            body: req.body,
            content_type: req.content_type,
            metadata: req.metadata,
        }
    }
}
