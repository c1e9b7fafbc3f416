//! The `palisade` CLI as a client of a running server: the whole flow from tenant to
//! rollback, audit verification (which names the first bad entry after tampering), clear
//! errors with their own exit statuses for an unreachable server, a bad token and a wrong
//! tenant, the quickstart, and the policy commands on the server's layers.

use std::path::Path;
use std::process::{Command, Output};

use crate::{PALISADE, ServerProcess};

fn palisade(server: Option<&ServerProcess>, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(PALISADE);
    command
        .args(args)
        .env_remove("PALISADE_TOKEN")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    if let Some(server) = server {
        command.env("PALISADE_SERVER", &server.url);
    }
    if let Some(token) = token {
        command.env("PALISADE_TOKEN", token);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_cli_drives_a_server_from_tenant_to_rollback() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let admin = server.admin_token();
    let s = Some(&server);
    let a = Some(admin.as_str());

    ok(palisade(s, a, &["tenant", "create", "acme"]));
    ok(palisade(s, a, &["tenant", "create", "globex"]));
    let listed = ok(palisade(s, a, &["tenant", "list"]));
    assert!(
        listed.contains("acme\tactive") && listed.contains("globex\tactive"),
        "{listed}"
    );
    let developer = ok(palisade(
        s,
        a,
        &[
            "token",
            "create",
            "--name",
            "dev",
            "--role",
            "tenant-admin",
            "--tenant",
            "acme",
        ],
    ));
    let developer = developer.trim().to_owned();
    assert!(developer.starts_with("pal_"));
    let d = Some(developer.as_str());

    let echo = palisade_testkit::guest_dir("fixtures/echo");
    let echo = echo.to_str().unwrap();
    let published = ok(palisade(
        s,
        d,
        &["ext", "publish", echo, "--tenant", "acme"],
    ));
    assert!(
        published.contains("acme/echo@0.1.0") && published.contains("published"),
        "{published}"
    );
    // Not approved yet: deploying is refused with its own exit status and a clear reason.
    let refused = palisade(s, d, &["deploy", "acme/echo@0.1.0"]);
    assert_eq!(refused.status.code(), Some(6), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("review"));
    ok(palisade(
        s,
        a,
        &["ext", "approve", "acme/echo@0.1.0", "--note", "ok"],
    ));
    ok(palisade(s, d, &["deploy", "acme/echo@0.1.0"]));

    let mut child = Command::new(PALISADE)
        .args([
            "invoke",
            "acme/echo",
            "--input",
            "-",
            "--content-type",
            "text/plain",
        ])
        .env("PALISADE_SERVER", &server.url)
        .env("PALISADE_TOKEN", &developer)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"through the cli").unwrap();
    let invoked = ok(child.wait_with_output().unwrap());
    assert_eq!(invoked.trim(), "through the cli");

    // A second version, then roll back to the first.
    let second = tempfile::tempdir().unwrap();
    copy_fixture("fixtures/echo", second.path(), "0.2.0");
    ok(palisade(
        s,
        d,
        &[
            "ext",
            "publish",
            second.path().to_str().unwrap(),
            "--tenant",
            "acme",
        ],
    ));
    ok(palisade(s, a, &["ext", "approve", "acme/echo@0.2.0"]));
    ok(palisade(s, d, &["deploy", "acme/echo@0.2.0"]));
    let rolled = ok(palisade(s, d, &["rollback", "acme/echo"]));
    assert!(rolled.contains("now runs 0.1.0 (was 0.2.0"), "{rolled}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(palisade(s, d, &["ext", "show", "acme/echo"]))).unwrap();
    assert_eq!(shown["active"]["version"], "0.1.0");

    // Wrong tenant: it does not exist for this token; exit 6 and a clear message.
    let other = palisade(s, d, &["ext", "list", "globex"]);
    assert_eq!(other.status.code(), Some(6), "{}", text(&other));
    assert!(String::from_utf8_lossy(&other.stderr).contains("tenant globex does not exist"));
    // A role that may not: exit 77.
    let denied = palisade(s, d, &["tenant", "create", "initech"]);
    assert_eq!(denied.status.code(), Some(77), "{}", text(&denied));

    // The audit log: exported, verified from the server, from the file and from the database.
    let export = ok(palisade(s, a, &["audit", "export"]));
    assert!(export.lines().count() >= 10, "{export}");
    let file = data.path().join("export.jsonl");
    std::fs::write(&file, &export).unwrap();
    let verified = ok(palisade(s, a, &["audit", "verify"]));
    assert!(verified.contains("audit log intact"), "{verified}");
    let anchor = verified.rsplit(' ').next().unwrap().trim().to_owned();
    ok(palisade(
        None,
        None,
        &[
            "audit",
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--anchor",
            &anchor,
        ],
    ));

    // Tamper with the database behind the server's back: the first bad entry is named.
    assert!(server.terminate().success());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite:{}",
            data.path().join("palisade.db").display()
        ))
        .await
        .unwrap();
        sqlx::query("UPDATE audit_log SET detail = '{\"forged\":true}' WHERE seq = 4")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    });
    let broken = palisade(
        None,
        None,
        &[
            "audit",
            "verify",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
    );
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    let report = String::from_utf8_lossy(&broken.stdout);
    assert!(
        report.contains("BROKEN at entry 4") && report.contains("edited"),
        "{report}"
    );
    // The exported copy still verifies against its anchor, so the export is the evidence.
    ok(palisade(
        None,
        None,
        &["audit", "verify", "--file", file.to_str().unwrap()],
    ));
}

fn copy_fixture(relative: &str, to: &Path, version: &str) {
    let (text, wasm) = crate::fixture(relative, version);
    let manifest = palisade_model::Manifest::parse(&text).unwrap();
    let text = text.replace(
        &manifest.component.path.display().to_string(),
        "component.wasm",
    );
    std::fs::write(to.join("palisade.toml"), text).unwrap();
    std::fs::write(to.join("component.wasm"), wasm).unwrap();
}

#[test]
fn client_errors_are_clear_and_have_their_own_exit_status() {
    let unreachable = Command::new(PALISADE)
        .args([
            "tenant",
            "list",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "pal_x",
        ])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        unreachable.status.code(),
        Some(69),
        "{}",
        text(&unreachable)
    );
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the Palisade server")
    );

    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let bad = palisade(
        Some(&server),
        Some("pal_not-a-real-token"),
        &["tenant", "list"],
    );
    assert_eq!(bad.status.code(), Some(77), "{}", text(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("unauthenticated") && stderr.contains("admin.token"),
        "{stderr}"
    );
    let none = palisade(Some(&server), None, &["tenant", "list"]);
    assert_eq!(none.status.code(), Some(77), "{}", text(&none));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no token"));
    let bad_url = palisade(
        None,
        Some("pal_x"),
        &["tenant", "list", "--server", "ftp://x"],
    );
    assert_eq!(bad_url.status.code(), Some(2), "{}", text(&bad_url));
    assert!(server.terminate().success());
}

#[test]
fn quickstart_publishes_deploys_invokes_and_prints_the_curl_line() {
    let data = tempfile::tempdir().unwrap();
    palisade_testkit::build_guests();
    let output = Command::new(PALISADE)
        .current_dir(palisade_testkit::repo_root())
        .args([
            "quickstart",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = ok(output);
    assert!(stdout.contains("\"total_cents\":2787"), "{stdout}");
    assert!(
        stdout.contains("curl -sS -X POST -H 'Authorization: Bearer pal_"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/v1/tenants/demo/extensions/order-totals:invoke"),
        "{stdout}"
    );
    // Running it again on the same data directory works too.
    let again = Command::new(PALISADE)
        .current_dir(palisade_testkit::repo_root())
        .args([
            "quickstart",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(ok(again).contains("\"total_cents\":2787"));
}

#[test]
fn token_verify_checks_a_gateway_token_against_the_published_keys() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    // Mint a token with the server's own signing key, as its gateway would.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let token = runtime.block_on(async {
        let kek = palisade_store::LocalKek::load(&data.path().join("kek")).unwrap();
        let store =
            palisade_store::Store::open(data.path(), palisade_store::StoreOptions::default())
                .await
                .unwrap()
                .with_key_provider(std::sync::Arc::new(kek))
                .await
                .unwrap();
        let seed = store
            .signing_seed(|s| palisade_egress::TokenSigner::from_seed(*s).kid().to_owned())
            .await
            .unwrap();
        store.close().await;
        let now = palisade_policy::now_unix();
        palisade_egress::TokenSigner::from_seed(seed).sign(&palisade_egress::Claims {
            iss: "palisade".into(),
            sub: "acme/ext".into(),
            aud: "saas-api".into(),
            tenant: "acme".into(),
            extension: "ext".into(),
            version: "1.0.0".into(),
            invocation_id: "inv-1".into(),
            iat: now,
            exp: now + 60,
        })
    });
    let s = Some(&server);
    let good = ok(palisade(
        s,
        None,
        &["token", "verify", &token, "--audience", "saas-api"],
    ));
    let claims: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert_eq!(claims["tenant"], "acme");
    let wrong = palisade(
        s,
        None,
        &["token", "verify", &token, "--audience", "billing"],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("audience"));
    let mut forged: Vec<String> = token.split('.').map(str::to_owned).collect();
    forged[2] = "A".repeat(86);
    let forged = palisade(s, None, &["token", "verify", &forged.join(".")]);
    assert_eq!(forged.status.code(), Some(1), "{}", text(&forged));

    // After a rotation the token signed by the retired key still verifies.
    let admin = server.admin_token();
    let rotated: serde_json::Value = serde_json::from_str(&ok(palisade(
        s,
        Some(&admin),
        &["keys", "rotate-signing", "--json"],
    )))
    .unwrap();
    assert_ne!(rotated["kid"], rotated["retired"]);
    let still = ok(palisade(
        s,
        None,
        &["token", "verify", &token, "--audience", "saas-api"],
    ));
    assert!(still.contains("\"tenant\""), "{still}");
    assert!(server.terminate().success());
}

#[test]
fn policy_commands_work_on_the_servers_layers() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let admin = server.admin_token();
    let s = Some(&server);
    let a = Some(admin.as_str());
    ok(palisade(s, a, &["tenant", "create", "acme"]));
    let tenant_admin = ok(palisade(
        s,
        a,
        &[
            "token",
            "create",
            "--name",
            "ops",
            "--role",
            "tenant-admin",
            "--tenant",
            "acme",
        ],
    ));

    // A `cedar.file` next to the document: the server receives it inlined.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.cedar"),
        "@id(\"acme-config\")\npermit (principal, action == Action::\"config:read\", resource);\n",
    )
    .unwrap();
    let file = dir.path().join("acme.toml");
    let write = |fuel: &str| {
        std::fs::write(
            &file,
            format!(
                "format = 1\nlayer = \"tenant\"\ntenant = \"acme\"\n\n[limits]\nfuel = {fuel}\n\n\
                 [cedar]\nfile = \"acme.cedar\"\n"
            ),
        )
        .unwrap();
    };
    write("50_000_000");
    let file = file.to_str().unwrap();
    let url = server.url.as_str();
    let on_server = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = ["policy"]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect();
        all.extend(["--server".to_owned(), url.to_owned()]);
        all
    };
    let run = |token: Option<&str>, args: &[&str]| {
        let args = on_server(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        palisade(None, token, &args)
    };

    let diff = ok(run(a, &["diff", file]));
    assert!(
        diff.contains("tenant:acme against nothing (no version on"),
        "{diff}"
    );
    assert!(diff.contains("+ policy acme-config"), "{diff}");
    let applied = ok(run(a, &["apply", file, "--reason", "first"]));
    assert!(
        applied.contains("tenant:acme version 1 stored on the server"),
        "{applied}"
    );
    let again = ok(run(a, &["apply", file, "--reason", "again"]));
    assert!(
        again.contains("unchanged: identical to version 1"),
        "{again}"
    );
    assert!(ok(run(a, &["diff", file])).contains("no changes"));

    write("10_000_000");
    let diff = ok(run(a, &["diff", file]));
    assert!(diff.contains("against tenant:acme version 1 on"), "{diff}");
    assert!(
        diff.contains("limits.fuel: 50000000 -> 10000000 (tightened)"),
        "{diff}"
    );
    assert!(ok(run(a, &["apply", file, "--reason", "tighter"])).contains("version 2 stored"));
    let reverted = ok(run(
        a,
        &[
            "revert",
            "tenant:acme",
            "--to",
            "1",
            "--reason",
            "too tight",
        ],
    ));
    assert!(
        reverted.contains("tenant:acme version 3 stored on the server"),
        "{reverted}"
    );
    assert!(
        reverted.contains("limits.fuel: 10000000 -> 50000000 (loosened)"),
        "{reverted}"
    );

    let history: serde_json::Value =
        serde_json::from_str(&ok(run(a, &["history", "tenant:acme", "--json"]))).unwrap();
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{history}");
    assert_eq!(versions[0]["reason"], "first");
    assert_eq!(versions[2]["change"], "revert");
    assert_eq!(versions[2]["restored"], 1);
    assert!(ok(run(a, &["history", "baseline"])).contains("baseline: no stored versions"));

    // Refused: a tenant administrator may not change its own policy, nor may nobody; an
    // invalid document never reaches the server; the local store is not the server's.
    let denied = run(
        Some(tenant_admin.trim()),
        &["apply", file, "--reason", "mine"],
    );
    assert_eq!(denied.status.code(), Some(77), "{}", text(&denied));
    let anonymous = run(None, &["apply", file, "--reason", "anyone"]);
    assert_eq!(anonymous.status.code(), Some(77), "{}", text(&anonymous));
    std::fs::write(
        dir.path().join("acme.cedar"),
        "permit (principal, action, resource",
    )
    .unwrap();
    let invalid = run(a, &["apply", file, "--reason", "broken"]);
    assert_eq!(invalid.status.code(), Some(3), "{}", text(&invalid));
    let history: serde_json::Value =
        serde_json::from_str(&ok(run(a, &["history", "tenant:acme", "--json"]))).unwrap();
    assert_eq!(history["versions"].as_array().unwrap().len(), 3);
    // A misspelt tenant is an error, not a diff against nothing.
    let misspelt = dir.path().join("acmee.toml");
    std::fs::write(
        &misspelt,
        "format = 1\nlayer = \"tenant\"\ntenant = \"acmee\"\n",
    )
    .unwrap();
    let unknown = run(a, &["diff", misspelt.to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(6), "{}", text(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not_found"));

    // --server ignores the local store, even when PALISADE_POLICY_STORE names one ...
    let store = dir.path().join("store");
    let mut with_store_env = Command::new(PALISADE);
    with_store_env
        .args(on_server(&["history", "tenant:acme", "--json"]))
        .env("PALISADE_POLICY_STORE", &store)
        .env("PALISADE_TOKEN", &admin)
        .env("XDG_CONFIG_HOME", "/nonexistent");
    let history: serde_json::Value =
        serde_json::from_str(&ok(with_store_env.output().unwrap())).unwrap();
    assert_eq!(history["versions"].as_array().unwrap().len(), 3);
    // ... and without --server nothing goes to a server, even with PALISADE_SERVER set.
    let local = palisade(
        s,
        a,
        &[
            "policy",
            "history",
            "tenant:acme",
            "--store",
            store.to_str().unwrap(),
        ],
    );
    assert!(ok(local).contains("tenant:acme: no stored versions"));
    let token_file_alone = palisade(
        None,
        None,
        &[
            "policy",
            "history",
            "tenant:acme",
            "--token-file",
            "/dev/null",
        ],
    );
    assert_eq!(
        token_file_alone.status.code(),
        Some(2),
        "{}",
        text(&token_file_alone)
    );
}

#[test]
fn serve_speaks_tls_and_a_silent_client_holds_up_nobody() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let pki = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = pki.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let ca_file = write("ca.pem", ca_cert.pem());
    let cert_file = write("server.pem", server_cert.pem());
    let key_file = write("server.key", server_key.serialize_pem());

    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[
            ("PALISADE_TLS_CERT", &cert_file),
            ("PALISADE_TLS_KEY", &key_file),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let admin = server.admin_token();
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();

    // A client that connects and never says anything: its handshake waits on its own.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let trusted = ok(palisade(
        Some(&server),
        Some(&admin),
        &["tenant", "create", "acme", "--ca-file", &ca_file],
    ));
    assert!(trusted.contains("acme"), "{trusted}");
    // Still open: the request above did not wait for the silent handshake to time out.
    silent.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let still_open = matches!(
        std::io::Read::read(&mut silent, &mut byte),
        Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    assert!(still_open, "the server closed the silent connection early");

    // Without the CA the certificate is not trusted; plain HTTP gets no answer.
    let untrusted = palisade(Some(&server), Some(&admin), &["tenant", "list"]);
    assert_eq!(untrusted.status.code(), Some(69), "{}", text(&untrusted));
    let plain_url = server.url.replace("https://", "http://");
    let plain = Command::new(PALISADE)
        .args(["tenant", "list", "--server", &plain_url])
        .env("PALISADE_TOKEN", &admin)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_ne!(plain.status.code(), Some(0), "{}", text(&plain));
    assert!(server.terminate().success());
}
