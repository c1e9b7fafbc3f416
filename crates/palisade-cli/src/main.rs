//! `palisade`: the command-line entry point. Thin glue over the library crates; `anyhow` stops
//! here.

mod exit;
mod load;
mod run;
mod scaffold;
mod test_vectors;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run untrusted extensions safely: test them locally under production limits.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Invoke an extension once with an input.
    Run(run::RunArgs),
    /// Run the test vectors of an extension's manifest under its limits.
    Test(test_vectors::TestArgs),
    /// Scaffold a new Rust extension from the template.
    New(scaffold::NewArgs),
}

/// Options shared by commands that execute extensions.
#[derive(Debug, Clone, clap::Args)]
struct EngineArgs {
    /// Directory for compiled-component artifacts (skips recompiling unchanged components).
    #[arg(long, env = "PALISADE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Allocate instance memory on demand instead of from the pre-reserved pool.
    #[arg(long)]
    no_pooling: bool,
}

impl EngineArgs {
    fn runtime(&self) -> Result<palisade_runtime::Runtime, palisade_runtime::RuntimeError> {
        palisade_runtime::Runtime::new(palisade_runtime::RuntimeConfig {
            pooling: !self.no_pooling,
            max_concurrent: 4,
            cache_dir: self.cache_dir.clone(),
            ..Default::default()
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Test(args) => test_vectors::test(args).await,
            Command::New(args) => scaffold::new(&args),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::INTERNAL)
        }
    }
}
