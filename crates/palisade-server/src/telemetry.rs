//! Request and invocation ids, and the middleware that gives every request one: taken from
//! the caller's `X-Request-Id` when it is sane, minted otherwise, echoed in the response,
//! carried by every log line of the request (a tracing span), by error bodies, and down to the
//! worker and the guest with each invocation, so one call can be followed through every layer.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The response header carrying the invocation id of `:invoke`.
pub const INVOCATION_ID_HEADER: &str = "x-palisade-invocation-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, or `-` outside one.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

/// 128 random bits as 32 hex characters, with a prefix saying what it names.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Ids only need to be unique, not secret: fall back to the clock and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..].copy_from_slice(&count.to_be_bytes());
    }
    format!("{prefix}{}", hex::encode(bytes))
}

/// A caller's request id is kept when it is 1-128 characters of `[A-Za-z0-9._:-]`, so it can
/// go into logs and headers unescaped.
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Gives the request its id and span, logs its end (status, route, latency).
pub async fn request_context(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| new_id("req-"), str::to_owned);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, %method, %path);
    let started = Instant::now();
    let id = request_id.clone();
    let mut response = REQUEST_ID
        .scope(id, next.run(request))
        .instrument(span.clone())
        .await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        // Requests shed by admission are counted in /metrics; logging each one at `info` would
        // let a flooding tenant turn the log into the bottleneck.
        if status == 429 {
            tracing::debug!(status, latency_us, "request served");
        } else {
            tracing::info!(status, latency_us, "request served");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_kept() {
        assert!(acceptable("req-0123abc"));
        assert!(acceptable("7f3c:trace.1_a"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable("line\nbreak"));
        assert!(!acceptable(&"x".repeat(129)));
        let id = new_id("inv-");
        assert_eq!(id.len(), 36);
        assert_ne!(id, new_id("inv-"));
    }
}
