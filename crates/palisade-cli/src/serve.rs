//! `palisade serve`: the control plane on the embedded default (SQLite and local artifacts in
//! the data directory), and `palisade quickstart`, which starts one, creates a demo tenant
//! and token, publishes, approves, deploys and invokes the sample extension, and prints the
//! curl line that invokes it again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_api::{CreateToken, Role};
use palisade_client::{Client, ClientError};
use palisade_server::{Isolation, KekSource, Server, ServerConfig};

use crate::exit;
use crate::load;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The data directory: the database, artifacts and the first administrator's token.
    #[arg(long, env = "PALISADE_DATA_DIR", default_value = ".palisade/server")]
    data_dir: PathBuf,
    /// The address to listen on.
    #[arg(long, env = "PALISADE_LISTEN", default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Run even when some confinement layers cannot be applied here; every outcome lists the
    /// missing layers. Without it, a missing layer refuses to run guests (strict mode).
    #[arg(long)]
    allow_degraded: bool,
    /// Run workers as plain processes, without the jail. Isolation below the wasm sandbox is
    /// OFF: for debugging only.
    #[arg(long, conflicts_with = "allow_degraded")]
    no_jail: bool,
    /// Let versions be deployed without a reviewer's approval.
    #[arg(long)]
    no_review: bool,
    /// Worker processes alive at once, over all tenants.
    #[arg(long, default_value_t = 16)]
    max_workers: usize,
    /// Invocations in flight at once, over all tenants.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Tenants that get their own metric labels (the rest share `_other`).
    #[arg(long, default_value_t = 100)]
    metrics_tenants: usize,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Seconds a client may take to send a request's headers before its connection is closed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// The key-encryption key of tenant state and secrets: a file of 64 hex characters. Without
    /// it (and without PALISADE_KEK), one is made in the data directory on first start.
    #[arg(long, env = "PALISADE_KEK_FILE")]
    kek_file: Option<PathBuf>,
    /// The key-encryption key to rotate away from: data keys wrapped under it are re-wrapped
    /// under the current one at start-up (then it can be destroyed).
    #[arg(long)]
    previous_kek_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "PALISADE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "PALISADE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServerArgs {
    fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.data_dir.clone(), self.listen);
        config.isolation = if self.no_jail {
            Isolation::Plain
        } else {
            Isolation::Jailed {
                allow_degraded: self.allow_degraded,
            }
        };
        config.settings.require_review = !self.no_review;
        config.pool.max_workers = self.max_workers;
        config.admission.max_in_flight = self.max_in_flight;
        config.max_tenant_labels = self.metrics_tenants;
        config.shutdown_timeout = Duration::from_secs(self.shutdown_timeout);
        config.header_timeout = Duration::from_secs(self.header_timeout);
        config.kek = match (&self.kek_file, std::env::var("PALISADE_KEK")) {
            (Some(path), _) => KekSource::File(path.clone()),
            (None, Ok(hex)) => KekSource::Hex(hex),
            (None, Err(_)) => KekSource::DataDir,
        };
        config.previous_kek.clone_from(&self.previous_kek_file);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(palisade_server::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        config
    }

    fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn warn_about_isolation(&self) {
        if self.no_jail {
            eprintln!(
                "WARNING: --no-jail: workers run as plain processes, with no namespaces, seccomp, \
                 Landlock or cgroups below the wasm sandbox. Use it only to debug."
            );
        }
    }
}

pub async fn serve(args: ServerArgs) -> anyhow::Result<u8> {
    args.warn_about_isolation();
    let server = Server::start(args.config()).await?;
    eprintln!(
        "palisade is serving on {}://{}",
        args.scheme(),
        server.local_addr()
    );
    if server.admin_token().is_some() {
        eprintln!(
            "first start: the platform administrator's token is in {}",
            args.data_dir
                .join(palisade_server::ADMIN_TOKEN_FILE)
                .display()
        );
    }
    server.run_until_signal().await;
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The sample extension to publish.
    #[arg(long, default_value = "guests/examples/order-totals")]
    extension: PathBuf,
    /// The input of the demo invocation (default: `order.json` next to the manifest).
    #[arg(long)]
    input: Option<PathBuf>,
    /// The demo tenant.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Run the demo and stop, instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
}

fn step(what: &str) {
    eprintln!("==> {what}");
}

pub async fn quickstart(args: QuickstartArgs) -> anyhow::Result<u8> {
    if args.server.tls_cert.is_some() {
        eprintln!(
            "error: quickstart serves plain HTTP on this machine; use `palisade serve` for TLS"
        );
        return Ok(exit::USAGE);
    }
    let local = match load::load(&args.extension) {
        Ok(local) => local,
        Err(error) => {
            eprintln!(
                "error: {error}\nhint: build the samples first: (cd guests && cargo build --release)"
            );
            return Ok(exit::for_kind(error.kind));
        }
    };
    let input_path = args.input.clone().unwrap_or_else(|| {
        load::manifest_path(&args.extension)
            .parent()
            .unwrap_or(Path::new("."))
            .join("order.json")
    });
    let input = std::fs::read(&input_path).unwrap_or_default();

    args.server.warn_about_isolation();
    step(&format!(
        "starting the server (data in {})",
        args.server.data_dir.display()
    ));
    let server = Server::start(args.server.config()).await?;
    let url = format!("http://{}", server.local_addr());
    let admin_file = args.server.data_dir.join(palisade_server::ADMIN_TOKEN_FILE);
    let admin_token = match server.admin_token() {
        Some(token) => token.to_owned(),
        None => std::fs::read_to_string(&admin_file)?.trim().to_owned(),
    };
    let demo = demo(&url, &admin_token, &args, &local, input).await;
    let token = match demo {
        Ok(token) => token,
        Err(error) => {
            eprintln!("error: {error}");
            server.shutdown().await;
            return Ok(exit::INTERNAL);
        }
    };
    let name = local.manifest.extension.name.as_str();
    println!();
    println!("Invoke it again:");
    println!(
        "  curl -sS -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    --data-binary @{} {url}/v1/tenants/{}/extensions/{name}:invoke",
        input_path.display(),
        args.tenant
    );
    println!();
    println!("Or with the CLI:");
    println!("  export PALISADE_SERVER={url} PALISADE_TOKEN={token}");
    println!(
        "  palisade invoke {}/{name} --input {}",
        args.tenant,
        input_path.display()
    );
    println!(
        "Operator token: {} (platform administrator). Metrics: {url}/metrics, API: {url}/openapi.json",
        admin_file.display()
    );
    if args.once {
        server.shutdown().await;
    } else {
        eprintln!("serving until Ctrl-C");
        server.run_until_signal().await;
    }
    Ok(exit::OK)
}

/// Creates the demo tenant and its token, publishes, approves, deploys and invokes; returns
/// the tenant administrator's token. Safe to run again on the same data directory.
async fn demo(
    url: &str,
    admin_token: &str,
    args: &QuickstartArgs,
    local: &load::LocalExtension,
    input: Vec<u8>,
) -> Result<String, ClientError> {
    let admin = Client::new(url, admin_token)?;
    let tenant = &args.tenant;
    let name = local.manifest.extension.name.as_str();
    let version = local.manifest.extension.version.to_string();
    step(&format!("creating tenant {tenant}"));
    match admin.create_tenant(tenant).await {
        Err(error) if error.kind() == Some("conflict") => {}
        other => {
            other?;
        }
    }
    step(&format!("minting a tenant-admin token for {tenant}"));
    let created = admin
        .create_token(&CreateToken {
            name: Some(format!("{tenant}-admin")),
            role: Some(Role::TenantAdmin),
            tenant: Some(tenant.clone()),
            principal: None,
            expires_in_s: Some(7 * 86_400),
        })
        .await?;
    let developer = Client::new(url, &created.token)?;
    step(&format!(
        "publishing {name}@{version} (compiled and checked in {tenant}'s jailed worker)"
    ));
    match developer
        .publish(tenant, name, &local.text, &local.wasm)
        .await
    {
        Err(error) if error.kind() == Some("conflict") => {}
        other => {
            other?;
        }
    }
    step("approving it (as the platform reviewer would)");
    match admin
        .review(tenant, name, &version, true, Some("quickstart".into()))
        .await
    {
        Err(error) if error.kind() == Some("conflict") => {}
        other => {
            other?;
        }
    }
    step("deploying it");
    developer.deploy(tenant, name, &version).await?;
    step("invoking it");
    let answer = developer
        .invoke(tenant, name, input, "application/json")
        .await?;
    println!("{}", String::from_utf8_lossy(&answer.body));
    eprintln!(
        "(invocation {}, request {})",
        answer.invocation_id, answer.request_id
    );
    Ok(created.token)
}
