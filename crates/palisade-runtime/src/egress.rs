//! `wasi:http/outgoing-handler` without a network: the standard interface (served by
//! wasmtime-wasi-http, so standard guest HTTP libraries work unchanged) with the sending
//! replaced. Each request is collected (up to a cap) and handed to [`HostCalls::http`]: in a
//! worker that forwards it to the supervisor's egress gateway, which alone decides, resolves,
//! connects and counts. The worker never opens a socket (its jail has no network anyway).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use palisade_model::egress::{EgressError, EgressErrorKind, HttpRequest, MAX_REQUEST_BODY_BYTES};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::host_calls::HostCalls;

/// Sends every outgoing request through `host`.
pub(crate) struct EgressHooks {
    pub(crate) host: Arc<dyn HostCalls>,
}

/// An egress refusal as the guest's `wasi:http` error: the kind name and the reason in the
/// message, so a guest (and its logs) can tell a policy denial from a network failure.
fn http_error(error: EgressError) -> HttpError {
    match error.kind {
        EgressErrorKind::DnsError => HttpError::DnsError {
            rcode: Some(error.message),
            info_code: None,
        },
        EgressErrorKind::ConnectionFailed => HttpError::ConnectionRefused,
        EgressErrorKind::Timeout => HttpError::ConnectionTimeout,
        EgressErrorKind::TlsError => HttpError::TlsCertificateError,
        _ => HttpError::InternalError(Some(error.to_string())),
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let host = Arc::clone(&self.host);
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let body = Limited::new(body, MAX_REQUEST_BODY_BYTES)
                .collect()
                .await
                .map_err(|_| HttpError::HttpRequestBodySize(None))?
                .to_bytes();
            let headers = parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect();
            let timeout_ms = options.and_then(|o| {
                [o.connect_timeout, o.first_byte_timeout]
                    .into_iter()
                    .flatten()
                    .max()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            });
            let sent = HttpRequest {
                method: parts.method.as_str().to_owned(),
                url: parts.uri.to_string(),
                headers,
                body: body.to_vec(),
                timeout_ms,
            };
            let answer = host.http(sent).await.map_err(http_error)?;
            let mut response = http::Response::builder().status(answer.status);
            for (name, value) in answer.headers {
                response = response.header(name, value);
            }
            let body = Full::new(Bytes::from(answer.body))
                .map_err(|never| match never {})
                .boxed_unsync();
            let response = response.body(body).map_err(|e| {
                HttpError::InternalError(Some(format!("bad response from the gateway: {e}")))
            })?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}
