//! The control plane end to end: the API in-process (the real router, store and jailed
//! workers, driven with `tower::ServiceExt::oneshot`) for the authorization matrix, bad input,
//! admission and the OpenAPI document; and the real `palisade serve` process for crash
//! safety, graceful shutdown, telemetry, metrics, the CLI as a client and the quickstart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup: a failure should stop the test loudly"
)]

mod authz;
mod bad_input;
mod cli;
mod crash;
mod egress;
mod hardening;
mod lifecycle;
mod openapi;
mod state;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use palisade_server::{AppState, Isolation, ServerConfig, WorkerProgram};
use serde_json::Value;
use tower::ServiceExt;

pub const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");

/// A fixture's manifest text and component, with the version replaced.
pub fn fixture(relative: &str, version: &str) -> (String, Vec<u8>) {
    let dir = palisade_testkit::guest_dir(relative);
    let text = std::fs::read_to_string(dir.join("palisade.toml")).unwrap();
    let manifest = palisade_model::Manifest::parse(&text).unwrap();
    let wasm = std::fs::read(dir.join(&manifest.component.path)).unwrap();
    let text = text.replacen(
        &format!("version = \"{}\"", manifest.extension.version),
        &format!("version = \"{version}\""),
        1,
    );
    (text, wasm)
}

pub fn publish_body(manifest: &str, wasm: &[u8]) -> Value {
    use base64::Engine as _;
    use sha2::Digest as _;
    serde_json::json!({
        "manifest": manifest,
        "component_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
        "sha256": hex::encode(sha2::Sha256::digest(wasm)),
    })
}

/// The server's state and router in this process, on a fresh data directory, with workers
/// in real jails (the `palisade` binary as worker and launcher).
#[derive(Debug)]
pub struct InProcess {
    pub app: Router,
    pub state: Arc<AppState>,
    pub admin: String,
    pub dir: tempfile::TempDir,
    counter: AtomicU64,
}

pub fn config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(dir.to_owned(), "127.0.0.1:0".parse().unwrap());
    config.isolation = Isolation::Jailed {
        allow_degraded: false,
    };
    config.worker = WorkerProgram {
        program: PALISADE.into(),
        worker_args: vec!["__worker".into()],
        launcher_args: vec!["__jail-launcher".into()],
    };
    config
}

/// A response: status, headers and the body as JSON (or as a JSON string when it is not
/// JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn kind(&self) -> &str {
        self.json["error"]["kind"].as_str().unwrap_or("")
    }
}

impl InProcess {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        adjust(&mut config);
        let (state, admin) = palisade_server::build_state(&config).await.unwrap();
        Self {
            app: palisade_server::routes::router(Arc::clone(&state)),
            state,
            admin: admin.unwrap(),
            dir,
            counter: AtomicU64::new(0),
        }
    }

    /// A number never handed out before (for fresh versions and names).
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub async fn raw(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Answer {
            status,
            headers,
            json,
            bytes,
        }
    }

    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.raw(request.unwrap()).await
    }

    /// As the platform administrator; panics unless the status is 2xx.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let answer = self
            .call(Some(&self.admin), method.clone(), path, body)
            .await;
        assert!(
            answer.status.is_success(),
            "{method} {path} as admin: {} {}",
            answer.status,
            answer.json
        );
        answer.json
    }

    pub async fn token(&self, role: &str, tenant: Option<&str>) -> String {
        let created = self
            .admin(
                Method::POST,
                "/v1/tokens",
                Some(serde_json::json!({
                    "name": format!("{role}-{}", self.next()),
                    "role": role,
                    "tenant": tenant,
                })),
            )
            .await;
        created["token"].as_str().unwrap().to_owned()
    }

    /// Publishes `relative` as `version` for `tenant` (as admin) and returns the answer.
    pub async fn publish(&self, tenant: &str, relative: &str, version: &str) -> Value {
        let (manifest, wasm) = fixture(relative, version);
        let name = palisade_model::Manifest::parse(&manifest)
            .unwrap()
            .extension
            .name
            .to_string();
        self.admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions"),
            Some(publish_body(&manifest, &wasm)),
        )
        .await
    }

    /// Publishes, approves and deploys.
    pub async fn ship(&self, tenant: &str, relative: &str, version: &str) {
        let published = self.publish(tenant, relative, version).await;
        let name = published["name"].as_str().unwrap().to_owned();
        self.admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/extensions/{name}/versions/{version}:approve"),
            None,
        )
        .await;
        self.admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/extensions/{name}/deployments"),
            Some(serde_json::json!({ "version": version })),
        )
        .await;
    }

    pub async fn invoke(&self, token: &str, tenant: &str, name: &str, input: &[u8]) -> Answer {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/tenants/{tenant}/extensions/{name}:invoke"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "text/plain")
            .body(Body::from(input.to_vec()))
            .unwrap();
        self.raw(request).await
    }

    pub async fn audit_len(&self) -> usize {
        self.state
            .store
            .audit_entries(0, 100_000)
            .await
            .unwrap()
            .len()
    }

    pub async fn shutdown(self) {
        self.state.host.shutdown().await;
        self.state.store.close().await;
    }
}

/// A `palisade serve` process on a data directory, its stderr collected.
#[derive(Debug)]
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(PALISADE);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, url) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("palisade is serving on ").nth(1)
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send(rest.trim().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = url
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", log.lock().unwrap()));
        Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn client(&self, token: &str) -> palisade_client::Client {
        palisade_client::Client::new(&self.url, token).unwrap()
    }

    pub fn logs(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().unwrap()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
