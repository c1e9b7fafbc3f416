//! `palisade policy validate | diff | apply | history | revert | explain`, and the
//! `--policy FILE` option of `run` and `test`. Works on local files and a local store
//! directory, or, with `--server`, on a Palisade server's policy layers (`diff`, `apply`,
//! `history`, `revert`): documents are validated here first, then on the server, which
//! stores, audits and enforces them.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use palisade_api::{PolicyChange, PolicyVersion};
use palisade_client::{Client, ClientError, PolicyLayer};
use palisade_model::Manifest;
use palisade_policy::store::{
    self, Applied, ChangeKind, ChangeMeta, DirStore, PolicyStore, VersionRecord,
};
use palisade_policy::{
    Action, CallContext, Deployment, DeploymentImpact, LayerDiff, PolicyDocument, PolicyEngine,
    PolicyError, Principal, Resource, Scope, StoreError, TenantId,
};

use crate::remote::{ConnectArgs, Failure};
use crate::{exit, load};

/// `explain` exits with this when the answer is deny.
pub const DENIED: u8 = 1;

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file (TOML, limits, Cedar schema) and dry-run it against deployed
    /// extensions.
    Validate(ValidateArgs),
    /// Show what a policy file changes against the version in force, or against another file.
    Diff(DiffArgs),
    /// Validate a policy file and store it as the next version of its layer.
    Apply(ApplyArgs),
    /// List the versions of a layer (`baseline` or `tenant:NAME`).
    History(HistoryArgs),
    /// Store an earlier version of a layer again as its newest version.
    Revert(RevertArgs),
    /// Answer allow or deny, with the deciding policies, for an extension, action and resource.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct StoreArgs {
    /// The policy store directory.
    #[arg(
        long = "store",
        env = "PALISADE_POLICY_STORE",
        default_value = ".palisade/policies"
    )]
    dir: PathBuf,
}

/// `--server`: the server's layers instead of the local store. Explicit on purpose (no
/// PALISADE_SERVER here): a shell set up for the other server commands must not turn a
/// local policy experiment into a production change.
#[derive(Debug, Clone, clap::Args)]
struct ServerArgs {
    /// Work on this Palisade server's policy layers instead of the local store directory
    /// (`--store` and PALISADE_POLICY_STORE are then not used).
    #[arg(long)]
    server: Option<String>,
    /// An API token for --server (prefer PALISADE_TOKEN or --token-file).
    #[arg(long, env = "PALISADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token for --server.
    #[arg(long, conflicts_with = "token", requires = "server")]
    token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// --server with a private certificate.
    #[arg(long, env = "PALISADE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The server's client when `--server` is given.
    fn client(&self) -> Option<Result<Client, Failure>> {
        let server = self.server.clone()?;
        Some(
            ConnectArgs::to_server(
                server,
                self.token.clone(),
                self.token_file.clone(),
                self.ca_file.clone(),
            )
            .client(),
        )
    }
}

#[derive(Debug, Clone, clap::Args)]
struct DeployedArgs {
    /// A deployed extension to dry-run against, as TENANT=PATH (an extension directory or its
    /// palisade.toml). Repeatable.
    #[arg(long = "deployed", value_parser = parse_deployed)]
    deployed: Vec<(TenantId, PathBuf)>,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The policy file.
    file: PathBuf,
    #[command(flatten)]
    deployed: DeployedArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The new policy file.
    file: PathBuf,
    /// The old policy file; without it, the version in force in the store.
    against: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// The policy file.
    file: PathBuf,
    /// Why this change is made (recorded in the history and the audit log).
    #[arg(long)]
    reason: String,
    /// Who makes the change; defaults to $USER.
    #[arg(long, env = "USER", default_value = "unknown")]
    author: String,
    #[command(flatten)]
    deployed: DeployedArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct HistoryArgs {
    /// `baseline` or `tenant:NAME`.
    #[arg(value_parser = parse_scope)]
    scope: Scope,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RevertArgs {
    /// `baseline` or `tenant:NAME`.
    #[arg(value_parser = parse_scope)]
    scope: Scope,
    /// The version to restore.
    #[arg(long)]
    to: u64,
    /// Why (recorded in the history and the audit log).
    #[arg(long)]
    reason: String,
    /// Who makes the change; defaults to $USER.
    #[arg(long, env = "USER", default_value = "unknown")]
    author: String,
    #[command(flatten)]
    deployed: DeployedArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// The extension, as TENANT/NAME or TENANT/NAME@VERSION.
    #[arg(value_parser = parse_principal)]
    extension: Principal,
    /// http:request, kv:read, kv:write, secret:use, log:write or config:read.
    #[arg(value_parser = parse_action)]
    action: Action,
    /// A URL, kv:NAME, secret:NAME, log or config:KEY (kv:TENANT/NAME for another tenant's).
    resource: String,
    /// For a URL: the address the connection would go to.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// For a URL: the HTTP method.
    #[arg(long)]
    method: Option<String>,
    /// Decide at this Unix time: the layers in force then, and `context.time`.
    #[arg(long)]
    at: Option<i64>,
    /// Also apply this extension manifest's request (directory or palisade.toml).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Use these policy files instead of the store's versions of their layers. Repeatable.
    #[arg(long = "policy")]
    policies: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_deployed(text: &str) -> Result<(TenantId, PathBuf), String> {
    let (tenant, path) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not TENANT=PATH"))?;
    Ok((
        TenantId::new(tenant).map_err(|e| e.to_string())?,
        PathBuf::from(path),
    ))
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text).ok_or_else(|| format!("`{text}` is not `baseline` or `tenant:NAME`"))
}

fn parse_principal(text: &str) -> Result<Principal, String> {
    Principal::parse(text).map_err(|e| e.to_string())
}

fn parse_action(text: &str) -> Result<Action, String> {
    text.parse()
        .map_err(|e: palisade_policy::RequestError| e.to_string())
}

pub async fn policy(args: PolicyArgs) -> anyhow::Result<u8> {
    match args.command {
        PolicyCommand::Validate(args) => validate(&args),
        PolicyCommand::Diff(args) => match args.server.client() {
            Some(client) => Ok(on_server(client, args.json, |c| diff_remote(&args, c)).await),
            None => diff(&args),
        },
        PolicyCommand::Apply(args) => match args.server.client() {
            Some(client) => Ok(on_server(client, args.json, |c| apply_remote(&args, c)).await),
            None => apply(&args),
        },
        PolicyCommand::History(args) => match args.server.client() {
            Some(client) => Ok(on_server(client, args.json, |c| history_remote(&args, c)).await),
            None => history(&args),
        },
        PolicyCommand::Revert(args) => match args.server.client() {
            Some(client) => Ok(on_server(client, args.json, |c| revert_remote(&args, c)).await),
            None => revert(&args),
        },
        PolicyCommand::Explain(args) => explain(&args),
    }
}

/// Prints a policy error (JSON or text) and returns its exit status.
fn invalid(error: &PolicyError, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::json!({"valid": false, "error": error.to_json()})
        );
    } else {
        eprintln!("error: {error}");
    }
    if matches!(error, PolicyError::Internal(_)) {
        exit::INTERNAL
    } else {
        exit::LOAD_FAILED
    }
}

fn store_failed(error: &StoreError, json: bool) -> u8 {
    if let StoreError::Invalid(error) = error {
        return invalid(error, json);
    }
    let kind = match error {
        StoreError::Conflict { .. } => "conflict",
        StoreError::NoSuchVersion { .. } => "no_such_version",
        StoreError::Corrupt { .. } => "corrupt_store",
        _ => "store_io",
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"error": {"kind": kind, "message": error.to_string()}})
        );
    } else {
        eprintln!("error: {error}");
    }
    match error {
        StoreError::Conflict { .. } => exit::OVERLOADED,
        StoreError::NoSuchVersion { .. } => exit::USAGE,
        _ => exit::INTERNAL,
    }
}

fn read_deployments(args: &DeployedArgs) -> Result<Vec<Deployment>, String> {
    args.deployed
        .iter()
        .map(|(tenant, path)| {
            read_manifest(path).map(|manifest| Deployment::new(tenant.clone(), manifest))
        })
        .collect()
}

fn read_manifest(path: &Path) -> Result<Manifest, String> {
    let path = load::manifest_path(path);
    let bytes = load::read_capped(&path, palisade_model::manifest::MAX_MANIFEST_BYTES as u64)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    Manifest::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn usage_error(message: &str) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

fn impact_text(impacts: &[DeploymentImpact]) -> String {
    let mut out = String::new();
    for impact in impacts {
        out.push_str(&format!("{}:\n", impact.extension));
        for flip in &impact.newly_denied {
            out.push_str(&format!(
                "  newly denied  {} {}\n",
                flip.action, flip.resource
            ));
        }
        for flip in &impact.newly_allowed {
            out.push_str(&format!(
                "  newly allowed {} {}\n",
                flip.action, flip.resource
            ));
        }
        for limit in &impact.limits {
            out.push_str(&format!(
                "  limit {}: {}\n",
                limit.limit.as_str(),
                limit.text
            ));
        }
    }
    if impacts.is_empty() {
        out.push_str("no deployed extension is affected\n");
    }
    out
}

/// The engine in force (store heads, shipped baseline if none) and the same with `layer`
/// installed: the dry run's before and after.
fn before_after(
    store: &DirStore,
    layer: &palisade_policy::CompiledLayer,
) -> Result<(PolicyEngine, PolicyEngine), StoreError> {
    let before = store::engine_at(store, None)?;
    let mut after = store::engine_at(store, None)?;
    after.install(layer.clone());
    Ok((before, after))
}

fn validate(args: &ValidateArgs) -> anyhow::Result<u8> {
    let layer = match PolicyDocument::load(&args.file).and_then(|d| d.compile()) {
        Ok(layer) => layer,
        Err(error) => return Ok(invalid(&error, args.json)),
    };
    let deployments = match read_deployments(&args.deployed) {
        Ok(d) => d,
        Err(message) => return Ok(usage_error(&message)),
    };
    let store = DirStore::new(&args.store.dir);
    let (before, after) = match before_after(&store, &layer) {
        Ok(engines) => engines,
        Err(error) => return Ok(store_failed(&error, args.json)),
    };
    let impact = palisade_policy::dry_run(&before, &after, &deployments, &CallContext::now());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "valid": true,
                "scope": layer.scope(),
                "policies": layer.policy_ids(),
                "limits": layer.document().limits,
                "impact": impact,
            })
        );
    } else {
        println!(
            "{}: valid {} policy, {} Cedar policies, {} limits",
            args.file.display(),
            layer.scope(),
            layer.policy_ids().len(),
            layer.document().limits.iter().count()
        );
        if !deployments.is_empty() {
            print!("{}", impact_text(&impact));
        }
    }
    Ok(exit::OK)
}

fn diff(args: &DiffArgs) -> anyhow::Result<u8> {
    let layer = match PolicyDocument::load(&args.file).and_then(|d| d.compile()) {
        Ok(layer) => layer,
        Err(error) => return Ok(invalid(&error, args.json)),
    };
    let (old, against) = match &args.against {
        Some(path) => match PolicyDocument::load(path).and_then(|d| d.compile()) {
            Ok(old) => (Some(old), path.display().to_string()),
            Err(error) => return Ok(invalid(&error, args.json)),
        },
        None => {
            let store = DirStore::new(&args.store.dir);
            match store.head(layer.scope()).and_then(|h| {
                h.map(|r| store::compile_record(&r).map(|l| (l, r.version)))
                    .transpose()
            }) {
                Ok(Some((old, version))) => {
                    (Some(old), format!("{} version {version}", layer.scope()))
                }
                Ok(None) if layer.scope() == &Scope::Baseline => match PolicyEngine::shipped() {
                    Ok(engine) => (
                        Some(engine.baseline().clone()),
                        "the shipped baseline".into(),
                    ),
                    Err(error) => return Ok(invalid(&error, args.json)),
                },
                Ok(None) => (None, "nothing (no stored version)".into()),
                Err(error) => return Ok(store_failed(&error, args.json)),
            }
        }
    };
    Ok(print_diff(&layer, old.as_ref(), &against, args.json))
}

fn print_diff(
    layer: &palisade_policy::CompiledLayer,
    old: Option<&palisade_policy::CompiledLayer>,
    against: &str,
    json: bool,
) -> u8 {
    let diff = LayerDiff::between(old, layer);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "scope": layer.scope(),
                "against": against,
                "changed": !diff.is_empty(),
                "diff": diff,
                "text": diff.to_string(),
            })
        );
    } else {
        println!("{} against {against}:", layer.scope());
        print!("{diff}");
    }
    exit::OK
}

fn applied_output(applied: &Applied, impact: &[DeploymentImpact], json: bool) -> u8 {
    match applied {
        Applied::Stored { record, .. } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "applied": true,
                        "scope": record.scope,
                        "version": record.version,
                        "sha256": record.sha256,
                        "diff": record.diff,
                        "impact": impact,
                    })
                );
            } else {
                println!("{} version {} stored", record.scope, record.version);
                print!("{}", record.diff);
                print!("{}", impact_text(impact));
            }
        }
        Applied::Unchanged { version } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"applied": false, "unchanged": true, "version": version})
                );
            } else {
                println!("unchanged: identical to version {version}; nothing stored");
            }
        }
    }
    exit::OK
}

fn meta(author: &str, reason: &str) -> ChangeMeta {
    ChangeMeta {
        author: author.to_owned(),
        reason: reason.to_owned(),
        time: palisade_policy::now_unix(),
    }
}

fn apply(args: &ApplyArgs) -> anyhow::Result<u8> {
    if args.reason.trim().is_empty() {
        return Ok(usage_error("--reason must say why"));
    }
    let document = match PolicyDocument::load(&args.file) {
        Ok(document) => document,
        Err(error) => return Ok(invalid(&error, args.json)),
    };
    let layer = match document.compile() {
        Ok(layer) => layer,
        Err(error) => return Ok(invalid(&error, args.json)),
    };
    let deployments = match read_deployments(&args.deployed) {
        Ok(d) => d,
        Err(message) => return Ok(usage_error(&message)),
    };
    let store = DirStore::new(&args.store.dir);
    let result = before_after(&store, &layer).and_then(|(before, after)| {
        let impact = palisade_policy::dry_run(&before, &after, &deployments, &CallContext::now());
        store::apply(&store, &document, &meta(&args.author, &args.reason)).map(|a| (a, impact))
    });
    Ok(match result {
        Ok((applied, impact)) => applied_output(&applied, &impact, args.json),
        Err(error) => store_failed(&error, args.json),
    })
}

fn revert(args: &RevertArgs) -> anyhow::Result<u8> {
    if args.reason.trim().is_empty() {
        return Ok(usage_error("--reason must say why"));
    }
    let deployments = match read_deployments(&args.deployed) {
        Ok(d) => d,
        Err(message) => return Ok(usage_error(&message)),
    };
    let store = DirStore::new(&args.store.dir);
    let result = (|| {
        let before = store::engine_at(&store, None)?;
        let applied = store::revert(
            &store,
            &args.scope,
            args.to,
            &meta(&args.author, &args.reason),
        )?;
        let after = store::engine_at(&store, None)?;
        let impact = palisade_policy::dry_run(&before, &after, &deployments, &CallContext::now());
        Ok::<_, StoreError>((applied, impact))
    })();
    Ok(match result {
        Ok((applied, impact)) => applied_output(&applied, &impact, args.json),
        Err(error) => store_failed(&error, args.json),
    })
}

fn history_json(record: &VersionRecord) -> serde_json::Value {
    serde_json::json!({
        "version": record.version,
        "author": record.author,
        "time": record.time,
        "reason": record.reason,
        "change": record.change,
        "restored": record.restored,
        "sha256": record.sha256,
        "diff": record.diff,
    })
}

fn history(args: &HistoryArgs) -> anyhow::Result<u8> {
    let store = DirStore::new(&args.store.dir);
    match store.history(&args.scope) {
        Ok(records) => Ok(print_history(&args.scope, &records, args.json)),
        Err(error) => Ok(store_failed(&error, args.json)),
    }
}

fn print_history(scope: &Scope, records: &[VersionRecord], json: bool) -> u8 {
    if json {
        let versions: Vec<_> = records.iter().map(history_json).collect();
        println!(
            "{}",
            serde_json::json!({"scope": scope, "versions": versions})
        );
    } else if records.is_empty() {
        println!("{scope}: no stored versions");
    } else {
        for record in records {
            let restored = record
                .restored
                .map(|v| format!(" (restores version {v})"))
                .unwrap_or_default();
            println!(
                "version {}  {}  {}  {}{restored}",
                record.version,
                palisade_policy::format_time(record.time),
                record.author,
                record.reason
            );
            for line in record.diff.lines() {
                println!("    {line}");
            }
        }
    }
    exit::OK
}

// ---- on a server (`--server`) ----

/// `--deployed` dry-runs against the local store's layers, which are not the server's.
const DEPLOYED_IS_LOCAL: &str =
    "--deployed dry-runs against the local store; it does not go with --server";

/// Runs one server call and turns its failure into the CLI's message and exit status (the
/// same statuses as the other server commands: 69 unreachable, 77 bad token or denied).
async fn on_server<F, Fut>(client: Result<Client, Failure>, json: bool, call: F) -> u8
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<u8, ClientError>>,
{
    let (kind, failure) = match client {
        Ok(client) => match call(client).await {
            Ok(code) => return code,
            Err(error) => {
                let kind = match &error {
                    ClientError::Api { kind, .. } => kind.clone(),
                    ClientError::Unreachable { .. } => "unreachable".into(),
                    ClientError::BadUrl { .. } | ClientError::Tls(_) => "usage".into(),
                    ClientError::Unexpected { .. } => "unexpected_answer".into(),
                };
                (kind, Failure::from(error))
            }
        },
        Err(failure) if failure.code == exit::DENIED => ("unauthenticated".into(), failure),
        Err(failure) => ("usage".into(), failure),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"error": {"kind": kind, "message": failure.message}})
        );
    } else {
        eprintln!("error: {}", failure.message);
    }
    failure.code
}

fn layer_of(scope: &Scope) -> PolicyLayer<'_> {
    match scope {
        Scope::Baseline => PolicyLayer::Baseline,
        Scope::Tenant(tenant) => PolicyLayer::Tenant(tenant.as_str()),
    }
}

fn record_of(version: PolicyVersion) -> VersionRecord {
    VersionRecord {
        scope: version.scope,
        version: version.version,
        author: version.author,
        time: version.time_s,
        reason: version.reason,
        change: if version.change == "revert" {
            ChangeKind::Revert
        } else {
            ChangeKind::Apply
        },
        restored: version.restored,
        sha256: version.sha256,
        diff: version.diff,
        document: version.document,
    }
}

fn server_change_output(scope: &Scope, change: &PolicyChange, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "applied": change.stored,
                "unchanged": !change.stored,
                "scope": scope,
                "version": change.version,
                "diff": change.diff,
            })
        );
    } else if change.stored {
        println!("{scope} version {} stored on the server", change.version);
        print!("{}", change.diff);
    } else {
        println!(
            "unchanged: identical to version {}; nothing stored",
            change.version
        );
    }
    exit::OK
}

async fn diff_remote(args: &DiffArgs, client: Client) -> Result<u8, ClientError> {
    if args.against.is_some() {
        return Ok(usage_error(
            "compare with an old file or with --server's version, not both",
        ));
    }
    let layer = match PolicyDocument::load(&args.file).and_then(|d| d.compile()) {
        Ok(layer) => layer,
        Err(error) => return Ok(invalid(&error, args.json)),
    };
    let server = args.server.server.as_deref().unwrap_or_default();
    // A tenant that does not exist answers `not_found` like one without a policy: ask first,
    // so a misspelt tenant is an error and not a diff against nothing.
    if let Scope::Tenant(tenant) = layer.scope() {
        client.tenant(tenant.as_str()).await?;
    }
    let (old, against) = match client.policy(layer_of(layer.scope())).await {
        Ok(head) => match PolicyDocument::parse(&head.document, None).and_then(|d| d.compile()) {
            Ok(old) => (
                Some(old),
                format!("{} version {} on {server}", layer.scope(), head.version),
            ),
            Err(error) => {
                eprintln!(
                    "error: {} version {} on {server} does not read here ({error}); is this \
                     palisade older than the server?",
                    layer.scope(),
                    head.version
                );
                return Ok(exit::INTERNAL);
            }
        },
        Err(error) if error.kind() == Some("not_found") => {
            (None, format!("nothing (no version on {server})"))
        }
        Err(error) => return Err(error),
    };
    Ok(print_diff(&layer, old.as_ref(), &against, args.json))
}

async fn apply_remote(args: &ApplyArgs, client: Client) -> Result<u8, ClientError> {
    if args.reason.trim().is_empty() {
        return Ok(usage_error("--reason must say why"));
    }
    if !args.deployed.deployed.is_empty() {
        return Ok(usage_error(DEPLOYED_IS_LOCAL));
    }
    // Validated here first, for errors that name the file's own lines; sent self-contained
    // (a `cedar.file` inlined), as the local store keeps it.
    let document = match PolicyDocument::load(&args.file).and_then(|d| d.compile().map(|_| d)) {
        Ok(document) => document,
        Err(error) => return Ok(invalid(&error, args.json)),
    };
    let change = client
        .apply_policy(layer_of(&document.scope), &document.to_toml(), &args.reason)
        .await?;
    Ok(server_change_output(&document.scope, &change, args.json))
}

async fn history_remote(args: &HistoryArgs, client: Client) -> Result<u8, ClientError> {
    let versions = client.policy_versions(layer_of(&args.scope)).await?;
    let records: Vec<VersionRecord> = versions.into_iter().map(record_of).collect();
    Ok(print_history(&args.scope, &records, args.json))
}

async fn revert_remote(args: &RevertArgs, client: Client) -> Result<u8, ClientError> {
    if args.reason.trim().is_empty() {
        return Ok(usage_error("--reason must say why"));
    }
    if !args.deployed.deployed.is_empty() {
        return Ok(usage_error(DEPLOYED_IS_LOCAL));
    }
    let change = client
        .revert_policy(layer_of(&args.scope), args.to, &args.reason)
        .await?;
    Ok(server_change_output(&args.scope, &change, args.json))
}

fn explain(args: &ExplainArgs) -> anyhow::Result<u8> {
    let mut resource = match Resource::parse(&args.resource, &args.extension.tenant) {
        Ok(resource) => resource,
        Err(error) => return Ok(usage_error(&error.to_string())),
    };
    if let (Resource::Host(host), Some(ip)) = (&mut resource, args.ip) {
        host.ip = Some(ip);
    }
    let store = DirStore::new(&args.store.dir);
    let mut engine = match store::engine_at(&store, args.at) {
        Ok(engine) => engine,
        Err(error) => return Ok(store_failed(&error, args.json)),
    };
    for path in &args.policies {
        match PolicyDocument::load(path).and_then(|d| d.compile()) {
            Ok(layer) => engine.install(layer),
            Err(error) => return Ok(invalid(&error, args.json)),
        }
    }
    let context = CallContext {
        time: args.at.unwrap_or_else(palisade_policy::now_unix),
        method: args.method.clone(),
        ..CallContext::default()
    };
    let mut principal = args.extension.clone();
    let decision = match &args.manifest {
        Some(path) => {
            let manifest = match read_manifest(path) {
                Ok(manifest) => manifest,
                Err(message) => return Ok(usage_error(&message)),
            };
            let deployment = Deployment::new(principal.tenant.clone(), manifest);
            principal = deployment.principal();
            engine.authorize_deployment(&deployment, args.action, &resource, &context)
        }
        None => engine.authorize(&principal, args.action, &resource, &context),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "allowed": decision.allowed,
                "extension": principal.to_string(),
                "action": args.action,
                "resource": resource.cedar_ref(),
                "reasons": decision.reasons,
            })
        );
    } else {
        print!("{}", decision.render(&principal, args.action, &resource));
    }
    Ok(if decision.allowed { exit::OK } else { DENIED })
}
