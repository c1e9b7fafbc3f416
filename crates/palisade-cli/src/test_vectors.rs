//! `palisade test`: runs the manifest's test vectors under the manifest's limits.

use std::path::PathBuf;

use palisade_model::manifest::Expectation;
use palisade_model::{InvocationError, InvocationRequest, Outcome};

use crate::local::Local;
use crate::{EngineArgs, exit, load};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The extension: a directory holding `palisade.toml`, or the manifest file itself.
    extension: PathBuf,
    /// Print one JSON object instead of a line per vector.
    #[arg(long)]
    json: bool,
    /// Run every vector under this policy layer too, as a server would: a tenant layer on the
    /// shipped baseline (runs are that tenant's), or a baseline in place of the shipped one.
    #[arg(long, value_name = "FILE", value_parser = crate::local::parse_policy_layer)]
    policy: Option<palisade_policy::CompiledLayer>,
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
    let local_host = match Local::new(&args.engine, &local, args.policy.as_ref()) {
        Ok(host) => host,
        Err(error) => return report_load_failure(&args, &error),
    };
    let mut results = Vec::with_capacity(local.manifest.tests.len());
    for vector in local.manifest.tests.iter().map(|t| t.get_ref()) {
        let (body, content_type) = vector.request_body();
        let request = InvocationRequest {
            body,
            content_type,
            metadata: vector.metadata.clone().into_iter().collect(),
        };
        // A load failure comes back as every vector's outcome: some expect exactly that
        // (`import_not_allowed`).
        let outcome = local_host.invoke(request).await;
        results.push(judge(&vector.name, &vector.expectation(), &outcome));
    }
    local_host.shutdown().await;
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
