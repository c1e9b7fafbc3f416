//! `palisade`: the command-line entry point. Thin glue over the library crates; `anyhow` stops
//! here.

mod doctor;
mod exit;
mod load;
mod local;
mod policy_cmd;
mod remote;
mod run;
mod scaffold;
mod serve;
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
    /// Validate, diff, apply, list, revert and explain policies.
    Policy(policy_cmd::PolicyArgs),
    /// Report which isolation layers this host supports.
    Doctor(doctor::DoctorArgs),
    /// Run the control plane: the HTTP API, the store and the worker pool.
    Serve(serve::ServerArgs),
    /// Start a server, create a demo tenant and token, publish, deploy and invoke the sample
    /// extension, and print how to invoke it again.
    Quickstart(serve::QuickstartArgs),
    /// Manage tenants on a server.
    Tenant(remote::TenantArgs),
    /// Manage API tokens on a server.
    Token(remote::TokenArgs),
    /// Publish, list, show and review extensions on a server.
    Ext(remote::ExtArgs),
    /// Make a published version the active one.
    Deploy(remote::DeployArgs),
    /// Roll an extension back to a version deployed before.
    Rollback(remote::RollbackArgs),
    /// Invoke a deployed extension on a server.
    Invoke(remote::InvokeArgs),
    /// Verify or export a server's audit log.
    Audit(remote::AuditArgs),
    /// Set, list and delete a tenant's secrets (write-only).
    Secret(remote::SecretArgs),
    /// Show and rotate a tenant's data keys; destroy a key-value namespace; rotate the server's
    /// token-signing key.
    Keys(remote::KeysArgs),
    /// The worker process (started by the supervisor, never by hand).
    #[command(name = "__worker", hide = true)]
    Worker {
        /// Started by the jail: the socket is fd 3, seccomp stage 2 is installed.
        #[arg(long)]
        jailed: bool,
    },
    /// The jail launcher (started by the supervisor, never by hand).
    #[command(name = "__jail-launcher", hide = true)]
    JailLauncher,
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
    /// Run the extension inside this process, without a worker process or jail. Isolation
    /// below the wasm sandbox is OFF: for debugging only.
    #[arg(long)]
    no_jail: bool,
    /// Run even when some confinement layers cannot be applied here; every outcome lists the
    /// missing layers. Without it, a missing layer refuses to run (strict mode).
    #[arg(long, conflicts_with = "no_jail")]
    allow_degraded: bool,
    /// Send the extension's outbound HTTP through a local egress gateway: the manifest's
    /// `[capabilities] http` destinations, public addresses only, the shipped baseline's
    /// egress quotas. Without it, outbound requests fail with `egress_unavailable`.
    #[arg(long)]
    egress: bool,
    /// With --egress: let the gateway reach this private range too (for example
    /// 127.0.0.1/32 for a mock server on this machine). Repeatable.
    #[arg(long, value_name = "CIDR", requires = "egress", value_parser = parse_cidr)]
    egress_allow_private: Vec<palisade_egress::Cidr>,
}

fn parse_cidr(text: &str) -> Result<palisade_egress::Cidr, String> {
    palisade_egress::Cidr::parse(text)
        .ok_or_else(|| format!("`{text}` is not a CIDR block such as 127.0.0.1/32"))
}

impl EngineArgs {
    /// The in-process runtime's settings (`--no-jail`).
    fn runtime_config(&self) -> palisade_runtime::RuntimeConfig {
        palisade_runtime::RuntimeConfig {
            pooling: !self.no_pooling,
            max_concurrent: 4,
            cache_dir: self.cache_dir.clone(),
            ..Default::default()
        }
    }
}

/// Logs go to stderr: `PALISADE_LOG` filters (default `warn`, `info` for the server),
/// `PALISADE_LOG_FORMAT=json` writes one JSON object per line with the span fields (request
/// and invocation ids) on every line.
fn init_logging(command: &Command) {
    let default = match command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("PALISADE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

/// A remote command's failure is printed here, with its own exit status.
fn remote_result(result: Result<u8, remote::Failure>) -> anyhow::Result<u8> {
    Ok(result.unwrap_or_else(|failure| {
        eprintln!("error: {}", failure.message);
        failure.code
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    // These two must stay single-threaded until they exec or serve: no tokio runtime here.
    match &cli.command {
        Command::JailLauncher => palisade_jail::launcher::main(),
        Command::Worker { jailed } => {
            let options = palisade_worker::WorkerOptions {
                jailed: *jailed,
                ..Default::default()
            };
            return match palisade_worker::worker_main(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("palisade worker: {error}");
                    ExitCode::from(exit::INTERNAL)
                }
            };
        }
        _ => {}
    }
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
            Command::Doctor(args) => doctor::doctor(&args),
            Command::Worker { .. } | Command::JailLauncher => Ok(exit::INTERNAL),
            Command::Policy(args) => policy_cmd::policy(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Quickstart(args) => serve::quickstart(args).await,
            Command::Tenant(args) => remote_result(remote::tenant(args).await),
            Command::Token(args) => remote_result(remote::token(args).await),
            Command::Ext(args) => remote_result(remote::ext(args).await),
            Command::Deploy(args) => remote_result(remote::deploy(args).await),
            Command::Rollback(args) => remote_result(remote::rollback(args).await),
            Command::Invoke(args) => remote_result(remote::invoke(args).await),
            Command::Audit(args) => remote_result(remote::audit(args).await),
            Command::Secret(args) => remote_result(remote::secret(args).await),
            Command::Keys(args) => remote_result(remote::keys(args).await),
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
