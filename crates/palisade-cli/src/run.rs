//! `palisade run`: one invocation of a local extension, printed for people or as JSON.

use std::io::Write;
use std::path::PathBuf;

use palisade_model::{ErrorKind, InvocationError, InvocationRequest, Outcome};

use crate::local::Local;
use crate::{EngineArgs, exit, load};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The extension: a directory holding `palisade.toml`, or the manifest file itself.
    extension: PathBuf,
    /// Input file, or `-` for standard input. Without it the input is empty.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Media type of the input.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Metadata passed to the extension, as KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_key_value)]
    metadata: Vec<(String, String)>,
    /// Print one JSON object instead of human-readable output.
    #[arg(long)]
    json: bool,
    /// Run under this policy layer too, as a server would: a tenant layer on the shipped
    /// baseline (runs are that tenant's), or a baseline in place of the shipped one.
    #[arg(long, value_name = "FILE", value_parser = crate::local::parse_policy_layer)]
    policy: Option<palisade_policy::CompiledLayer>,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let (outcome, extension) = invoke(&args).await;
    if args.json {
        let mut json = outcome.to_json();
        if let (Some(object), Some(extension)) = (json.as_object_mut(), extension) {
            object.insert("extension".into(), extension);
        }
        println!("{json}");
    } else {
        print_human(&outcome)?;
    }
    Ok(match &outcome.result {
        Ok(_) => exit::OK,
        Err(error) => exit::for_kind(error.kind),
    })
}

async fn invoke(args: &RunArgs) -> (Outcome, Option<serde_json::Value>) {
    let local = match load::load(&args.extension) {
        Ok(local) => local,
        Err(error) => return (Outcome::rejected(error), None),
    };
    let local_host = match Local::new(&args.engine, &local, args.policy.as_ref()) {
        Ok(host) => host,
        Err(error) => return (Outcome::rejected(error), None),
    };
    let description = serde_json::json!({
        "name": local.manifest.extension.name.as_str(),
        "version": local.manifest.extension.version.to_string(),
        "sha256": local.digest().to_hex(),
    });
    let body = match read_input(args.input.as_deref(), local_host.limits().input_bytes) {
        Ok(body) => body,
        Err(error) => return (Outcome::rejected(error), Some(description)),
    };
    let request = InvocationRequest {
        body,
        content_type: args.content_type.clone(),
        metadata: args.metadata.clone(),
    };
    let outcome = local_host.invoke(request).await;
    local_host.shutdown().await;
    (outcome, Some(description))
}

fn read_input(path: Option<&std::path::Path>, max: u64) -> Result<Vec<u8>, InvocationError> {
    let result = match path {
        None => return Ok(Vec::new()),
        Some(path) if path.as_os_str() == "-" => {
            load::read_stream_capped(std::io::stdin().lock(), max)
        }
        Some(path) => load::read_capped(path, max),
    };
    result.map_err(|error| {
        let kind = if error.kind() == std::io::ErrorKind::FileTooLarge {
            ErrorKind::InputTooLarge
        } else {
            ErrorKind::Internal
        };
        InvocationError::new(kind, format!("cannot read the input: {error}"))
    })
}

fn print_human(outcome: &Outcome) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for entry in &outcome.logs {
        let level = serde_json::to_value(entry.level).unwrap_or_default();
        let source = serde_json::to_value(entry.source).unwrap_or_default();
        writeln!(
            stderr,
            "[{} {}] {}",
            level.as_str().unwrap_or("?"),
            source.as_str().unwrap_or("?"),
            entry.message
        )?;
    }
    match &outcome.result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&output.body)?;
            if !output.body.ends_with(b"\n") && std::str::from_utf8(&output.body).is_ok() {
                writeln!(stdout)?;
            }
        }
        Err(error) => writeln!(stderr, "error: {}: {}", error.kind, error.message)?,
    }
    let usage = &outcome.usage;
    writeln!(
        stderr,
        "usage: {} fuel, {:.3} ms, {} KiB peak memory, {} B out, {} B logs",
        usage.fuel_consumed,
        usage.wall_time_us as f64 / 1000.0,
        usage.peak_memory_bytes / 1024,
        usage.output_bytes,
        usage.log_bytes
    )?;
    Ok(())
}
