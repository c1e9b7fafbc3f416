//! `palisade policy` end to end (validate, diff, apply, history, revert, explain with their
//! JSON and exit statuses) and `--policy FILE` on `run` and `test`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup: a failure should stop the run loudly"
)]

use std::path::Path;
use std::process::{Command, Output};

use palisade_testkit::guest_dir;

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env_remove("PALISADE_POLICY_STORE")
        .output()
        .unwrap()
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

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const ACME: &str = r#"format = 1
layer = "tenant"
tenant = "acme"
description = "Acme, standard plan"

[limits]
fuel = 50_000_000
wall_time = "500ms"

[cedar]
text = '''
@id("acme-logs-and-config")
permit (principal, action in [Action::"log:write", Action::"config:read"], resource);
'''
"#;

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ext = dir.path().join("ext");
        std::fs::create_dir(&ext).unwrap();
        std::fs::write(
            ext.join("palisade.toml"),
            "[extension]\nname = \"order-totals\"\nversion = \"1.0.0\"\napi = \"palisade:extension@1.0.0\"\n[component]\npath = \"x.wasm\"\n",
        )
        .unwrap();
        Self { dir }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file.to_str().unwrap().to_owned()
    }

    fn store(&self) -> String {
        self.dir.path().join("store").to_str().unwrap().to_owned()
    }

    fn deployed(&self) -> String {
        format!("acme={}", self.dir.path().join("ext").display())
    }

    fn run(&self, args: &[&str]) -> Output {
        let store = self.store();
        let mut all = vec!["policy"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--store", &store]);
        palisade(&all)
    }
}

#[test]
fn validate_reports_valid_policies_and_their_impact() {
    let ws = Workspace::new();
    let file = ws.write("acme.toml", ACME);
    let output = ws.run(&["validate", &file, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json(&output);
    assert_eq!(report["valid"], true);
    assert_eq!(report["scope"], "tenant:acme");
    assert_eq!(report["policies"][0], "acme-logs-and-config");
    assert_eq!(report["limits"]["fuel"], 50_000_000);

    // Dry run: acme has no policy yet, so this one newly allows its extension's logs.
    let deployed = ws.deployed();
    let output = ws.run(&["validate", &file, "--deployed", &deployed, "--json"]);
    let json = json(&output);
    let impact = &json["impact"][0];
    assert_eq!(impact["extension"], "acme/order-totals@1.0.0");
    assert_eq!(impact["newly_allowed"][0]["action"], "log:write");
    assert_eq!(impact["limits"][0]["limit"], "fuel");

    let output = ws.run(&["validate", &file, "--deployed", &deployed]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("valid tenant:acme policy"), "{text}");
    assert!(
        text.contains("newly allowed log:write LogStream::\"acme\""),
        "{text}"
    );
}

#[test]
fn invalid_policies_exit_three_with_the_kind_and_place() {
    let ws = Workspace::new();
    for (text, kind, line) in [
        (
            ACME.replace("fuel = 50_000_000", "fuel = 0"),
            "invalid_limit",
            7,
        ),
        (ACME.replace("wall_time", "walltime"), "syntax", 8),
        (
            ACME.replace("resource);", "resource) when { resource.colour == 1 };"),
            "schema_violation",
            2,
        ),
        (ACME.to_owned(), "ok", 0),
    ] {
        let file = ws.write("bad.toml", &text);
        let output = ws.run(&["validate", &file, "--json"]);
        if kind == "ok" {
            assert_eq!(output.status.code(), Some(0));
            continue;
        }
        assert_eq!(output.status.code(), Some(3), "{kind}");
        let report = json(&output);
        assert_eq!(report["valid"], false);
        assert_eq!(report["error"]["kind"], kind);
        assert_eq!(report["error"]["line"], line, "{report}");
        let output = ws.run(&["validate", &file]);
        assert_eq!(output.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("line {line}")));
    }
    let output = ws.run(&["validate", "/nonexistent.toml", "--json"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(json(&output)["error"]["kind"], "unreadable");
}

#[test]
fn apply_history_diff_revert_and_explain_work_on_the_store() {
    let ws = Workspace::new();
    let v1 = ws.write("v1.toml", ACME);
    let output = ws.run(&[
        "apply",
        &v1,
        "--reason",
        "onboard acme",
        "--author",
        "ada",
        "--json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json1 = json(&output);
    assert_eq!(json1["applied"], true);
    assert_eq!(json1["version"], 1);

    let output = ws.run(&["apply", &v1, "--reason", "again", "--json"]);
    assert_eq!(json(&output)["unchanged"], true);

    let v2 = ws.write(
        "v2.toml",
        &ACME.replace("fuel = 50_000_000", "fuel = 20_000_000"),
    );
    let output = ws.run(&["diff", &v2, "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let diff = json(&output);
    assert_eq!(diff["against"], "tenant:acme version 1");
    assert_eq!(
        diff["text"],
        "limits.fuel: 50000000 -> 20000000 (tightened)\n"
    );
    let output = ws.run(&["diff", &v2, &v1]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("limits.fuel: 50000000 -> 20000000"));

    let deployed = ws.deployed();
    let output = ws.run(&[
        "apply",
        &v2,
        "--reason",
        "cheaper plan",
        "--author",
        "bob",
        "--deployed",
        &deployed,
        "--json",
    ]);
    let json2 = json(&output);
    assert_eq!(json2["version"], 2);
    assert_eq!(
        json2["impact"][0]["limits"][0]["text"],
        "50000000 -> 20000000"
    );

    let output = ws.run(&["history", "tenant:acme", "--json"]);
    let history = json(&output);
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["author"], "ada");
    assert_eq!(versions[1]["reason"], "cheaper plan");
    assert!(versions[1]["time"].as_i64().unwrap() > 1_700_000_000);
    let output = ws.run(&["history", "tenant:acme"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("version 2") && text.contains("bob") && text.contains("cheaper plan"),
        "{text}"
    );

    let output = ws.run(&[
        "revert",
        "tenant:acme",
        "--to",
        "1",
        "--reason",
        "mistake",
        "--json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json(&output)["version"], 3);
    let output = ws.run(&[
        "revert",
        "tenant:acme",
        "--to",
        "7",
        "--reason",
        "x",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(json(&output)["error"]["kind"], "no_such_version");
    let audit = std::fs::read_to_string(Path::new(&ws.store()).join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 3);

    // Explain against the store.
    let output = ws.run(&[
        "explain",
        "acme/order-totals@1.0.0",
        "log:write",
        "log",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let explain = json(&output);
    assert_eq!(explain["allowed"], true);
    assert_eq!(explain["reasons"][1]["policy"], "acme-logs-and-config");
    let output = ws.run(&[
        "explain",
        "acme/order-totals",
        "kv:read",
        "kv:globex/orders",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let explain = json(&output);
    assert_eq!(explain["allowed"], false);
    assert_eq!(
        explain["reasons"][0]["policy"],
        "baseline-forbid-cross-tenant-kv"
    );
    let output = ws.run(&[
        "explain",
        "acme/order-totals",
        "http:request",
        "https://example.com/",
        "--ip",
        "10.0.0.1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with("DENY http:request by acme/order-totals@0.0.0"),
        "{text}"
    );
    assert!(text.contains("baseline-forbid-private-addresses"), "{text}");
    // With the manifest: API v1 does not request kv.
    let manifest = ws.dir.path().join("ext");
    let output = ws.run(&[
        "explain",
        "acme/order-totals",
        "kv:read",
        "kv:orders",
        "--manifest",
        path(&manifest),
        "--json",
    ]);
    assert_eq!(json(&output)["reasons"][0]["effect"], "not_requested");
    // Before any version existed, acme had no policy.
    let output = ws.run(&[
        "explain",
        "acme/x",
        "log:write",
        "log",
        "--at",
        "1000",
        "--json",
    ]);
    assert_eq!(json(&output)["reasons"][0]["effect"], "no_policy");
    // Bad arguments are usage errors.
    assert_eq!(
        ws.run(&["explain", "acme", "log:write", "log"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ws.run(&["explain", "acme/x", "fs:write", "log"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ws.run(&["explain", "acme/x", "kv:read", "bucket:x"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ws.run(&["apply", &v1, "--reason", " "]).status.code(),
        Some(2)
    );
}

#[test]
fn run_and_test_apply_the_policy_files_limits() {
    let ws = Workspace::new();
    let dir = guest_dir("examples/order-totals");
    let order = ws.write(
        "order.json",
        r#"{"currency":"EUR","items":[{"sku":"A","quantity":2,"unit_price_cents":1250}]}"#,
    );
    let generous = ws.write("generous.toml", ACME);
    let output = palisade(&[
        "run",
        path(&dir),
        "--input",
        &order,
        "--policy",
        &generous,
        "--json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let starved = ws.write(
        "starved.toml",
        &ACME.replace("fuel = 50_000_000", "fuel = 1_000"),
    );
    let output = palisade(&[
        "run",
        path(&dir),
        "--input",
        &order,
        "--policy",
        &starved,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["error"]["kind"], "fuel_exhausted");

    let tiny_input = ws.write(
        "tiny.toml",
        &ACME.replace("wall_time = \"500ms\"", "input = 8"),
    );
    let output = palisade(&[
        "run",
        path(&dir),
        "--input",
        &order,
        "--policy",
        &tiny_input,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(json(&output)["error"]["kind"], "input_too_large");

    let output = palisade(&["test", path(&dir), "--policy", &generous, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = palisade(&["test", path(&dir), "--policy", &starved, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(json(&output)["failed"].as_u64().unwrap() > 0);

    let broken = ws.write(
        "broken.toml",
        &ACME.replace("fuel = 50_000_000", "fuel = 0"),
    );
    let output = palisade(&["run", path(&dir), "--policy", &broken]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("limits.fuel"));
}
