//! The CLI as a client of a Palisade server: `tenant`, `token`, `ext`, `deploy`, `rollback`,
//! `invoke` and `audit`. The server comes from `--server` (or `PALISADE_SERVER`, or the config
//! file), the token from `--token` (or `PALISADE_TOKEN`, `--token-file`, or the config file:
//! `$XDG_CONFIG_HOME/palisade/config.toml` with `server = "..."` and `token = "..."`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use palisade_api::{CreateToken, Role};
use palisade_client::{Client, ClientError, ClientOptions};
use palisade_model::ErrorKind;
use palisade_model::audit::{Anchor, AuditEntry, verify_chain};
use serde::Deserialize;

use crate::{exit, load};

/// Where the server is when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8700";

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The server's base URL.
    #[arg(long, env = "PALISADE_SERVER", global = true)]
    server: Option<String>,
    /// An API token (prefer PALISADE_TOKEN or --token-file: arguments show in `ps`).
    #[arg(long, env = "PALISADE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the token (for example DATA_DIR/admin.token).
    #[arg(long, global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// server with a private certificate.
    #[arg(long, env = "PALISADE_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
    token: Option<String>,
    /// A CA certificate (PEM file) for an https:// `server`.
    ca_file: Option<PathBuf>,
}

fn config_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .map(|dir| dir.join("palisade").join("config.toml"))
}

/// A command-line error of a remote command: what to print and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = match &error {
            ClientError::BadUrl { .. } | ClientError::Tls(_) => exit::USAGE,
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            ClientError::Unexpected { .. } => exit::INTERNAL,
            ClientError::Api { kind, status, .. } => match (kind.as_str(), status) {
                ("unauthenticated" | "forbidden", _) => exit::DENIED,
                ("rate_limited" | "overloaded", _) => exit::OVERLOADED,
                (kind, _) => match serde_json::from_value::<ErrorKind>(kind.into()) {
                    Ok(kind) => exit::for_kind(kind),
                    Err(_) => exit::REFUSED,
                },
            },
        };
        let message = match &error {
            ClientError::Api { kind, .. } if kind == "unauthenticated" => format!(
                "{error}\nhint: give a valid token with --token-file, PALISADE_TOKEN or the config \
                 file; a new server writes its first administrator token to DATA_DIR/admin.token"
            ),
            ClientError::Unreachable { .. } => {
                format!(
                    "{error}\nhint: is `palisade serve` running there? Set --server or PALISADE_SERVER"
                )
            }
            _ => error.to_string(),
        };
        Self { code, message }
    }
}

impl ConnectArgs {
    /// The connection of a command that takes its own `--server` (explicit, no environment
    /// variable) and the usual token options.
    pub fn to_server(
        server: String,
        token: Option<String>,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> Self {
        Self {
            server: Some(server),
            token,
            token_file,
            ca_file,
            json: false,
        }
    }

    /// The CA to trust: `--ca-file`, else the config file's when it is that server's.
    fn options(&self, file_ca: Option<PathBuf>) -> Result<ClientOptions, Failure> {
        let path = self.ca_file.clone().or(file_ca);
        let ca_pem = path
            .map(|path| {
                std::fs::read(&path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
            })
            .transpose()?;
        Ok(ClientOptions { ca_pem })
    }

    /// The server to talk to, and what of the config file belongs to it: its token and
    /// its CA are never used for another server named on the command line.
    fn target(&self) -> Result<(String, Option<String>, Option<PathBuf>), Failure> {
        let file = match config_path() {
            Some(path) if path.exists() => read_config(&path)?,
            _ => ConfigFile::default(),
        };
        let file_server = file
            .server
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let server = self.server.clone().unwrap_or_else(|| file_server.clone());
        let own = server == file_server;
        Ok((
            server,
            file.token.filter(|_| own),
            file.ca_file.filter(|_| own),
        ))
    }

    /// A client without a token (for the public endpoints).
    pub fn anonymous(&self) -> Result<Client, Failure> {
        let (server, _, file_ca) = self.target()?;
        Ok(Client::with_options(
            &server,
            None,
            &self.options(file_ca)?,
        )?)
    }

    pub fn client(&self) -> Result<Client, Failure> {
        let (server, file_token, file_ca) = self.target()?;
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => file_token,
        };
        let token = token.ok_or_else(|| Failure {
            code: exit::DENIED,
            message:
                "no token: give --token-file FILE, set PALISADE_TOKEN, or put `token = \"...\"` \
                      in the config file"
                    .into(),
        })?;
        Ok(Client::with_options(
            &server,
            Some(&token),
            &self.options(file_ca)?,
        )?)
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// `TENANT/NAME` or `TENANT/NAME@VERSION`.
fn parse_target(text: &str) -> Result<(String, String, Option<String>), String> {
    let (tenant, rest) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not TENANT/NAME[@VERSION]"))?;
    let (name, version) = match rest.split_once('@') {
        Some((name, version)) => (name, Some(version.to_owned())),
        None => (rest, None),
    };
    if tenant.is_empty() || name.is_empty() {
        return Err(format!("`{text}` is not TENANT/NAME[@VERSION]"));
    }
    Ok((tenant.to_owned(), name.to_owned(), version))
}

type Target = (String, String, Option<String>);

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure {
        code: exit::INTERNAL,
        message: e.to_string(),
    })?;
    println!("{text}");
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    command: TenantCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant (platform administrators).
    Create { id: String },
    /// List the tenants this token may see.
    List,
    /// Suspend a tenant: its extensions stop running; nothing is deleted.
    Suspend { id: String },
    /// Resume a suspended tenant.
    Resume { id: String },
    /// Decommission a tenant: destroy its state, secrets and data keys, revoke its tokens.
    /// Final; its history stays.
    Decommission {
        id: String,
        /// Say yes: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn tenant(args: TenantArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    let tenants = match args.command {
        TenantCommand::Create { id } => vec![client.create_tenant(&id).await?],
        TenantCommand::List => client.tenants().await?,
        TenantCommand::Suspend { id } => vec![client.suspend_tenant(&id).await?],
        TenantCommand::Resume { id } => vec![client.resume_tenant(&id).await?],
        TenantCommand::Decommission { id, yes } => {
            if !yes {
                return Err(Failure::usage(format!(
                    "decommissioning {id} destroys its state, secrets and keys for good; add --yes"
                )));
            }
            vec![client.decommission_tenant(&id).await?]
        }
    };
    if args.connect.json {
        print_json(&tenants)?;
    } else {
        for tenant in tenants {
            println!("{}\t{}", tenant.id, tenant.state.as_str());
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a token; its secret is printed once.
    Create {
        /// A label: `ci-deployer`, `alice`.
        #[arg(long)]
        name: String,
        /// platform-admin, platform-reviewer, tenant-admin, tenant-developer or invoker.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The tenant of a tenant role.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime in seconds (default 90 days).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token by its id (`tok-...`), at once.
    Revoke { id: String },
    /// Verify a short-lived token the egress gateway injected: its signature against the
    /// server's published keys (/.well-known/jwks.json), its expiry and its audience.
    Verify {
        /// The token (a JWT), or `-` to read it from standard input.
        token: String,
        /// The audience it must be for.
        #[arg(long)]
        audience: Option<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a role: use {}",
            Role::ALL.map(Role::as_str).join(", ")
        )
    })
}

pub async fn token(args: TokenArgs) -> Result<u8, Failure> {
    if let TokenCommand::Verify { token, audience } = &args.command {
        return verify_token(&args.connect, token, audience.as_deref()).await;
    }
    let client = args.connect.client()?;
    match args.command {
        TokenCommand::Verify { .. } => {}
        TokenCommand::Create {
            name,
            role,
            tenant,
            expires_in,
        } => {
            let created = client
                .create_token(&CreateToken {
                    name: Some(name),
                    role: Some(role),
                    tenant,
                    principal: None,
                    expires_in_s: expires_in,
                })
                .await?;
            if args.connect.json {
                print_json(&created)?;
            } else {
                eprintln!(
                    "token {} for {} ({}), expires {}; the secret below is shown only once:",
                    created.info.id,
                    created.info.principal.name,
                    created.info.principal.role,
                    palisade_policy::format_time(created.info.expires_ms / 1000)
                );
                println!("{}", created.token);
            }
        }
        TokenCommand::List { tenant } => {
            let tokens = client.tokens(tenant.as_deref()).await?;
            if args.connect.json {
                print_json(&tokens)?;
            } else {
                for token in tokens {
                    let state = if token.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "live"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{state}",
                        token.id,
                        token.principal.name,
                        token.principal.role,
                        token.principal.tenant.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let revoked = client.revoke_token(&id).await?;
            if args.connect.json {
                print_json(&revoked)?;
            } else {
                println!("revoked {}", revoked.id);
            }
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct ExtArgs {
    #[command(subcommand)]
    command: ExtCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum ExtCommand {
    /// Publish the extension in DIR (its palisade.toml and component) as a new version.
    Publish {
        /// An extension directory or its palisade.toml.
        dir: PathBuf,
        /// The tenant to publish for.
        #[arg(long)]
        tenant: String,
    },
    /// List a tenant's extensions.
    List { tenant: String },
    /// Show an extension: versions, active deployment, effective limits.
    Show {
        #[arg(value_parser = parse_target)]
        target: Target,
    },
    /// Approve a version waiting for review (platform reviewers).
    Approve {
        /// TENANT/NAME@VERSION
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject a version waiting for review.
    Reject {
        #[arg(value_parser = parse_target)]
        target: Target,
        #[arg(long)]
        note: Option<String>,
    },
}

fn need_version(target: &Target) -> Result<&str, Failure> {
    target.2.as_deref().ok_or_else(|| {
        Failure::usage(format!(
            "give the version: {}/{}@VERSION",
            target.0, target.1
        ))
    })
}

pub async fn ext(args: ExtArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    let json = args.connect.json;
    match args.command {
        ExtCommand::Publish { dir, tenant } => {
            let local = load::load(&dir).map_err(|e| Failure {
                code: exit::for_kind(e.kind),
                message: e.to_string(),
            })?;
            let published = client
                .publish(
                    &tenant,
                    local.manifest.extension.name.as_str(),
                    &local.text,
                    &local.wasm,
                )
                .await?;
            if json {
                print_json(&published)?;
            } else {
                println!(
                    "published {}/{}@{} ({} bytes, sha256 {}), state {}",
                    published.tenant,
                    published.name,
                    published.version,
                    published.component_bytes,
                    published.component_sha256,
                    published.state.as_str()
                );
            }
        }
        ExtCommand::List { tenant } => {
            let extensions = client.extensions(&tenant).await?;
            if json {
                print_json(&extensions)?;
            } else {
                for ext in extensions {
                    println!(
                        "{}/{}\tactive {}\tlatest {}",
                        ext.tenant,
                        ext.name,
                        ext.active_version.as_deref().unwrap_or("-"),
                        ext.latest_version.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        ExtCommand::Show { target } => {
            let extension = client.extension(&target.0, &target.1).await?;
            print_json(&extension)?;
        }
        ExtCommand::Approve { target, note } => {
            let version = need_version(&target)?;
            let reviewed = client
                .review(&target.0, &target.1, version, true, note)
                .await?;
            print_review(&reviewed, json)?;
        }
        ExtCommand::Reject { target, note } => {
            let version = need_version(&target)?;
            let reviewed = client
                .review(&target.0, &target.1, version, false, note)
                .await?;
            print_review(&reviewed, json)?;
        }
    }
    Ok(exit::OK)
}

fn print_review(version: &palisade_api::ExtensionVersion, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(version);
    }
    println!(
        "{}/{}@{} is {}",
        version.tenant,
        version.name,
        version.version,
        version.state.as_str()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// TENANT/NAME@VERSION
    #[arg(value_parser = parse_target)]
    target: Target,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn deploy(args: DeployArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    let version = need_version(&args.target)?;
    let deployment = client
        .deploy(&args.target.0, &args.target.1, version)
        .await?;
    print_deployment(&deployment, args.connect.json)?;
    Ok(exit::OK)
}

fn print_deployment(deployment: &palisade_api::Deployment, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(deployment);
    }
    println!(
        "{}/{} now runs {} (was {}; deployment {})",
        deployment.tenant,
        deployment.name,
        deployment.version,
        deployment.previous_version.as_deref().unwrap_or("nothing"),
        deployment.seq
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// TENANT/NAME
    #[arg(value_parser = parse_target)]
    target: Target,
    /// A version deployed before (default: the one active before the current one).
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn rollback(args: RollbackArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    let deployment = client
        .rollback(&args.target.0, &args.target.1, args.to.as_deref())
        .await?;
    print_deployment(&deployment, args.connect.json)?;
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// TENANT/NAME
    #[arg(value_parser = parse_target)]
    target: Target,
    /// Input file, or `-` for standard input. Without it the input is empty.
    #[arg(long, short)]
    input: Option<PathBuf>,
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Metadata for the extension, as KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = crate::run::parse_key_value)]
    metadata: Vec<(String, String)>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn invoke(args: InvokeArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    let input = match args.input.as_deref() {
        None => Vec::new(),
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
            bytes
        }
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?,
    };
    let envelope = client
        .invoke_envelope(
            &args.target.0,
            &args.target.1,
            input,
            &args.content_type,
            &args.metadata,
        )
        .await?;
    if args.connect.json {
        print_json(&envelope)?;
    } else {
        let mut stderr = std::io::stderr().lock();
        for entry in &envelope.logs {
            let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("?");
            let _ = writeln!(
                stderr,
                "[{} {}] {}",
                field("level"),
                field("source"),
                field("message")
            );
        }
        if let Some(output) = &envelope.output {
            println!("{output}");
        } else if let Some(output) = &envelope.output_base64 {
            println!("{output}");
        }
        if let Some(error) = &envelope.error {
            let _ = writeln!(stderr, "error: {}: {}", error.kind, error.message);
        }
        let _ = writeln!(
            stderr,
            "invocation {} of {}/{}@{} (request {})",
            envelope.invocation_id,
            envelope.tenant,
            envelope.extension,
            envelope.version,
            envelope.request_id
        );
    }
    Ok(match &envelope.error {
        None => exit::OK,
        Some(error) => serde_json::from_value::<ErrorKind>(error.kind.clone().into())
            .map_or(exit::REFUSED, exit::for_kind),
    })
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain: of a server's log (fetched and checked here), a data
    /// directory's database, or an exported file. Names the first bad entry.
    Verify {
        /// An export made by `palisade audit export` (JSON lines).
        #[arg(long, conflicts_with = "data_dir")]
        file: Option<PathBuf>,
        /// A server's data directory (reads its database directly; the server may run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// `SEQ:HASH` printed by an earlier verification: also check that this entry is
        /// still there, unchanged (catches truncation and rewrites after it).
        #[arg(long)]
        anchor: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Print every audit entry as JSON lines.
    Export {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn audit(args: AuditArgs) -> Result<u8, Failure> {
    match args.command {
        AuditCommand::Export { connect } => {
            let entries = connect.client()?.audit_all().await?;
            let mut stdout = std::io::stdout().lock();
            for entry in entries {
                let line = serde_json::to_string(&entry).map_err(|e| Failure {
                    code: exit::INTERNAL,
                    message: e.to_string(),
                })?;
                let _ = writeln!(stdout, "{line}");
            }
            Ok(exit::OK)
        }
        AuditCommand::Verify {
            file,
            data_dir,
            anchor,
            connect,
        } => {
            let anchor = anchor
                .map(|text| {
                    Anchor::parse(&text).ok_or_else(|| {
                        Failure::usage(format!("`{text}` is not an anchor (SEQ:64-hex-hash)"))
                    })
                })
                .transpose()?;
            let entries = match (file, data_dir) {
                (Some(file), _) => read_export(&file)?,
                (None, Some(dir)) => {
                    let store =
                        palisade_store::Store::open(&dir, palisade_store::StoreOptions::default())
                            .await
                            .map_err(|e| Failure {
                                code: exit::INTERNAL,
                                message: e.to_string(),
                            })?;
                    let mut entries = Vec::new();
                    let mut after = 0;
                    loop {
                        let page =
                            store
                                .audit_entries(after, 1_000)
                                .await
                                .map_err(|e| Failure {
                                    code: exit::INTERNAL,
                                    message: e.to_string(),
                                })?;
                        let Some(last) = page.last() else { break };
                        after = last.seq;
                        entries.extend(page);
                    }
                    store.close().await;
                    entries
                }
                (None, None) => connect.client()?.audit_all().await?,
            };
            report_chain(&entries, anchor, connect.json)
        }
    }
}

fn read_export(path: &Path) -> Result<Vec<AuditEntry>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|e| Failure {
                code: exit::EXTENSION_FAILED,
                message: format!(
                    "{} line {}: not an audit entry: {e}",
                    path.display(),
                    index + 1
                ),
            })
        })
        .collect()
}

/// Exit 0 when the chain holds, 1 when it is broken (naming the first bad entry).
fn report_chain(entries: &[AuditEntry], anchor: Option<Anchor>, json: bool) -> Result<u8, Failure> {
    match verify_chain(entries, anchor) {
        Ok(head) => {
            if json {
                print_json(
                    &serde_json::json!({"ok": true, "entries": head.entries, "head": head}),
                )?;
            } else {
                println!(
                    "audit log intact: {} entries; anchor for later checks: {}:{}",
                    head.entries, head.entries, head.last_hash
                );
            }
            Ok(exit::OK)
        }
        Err(broken) => {
            if json {
                print_json(
                    &serde_json::json!({"ok": false, "first_bad_entry": broken.seq, "problem": broken}),
                )?;
            } else {
                println!("audit log BROKEN at entry {}: {broken}", broken.seq);
            }
            Ok(exit::EXTENSION_FAILED)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Store a new version of a secret. The value is read from a file or standard input,
    /// never from the command line (it would show in `ps` and shell history).
    Set {
        name: String,
        #[arg(long)]
        tenant: String,
        /// A file holding the value; without it, standard input.
        #[arg(long)]
        value_file: Option<PathBuf>,
    },
    /// List a tenant's secrets: names and versions, never values.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Delete every version of a secret.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
    },
}

pub async fn secret(args: SecretArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    match args.command {
        SecretCommand::Set {
            name,
            tenant,
            value_file,
        } => {
            let mut value = match &value_file {
                Some(path) => std::fs::read(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?,
                None => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                        .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
                    bytes
                }
            };
            // A trailing newline from `echo` or an editor is not part of a secret.
            while value.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                value.pop();
            }
            let info = client.set_secret(&tenant, &name, &value).await?;
            if args.connect.json {
                print_json(&info)?;
            } else {
                println!("stored {tenant}/{} version {}", info.name, info.version);
            }
        }
        SecretCommand::List { tenant } => {
            let secrets = client.secrets(&tenant).await?;
            if args.connect.json {
                print_json(&secrets)?;
            } else {
                for secret in secrets {
                    println!(
                        "{}\tversion {}\t{}",
                        secret.name, secret.version, secret.created_by
                    );
                }
            }
        }
        SecretCommand::Delete { name, tenant } => {
            client.delete_secret(&tenant, &name).await?;
            println!("deleted {tenant}/{name}");
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Show a tenant's data keys and the re-encryption left after a rotation.
    Status {
        #[arg(long)]
        tenant: String,
    },
    /// Start new versions of a tenant's data keys; values move over in the background.
    Rotate {
        #[arg(long)]
        tenant: String,
    },
    /// Replace the server's token-signing key (platform administrators): new tokens are
    /// signed by the new key; the old one stays in the JWKS until its tokens have expired.
    RotateSigning,
    /// Destroy one key-value namespace of a tenant: its values and its data keys.
    Destroy {
        #[arg(long)]
        tenant: String,
        namespace: String,
        #[arg(long)]
        yes: bool,
    },
}

pub async fn keys(args: KeysArgs) -> Result<u8, Failure> {
    let client = args.connect.client()?;
    let status = match args.command {
        KeysCommand::Status { tenant } => client.keys(&tenant).await?,
        KeysCommand::Rotate { tenant } => client.rotate_keys(&tenant).await?,
        KeysCommand::RotateSigning => {
            let rotation = client.rotate_signing_key().await?;
            if args.connect.json {
                print_json(&rotation)?;
            } else {
                println!(
                    "token-signing key {} in force; {} retired, published until {}",
                    rotation.kid,
                    rotation.retired,
                    palisade_policy::format_time(rotation.retired_published_until_s)
                );
            }
            return Ok(exit::OK);
        }
        KeysCommand::Destroy {
            tenant,
            namespace,
            yes,
        } => {
            if !yes {
                return Err(Failure::usage(format!(
                    "destroying {tenant}/{namespace} deletes its values and keys for good; add --yes"
                )));
            }
            let destroyed = client.destroy_namespace(&tenant, &namespace).await?;
            println!(
                "destroyed {tenant}/{namespace}: {} values",
                destroyed.values
            );
            return Ok(exit::OK);
        }
    };
    if args.connect.json {
        print_json(&status)?;
    } else {
        for key in &status.versions {
            println!(
                "{}\tversion {}\t{} values\twrapped by {}",
                key.scope, key.version, key.sealed_values, key.kek_id
            );
        }
        println!("values still under older versions: {}", status.stale_values);
    }
    Ok(exit::OK)
}

/// Exit 0 and the claims when the token verifies; 1 and the reason when it does not.
async fn verify_token(
    connect: &ConnectArgs,
    token: &str,
    audience: Option<&str>,
) -> Result<u8, Failure> {
    let token = if token == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
        text.trim().to_owned()
    } else {
        token.to_owned()
    };
    let client = connect.anonymous()?;
    let keys = client.jwks().await?;
    let now = palisade_policy::now_unix();
    match palisade_egress::tokens::verify(&token, &keys, audience, now) {
        Ok(claims) => {
            print_json(&claims)?;
            Ok(exit::OK)
        }
        Err(error) => {
            println!("token does NOT verify: {error}");
            Ok(exit::EXTENSION_FAILED)
        }
    }
}
