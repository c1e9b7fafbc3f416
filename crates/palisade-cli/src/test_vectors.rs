//! `palisade test`: runs the manifest's test vectors under the manifest's limits.

use std::path::PathBuf;

use palisade_model::manifest::Expectation;
use palisade_model::{InvocationError, Outcome};
use palisade_runtime::Request;

use crate::executor::{Executor, manifest_limits};
use crate::{EngineArgs, exit, load};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The extension: a directory holding `palisade.toml`, or the manifest file itself.
    extension: PathBuf,
    /// Print one JSON object instead of a line per vector.
    #[arg(long)]
    json: bool,
    /// Hold every vector to this policy file's limits too (the smaller of policy and manifest).
    #[arg(long, value_name = "FILE", value_parser = crate::policy_cmd::parse_policy_limits)]
    policy: Option<palisade_model::Limits>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, serde::Serialize)]
struct VectorResult {
    name: String,
    passed: bool,
    expected: String,
    actual: String,
}

pub async fn test(args: TestArgs) -> anyhow::Result<u8> {
    let local = match load::load(&args.extension) {
        Ok(local) => local,
        Err(error) => return report_load_failure(&args, &error),
    };
    let executor = match Executor::new(&args.engine) {
        Ok(executor) => executor,
        Err(error) => return report_load_failure(&args, &error),
    };
    let egress = match args.engine.local_egress() {
        Ok(egress) => egress,
        Err(error) => return report_load_failure(&args, &error),
    };
    let prepared = executor.prepare(&local, egress.as_ref());
    let limits = manifest_limits(&local, args.policy);
    let mut results = Vec::with_capacity(local.manifest.tests.len());
    for vector in local.manifest.tests.iter().map(|t| t.get_ref()) {
        let (body, content_type) = vector.request_body();
        let request = Request {
            body,
            content_type,
            metadata: vector.metadata.clone().into_iter().collect(),
        };
        // A load failure comes back as every vector's outcome: some expect exactly that
        // (`import_not_allowed`).
        let outcome = executor.invoke(&prepared, request, &limits).await;
        results.push(judge(&vector.name, &vector.expectation(), &outcome));
    }
    executor.shutdown().await;
    let failed = results.iter().filter(|r| !r.passed).count();
    let name = local.manifest.extension.name.to_string();
    if args.json {
        let json = serde_json::json!({
            "extension": name,
            "passed": results.len() - failed,
            "failed": failed,
            "tests": results,
        });
        println!("{json}");
    } else {
        for result in &results {
            if result.passed {
                println!("ok    {}", result.name);
            } else {
                println!(
                    "FAIL  {}\n      expected: {}\n      actual:   {}",
                    result.name, result.expected, result.actual
                );
            }
        }
        println!("{name}: {} passed, {failed} failed", results.len() - failed);
    }
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::EXTENSION_FAILED
    })
}

fn report_load_failure(args: &TestArgs, error: &InvocationError) -> anyhow::Result<u8> {
    if args.json {
        println!(
            "{}",
            serde_json::json!({"error": {"kind": error.kind, "message": error.message}})
        );
    } else {
        eprintln!("error: {}: {}", error.kind, error.message);
    }
    Ok(exit::for_kind(error.kind))
}

fn judge(name: &str, expectation: &Expectation, outcome: &Outcome) -> VectorResult {
    let actual = match &outcome.result {
        Ok(output) => format!("output {}", String::from_utf8_lossy(&output.body)),
        Err(error) => format!("error {}: {}", error.kind, error.message),
    };
    let (passed, expected) = match (expectation, &outcome.result) {
        (Expectation::Error(kind), result) => (
            result.as_ref().err().is_some_and(|e| e.kind == *kind),
            format!("error {kind}"),
        ),
        (Expectation::Output(text), result) => (
            result.as_ref().is_ok_and(|o| o.body == text.as_bytes()),
            format!("output {text}"),
        ),
        (Expectation::Json(value), result) => (
            result
                .as_ref()
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.body).ok())
                .is_some_and(|actual| actual == *value),
            format!("json {value}"),
        ),
    };
    VectorResult {
        name: name.to_owned(),
        passed,
        expected,
        actual,
    }
}
