//! Outbound HTTP (API 1.2) through the host's egress gateway, on the standard
//! `wasi:http/outgoing-handler`: a blocking `send` and `get`/`post` helpers. The manifest must
//! request each destination (`[capabilities] http = ["https://api.example.com/*"]`) and the
//! policy must permit it; the gateway resolves names, refuses private addresses, adds the
//! credentials the policy names (the extension never sees them) and counts the bytes.
//!
//! ```no_run
//! # fn demo() -> Result<(), palisade_guest::http::Error> {
//! let rates = palisade_guest::http::get("https://api.example.com/v1/rates")?;
//! assert_eq!(rates.status, 200);
//! let text = String::from_utf8_lossy(&rates.body);
//! # let _ = text; Ok(()) }
//! ```

use core::fmt;

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// A response: status, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The gateway refused it: not requested by the manifest, not permitted by the policy,
    /// or a private destination (`egress_denied`).
    Denied(String),
    /// A quota is used up: the invocation's requests or bytes, the tenant's bandwidth or
    /// connections (`egress_quota_exceeded`).
    QuotaExceeded(String),
    /// The URL or request is not acceptable.
    InvalidRequest(String),
    /// The network or the destination failed (DNS, connection, TLS, timeout, response).
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "egress denied: {m}"),
            Self::QuotaExceeded(m) => write!(f, "egress quota exceeded: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Failed(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Error {
    fn from(error: Error) -> Self {
        crate::Error::Failed(error.to_string())
    }
}

fn from_code(code: wasi::http::types::ErrorCode) -> Error {
    use wasi::http::types::ErrorCode;
    match code {
        ErrorCode::InternalError(Some(text)) => {
            if let Some(reason) = text.strip_prefix("egress_denied: ") {
                Error::Denied(reason.to_owned())
            } else if let Some(reason) = text.strip_prefix("egress_quota_exceeded: ") {
                Error::QuotaExceeded(reason.to_owned())
            } else if let Some(reason) = text.strip_prefix("egress_invalid_request: ") {
                Error::InvalidRequest(reason.to_owned())
            } else {
                Error::Failed(text)
            }
        }
        other => Error::Failed(format!("{other:?}")),
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    send("GET", url, &[], &[])
}

/// `POST url` with `body` of media type `content_type`.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<Response, Error> {
    send(
        "POST",
        url,
        &[("content-type", content_type.as_bytes())],
        body,
    )
}

/// Any request. Blocks until the whole response is read.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<Response, Error> {
    let invalid = |m: String| Error::InvalidRequest(m);
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(format!("`{url}` is not an absolute URL")))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value)
            .map_err(|e| invalid(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_owned()),
    };
    request
        .set_method(&method)
        .map_err(|()| invalid("bad method".into()))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("bad scheme".into()))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid(format!("bad authority `{authority}`")))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid(format!("bad path `{path}`")))?;
    let outgoing = request.body().map_err(|()| invalid("no body".into()))?;
    // Send first, then stream the body: the host drains the body only once the request is
    // handed to it, so writing more than its buffer before `handle` blocks forever.
    let future = outgoing_handler::handle(request, None).map_err(from_code)?;
    {
        let stream = outgoing
            .write()
            .map_err(|()| invalid("no body stream".into()))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error::Failed(format!("writing the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(from_code)?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(from_code(code)),
        Some(Err(())) | None => return Err(Error::Failed("the response was lost".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| Error::Failed("no response body".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| Error::Failed("no response stream".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Failed(format!(
                    "reading the response: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
