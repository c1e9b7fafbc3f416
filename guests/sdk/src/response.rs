//! One invocation's output, with constructors for text, bytes and JSON.

#[cfg(feature = "json")]
use crate::Error;
use crate::bindings;

/// One invocation's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Output bytes.
    pub body: Vec<u8>,
    /// Media type of `body`.
    pub content_type: String,
}

impl Response {
    /// Content type of [`Response::text`].
    pub const TEXT: &str = "text/plain; charset=utf-8";
    /// Content type of [`Response::json`].
    pub const JSON: &str = "application/json";

    /// A UTF-8 text response (`text/plain; charset=utf-8`).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            body: text.into().into_bytes(),
            content_type: Self::TEXT.to_owned(),
        }
    }

    /// A response of raw bytes with the given content type.
    pub fn bytes(body: Vec<u8>, content_type: impl Into<String>) -> Self {
        Self {
            body,
            content_type: content_type.into(),
        }
    }

    /// `value` serialised as JSON (`application/json`); [`Error::Failed`] when it cannot be
    /// serialised.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::failed(format!("cannot serialise the response as JSON: {e}")))?;
        Ok(Self::bytes(body, Self::JSON))
    }
}

impl From<Response> for bindings::Response {
    fn from(response: Response) -> Self {
        Self {
            body: response.body,
            content_type: response.content_type,
        }
    }
}
