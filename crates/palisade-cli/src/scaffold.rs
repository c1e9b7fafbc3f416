//! `palisade new`: scaffolds a Rust extension that builds with one cargo command and passes
//! `palisade test` unchanged.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use palisade_model::manifest::ExtensionName;

use crate::exit;

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Name of the extension (lowercase letters, digits, hyphens).
    name: String,
    /// Directory to create the extension in (default: ./<name>).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Path of the `palisade-guest` SDK crate (default: the one in this Palisade checkout).
    #[arg(long, env = "PALISADE_GUEST_SDK")]
    sdk: Option<PathBuf>,
}

const TEMPLATE: [(&str, &str); 6] = [
    (
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../templates/rust/cargo-config.toml.tmpl"),
    ),
    ("src/lib.rs", include_str!("../templates/rust/lib.rs.tmpl")),
    (
        "palisade.toml",
        include_str!("../templates/rust/palisade.toml.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/rust/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/rust/gitignore.tmpl"),
    ),
];

pub fn new(args: &NewArgs) -> anyhow::Result<u8> {
    let name = match ExtensionName::new(&args.name) {
        Ok(name) => name,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(exit::USAGE);
        }
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(name.as_str()));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    let sdk = sdk_path(args.sdk.as_deref())?;
    let crate_name = name.as_str().replace('-', "_");
    for (relative, template) in TEMPLATE {
        let text = template
            .replace("{{name}}", name.as_str())
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk.display().to_string().replace('\\', "/"));
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("Created extension `{name}` in {}", dir.display());
    println!(
        "Next:\n  cd {}\n  cargo build --release\n  palisade test .",
        dir.display()
    );
    Ok(exit::OK)
}

/// The SDK to depend on: the flag, or the `guests/sdk` of the checkout this binary was built from.
fn sdk_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidate = match flag {
        Some(path) => path.to_owned(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/sdk"),
    };
    if !candidate.join("Cargo.toml").is_file() {
        bail!(
            "the palisade-guest SDK was not found at {}; pass --sdk PATH (or set PALISADE_GUEST_SDK)",
            candidate.display()
        );
    }
    candidate
        .canonicalize()
        .with_context(|| format!("resolving {}", candidate.display()))
}
