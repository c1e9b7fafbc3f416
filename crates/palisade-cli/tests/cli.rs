//! The `palisade` binary end to end: `run`, `test` and `new` against real guests, checking the
//! JSON shape, the exit status of each error class, and that bad input gets a clear error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test and benchmark setup: a failure should stop the run loudly"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use palisade_testkit::{guest_dir, guests_dir};

fn palisade(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // The command may refuse the input before reading it all.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn run_prints_the_documented_json_and_exits_zero() {
    let dir = guest_dir("examples/order-totals");
    let order = br#"{"currency":"EUR","items":[{"sku":"A","quantity":2,"unit_price_cents":1250}]}"#;
    let output = palisade(&["run", path(&dir), "--input", "-", "--json"], Some(order));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = json(&output);
    assert_eq!(json["outcome"], "ok");
    let totals: serde_json::Value = serde_json::from_str(json["output"].as_str().unwrap()).unwrap();
    assert_eq!(totals["total_cents"], 2500);
    assert!(json["usage"]["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(json["usage"]["wall_time_us"].is_u64());
    assert!(json["usage"]["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(json["logs"].is_array());
    assert_eq!(json["extension"]["name"], "order-totals");
}

#[test]
fn extension_failures_exit_one_with_their_kind() {
    for (fixture, kind) in [
        ("fixtures/infinite-loop", "fuel_exhausted"),
        ("fixtures/guest-error", "guest_error"),
        ("fixtures/memory-bomb", "memory_limit"),
    ] {
        let output = palisade(&["run", path(&guest_dir(fixture)), "--json"], None);
        assert_eq!(output.status.code(), Some(1), "{fixture}");
        let json = json(&output);
        assert_eq!(json["outcome"], "error");
        assert_eq!(json["error"]["kind"], kind, "{fixture}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[test]
fn load_failures_exit_three() {
    let output = palisade(
        &[
            "run",
            path(&guest_dir("fixtures/forbidden-import")),
            "--json",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(json(&output)["error"]["kind"], "import_not_allowed");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("palisade.toml"),
        "[extension]\nname = \"x\"\nversion = \"1.0.0\"\napi = \"palisade:extension@1.0.0\"\nfuel = 3\n[component]\npath = \"x.wasm\"\n",
    )
    .unwrap();
    let output = palisade(&["run", path(dir.path()), "--json"], None);
    assert_eq!(output.status.code(), Some(3));
    let json = json(&output);
    assert_eq!(json["error"]["kind"], "invalid_manifest");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 5") && message.contains("fuel"),
        "{message}"
    );

    let output = palisade(&["run", "/nonexistent/extension", "--json"], None);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(self::json(&output)["error"]["kind"], "invalid_manifest");
}

#[test]
fn oversized_input_exits_four_without_reading_it_all() {
    let dir = guest_dir("fixtures/echo");
    let big = vec![b'x'; 2 << 20];
    let output = palisade(&["run", path(&dir), "--input", "-", "--json"], Some(&big));
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(json(&output)["error"]["kind"], "input_too_large");
}

#[test]
fn binary_output_is_base64() {
    let output = palisade(
        &[
            "run",
            path(&guest_dir("fixtures/echo")),
            "--input",
            "-",
            "--json",
            "--content-type",
            "application/octet-stream",
        ],
        Some(&[0xff, 0x00, 0xfe]),
    );
    assert_eq!(output.status.code(), Some(0));
    let json = json(&output);
    assert_eq!(json["output_base64"], "/wD+");
    assert!(json.get("output").is_none());
}

#[test]
fn human_output_prints_the_body_and_the_error() {
    let output = palisade(
        &["run", path(&guest_dir("examples/greeter")), "--input", "-"],
        Some(b"Ada"),
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("Hi, Ada!"));
    let output = palisade(&["run", path(&guest_dir("fixtures/panic"))], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error: trap"));
}

#[test]
fn test_vectors_of_every_example_and_fixture_pass() {
    palisade_testkit::build_guests();
    for group in ["examples", "fixtures"] {
        for entry in std::fs::read_dir(guests_dir().join(group)).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.join("palisade.toml").exists() {
                continue;
            }
            let output = palisade(&["test", path(&dir), "--json"], None);
            let json = json(&output);
            assert_eq!(output.status.code(), Some(0), "{}: {json}", dir.display());
            assert_eq!(json["failed"], 0);
            assert!(
                json["passed"].as_u64().unwrap() >= 1,
                "{}: no vectors",
                dir.display()
            );
        }
    }
}

#[test]
fn failing_test_vectors_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let greeter = guest_dir("examples/greeter");
    let manifest = std::fs::read_to_string(greeter.join("palisade.toml")).unwrap();
    let component = greeter.join(
        palisade_model::Manifest::parse(&manifest)
            .unwrap()
            .component
            .path,
    );
    let manifest = format!(
        "[extension]\nname = \"greeter\"\nversion = \"1.0.0\"\napi = \"palisade:extension@1.0.0\"\n\
         [component]\npath = {:?}\n[[tests]]\nname = \"wrong on purpose\"\ninput = \"Ada\"\nexpect_output = \"Goodbye\"\n",
        component.canonicalize().unwrap()
    );
    std::fs::write(dir.path().join("palisade.toml"), manifest).unwrap();
    let output = palisade(&["test", path(dir.path())], None);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAIL  wrong on purpose"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn new_scaffolds_an_extension_that_builds_and_passes_its_tests() {
    palisade_testkit::build_guests();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("hello-ext");
    let output = palisade(&["new", "hello-ext", "--dir", path(&target)], None);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Command::new(cargo)
        .current_dir(&target)
        .args(["build", "--release", "--quiet"])
        // Exactly what an author runs: the extension's own target directory and lock file.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let output = palisade(&["test", path(&target)], None);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 passed, 0 failed"));

    let again = palisade(&["new", "hello-ext", "--dir", path(&target)], None);
    assert_ne!(again.status.code(), Some(0), "refuses to overwrite");
    let bad = palisade(&["new", "Bad_Name"], None);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn run_goes_through_a_jailed_worker_unless_told_otherwise() {
    let dir = guest_dir("fixtures/echo");
    let output = palisade(&["run", path(&dir), "--input", "-", "--json"], Some(b"x"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json(&output)["isolation"]["mode"], "jailed");

    let output = palisade(
        &["run", path(&dir), "--input", "-", "--json", "--no-jail"],
        Some(b"x"),
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(json(&output)["isolation"]["mode"], "in_process");
    assert!(String::from_utf8_lossy(&output.stderr).contains("WARNING: --no-jail"));
}

#[test]
fn doctor_lists_every_layer() {
    let output = palisade(&["doctor", "--json"], None);
    let json = json(&output);
    let names: Vec<&str> = json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for layer in [
        "user_ns",
        "pid_ns",
        "mount_ns",
        "net_ns",
        "cgroups",
        "seccomp",
        "landlock",
        "no_new_privs",
        "pooling_address_space",
    ] {
        assert!(names.contains(&layer), "{layer} missing from {names:?}");
    }
    let ready = json["strict_mode_ready"].as_bool().unwrap();
    assert_eq!(output.status.code(), Some(if ready { 0 } else { 1 }));
}

/// A one-line HTTP server on loopback: every request gets `200 hello`.
fn hello_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut head);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

#[test]
fn egress_sends_a_local_runs_requests_through_the_gateways_checks() {
    palisade_testkit::build_guests();
    let port = hello_server();
    let probe = guest_dir("fixtures/http-probe");
    let shipped = std::fs::read_to_string(probe.join("palisade.toml")).unwrap();
    let component = probe.join(
        palisade_model::Manifest::parse(&shipped)
            .unwrap()
            .component
            .path,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("palisade.toml"),
        format!(
            "[extension]\nname = \"http-probe\"\nversion = \"1.0.0\"\napi = \"palisade:extension@1.2.0\"\n\
             [component]\npath = {component:?}\n[capabilities]\nhttp = [\"http://127.0.0.1:*/*\"]\n\
             [limits]\nwall_time = \"10s\"\n"
        ),
    )
    .unwrap();
    let input = serde_json::json!({ "requests": [
        { "url": format!("http://127.0.0.1:{port}/ok") },
        { "url": format!("http://127.0.0.2:{port}/ok") },
    ] })
    .to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", path(dir.path()), "--input", "-", "--json"];
        args.extend_from_slice(extra);
        let output = palisade(&args, Some(input.as_bytes()));
        assert_eq!(output.status.code(), Some(0), "{}", json(&output));
        let results: serde_json::Value =
            serde_json::from_str(json(&output)["output"].as_str().unwrap()).unwrap();
        results
    };

    // Allowed: the manifest's destination, at an address the run lets through. Another
    // host is not in the manifest, although its address would be let through too.
    let results = run(&["--egress", "--egress-allow-private", "127.0.0.0/8"]);
    assert_eq!(results[0]["status"], 200, "{results}");
    assert_eq!(results[0]["body"], "hello");
    assert_eq!(results[1]["error"]["kind"], "egress_denied", "{results}");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the manifest does not request this destination"),
        "{results}"
    );
    // Without the private range, loopback is refused like on a server.
    let results = run(&["--egress"]);
    assert_eq!(results[0]["error"]["kind"], "egress_denied", "{results}");
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{results}"
    );
    // Without --egress there is no gateway at all.
    let results = run(&[]);
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs --egress"),
        "{results}"
    );
    let alone = palisade(
        &[
            "run",
            path(dir.path()),
            "--egress-allow-private",
            "127.0.0.1/32",
        ],
        None,
    );
    assert_eq!(
        alone.status.code(),
        Some(2),
        "--egress-allow-private needs --egress"
    );
}
