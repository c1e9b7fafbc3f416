//! Rust guest SDK for Palisade extensions (`palisade:extension@1.2.0`).
//!
//! An extension is a WebAssembly component that handles one request per invocation. With this
//! crate an author writes one function and registers it with [`extension!`]:
//!
//! ```no_run
//! use palisade_guest::{Error, Request, Response};
//!
//! fn handle(req: Request) -> Result<Response, Error> {
//!     let name = req.text()?.trim();
//!     if name.is_empty() {
//!         return Err(Error::invalid_input("expected a name"));
//!     }
//!     palisade_guest::log::info("greeting someone");
//!     Ok(Response::text(format!("Hello, {name}!")))
//! }
//!
//! palisade_guest::extension!(handle);
//! ```
//!
//! Build it as a component: give the crate `[lib] crate-type = ["cdylib"]` and run
//! `cargo build --release --target wasm32-wasip2`. The result is
//! `target/wasm32-wasip2/release/<crate_name>.wasm`.
//!
//! What an extension can use:
//!
//! - [`Request`]: the input bytes, their content type and caller metadata, with
//!   [`Request::text`], [`Request::json`] (feature `json`, on by default) and
//!   [`Request::metadata`].
//! - [`Response`]: [`Response::text`], [`Response::bytes`], [`Response::json`].
//! - [`Error`]: [`Error::InvalidInput`] when the input is not acceptable, [`Error::Failed`]
//!   otherwise. The host reports both as `guest_error`.
//! - [`log`]: `debug`, `info`, `warn` and `error` messages, captured per invocation.
//! - [`config`]: string values from the extension's manifest and deployment.
//! - [`kv`]: key-value state that outlives an invocation, in namespaces the manifest
//!   requests and the tenant's policy grants.
//! - [`http`]: outbound HTTP (`get`, `post`, `send`) through the host's egress gateway, to the
//!   destinations the manifest requests and the policy permits. Any library built on
//!   `wasi:http` works too.
//!
//! Every invocation runs in a fresh instance: statics start from their initial values each
//! time, and nothing survives between calls except what the extension puts in [`kv`]. The host limits instructions (fuel), wall time,
//! memory, output and log volume; a panic ends the invocation as a trap.

mod error;
mod request;
mod response;

pub mod config;
pub mod http;
pub mod kv;
pub mod log;

pub use error::Error;
pub use request::Request;
pub use response::Response;

/// Bindings generated from `wit/extension@1.2.0`. Used by [`extension!`]; not a stable API.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/extension@1.2.0",
        world: "palisade:extension/extension@1.2.0",
        // The export macro is used from the author's crate, not this one.
        pub_export_macro: true,
        export_macro_name: "__export_extension",
        default_bindings_module: "::palisade_guest::bindings",
    });
}

/// Support for [`extension!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    use crate::bindings;
    use crate::{Error, Request, Response};

    /// Runs the author's handler on a generated request and converts the result back.
    #[inline]
    pub fn dispatch<F>(
        handler: F,
        req: bindings::Request,
    ) -> Result<bindings::Response, bindings::ExtensionError>
    where
        F: FnOnce(Request) -> Result<Response, Error>,
    {
        handler(req.into()).map(Into::into).map_err(Into::into)
    }
}

/// Exports a handler function as the extension's `handle`.
///
/// The handler has the signature `fn(Request) -> Result<Response, Error>`; a closure with that
/// signature works too. Use the macro once, at the crate root or in any module, of a crate
/// built with `crate-type = ["cdylib"]`.
///
/// ```no_run
/// fn handle(req: palisade_guest::Request) -> Result<palisade_guest::Response, palisade_guest::Error> {
///     Ok(palisade_guest::Response::bytes(req.body, req.content_type))
/// }
/// palisade_guest::extension!(handle);
/// ```
#[macro_export]
macro_rules! extension {
    ($handler:expr $(,)?) => {
        const _: () = {
            struct __PalisadeExtension;

            impl $crate::bindings::Guest for __PalisadeExtension {
                fn handle(
                    req: $crate::bindings::Request,
                ) -> ::core::result::Result<
                    $crate::bindings::Response,
                    $crate::bindings::ExtensionError,
                > {
                    $crate::__private::dispatch($handler, req)
                }
            }

            $crate::bindings::__export_extension!(
                __PalisadeExtension with_types_in $crate::bindings
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &[u8]) -> Request {
        Request {
            body: body.to_vec(),
            content_type: "text/plain".into(),
            metadata: vec![("request-id".into(), "r1".into()), ("a".into(), "1".into())],
        }
    }

    #[test]
    fn text_checks_utf8() {
        assert_eq!(request("Zoë".as_bytes()).text(), Ok("Zoë"));
        assert!(matches!(
            request(b"ok\xff").text(),
            Err(Error::InvalidInput(m)) if m.contains("byte 2")
        ));
    }

    #[test]
    fn metadata_finds_first_match() {
        let req = request(b"");
        assert_eq!(req.metadata("request-id"), Some("r1"));
        assert_eq!(req.metadata("missing"), None);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip() {
        let value: Vec<u32> = request(b"[1, 2]").json().expect("valid JSON");
        assert_eq!(value, [1, 2]);
        assert!(matches!(
            request(b"[1,").json::<Vec<u32>>(),
            Err(Error::InvalidInput(m)) if m.starts_with("invalid JSON input: ")
        ));
        let response = Response::json(&value).expect("serialisable");
        assert_eq!(response.body, b"[1,2]");
        assert_eq!(response.content_type, "application/json");
    }

    #[test]
    fn constructors_and_conversions() {
        let text = Response::text("hi");
        assert_eq!(text.body, b"hi");
        assert_eq!(text.content_type, "text/plain; charset=utf-8");
        let wire: bindings::Response = Response::bytes(vec![1], "application/x").into();
        assert_eq!(
            (wire.body, wire.content_type.as_str()),
            (vec![1], "application/x")
        );

        let error = Error::invalid_input("bad");
        assert_eq!(error.to_string(), "invalid input: bad");
        assert_eq!(Error::failed("no").to_string(), "failed: no");
        assert!(matches!(
            bindings::ExtensionError::from(error),
            bindings::ExtensionError::InvalidInput(m) if m == "bad"
        ));
    }
}
