//! The Landlock layer: read and execute beneath the read-only binds, read and write (never
//! execute) in the scratch tmpfs, nothing else on the filesystem; no TCP bind or connect;
//! abstract unix sockets and signals scoped to the jail. Applied in the jail child, which is
//! single-threaded (on ABI < 8 Landlock restricts only the calling thread; threads created
//! later inherit the domain).

use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::config::{JailConfig, Layer};
use crate::error::JailError;

/// The ABI the layer is written against (6: filesystem, TCP and scopes).
const ABI_USED: ABI = ABI::V6;

fn err(what: &str, e: impl std::fmt::Display) -> JailError {
    JailError::Setup {
        layer: Layer::Landlock,
        message: format!("{what}: {e}"),
    }
}

/// Restricts the calling thread (and its future threads and children).
pub fn restrict(c: &JailConfig) -> Result<(), JailError> {
    let abi = ABI_USED;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| err("handle filesystem access", e))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(|e| err("handle TCP access", e))?
        .scope(Scope::from_all(abi))
        .map_err(|e| err("scope", e))?
        .create()
        .map_err(|e| err("create ruleset", e))?;
    for path in &c.readonly_paths {
        let access = if path.is_dir() {
            AccessFs::from_read(abi)
        } else {
            AccessFs::from_read(abi) & AccessFs::from_file(abi)
        };
        let fd = PathFd::new(path).map_err(|e| err(&format!("open {}", path.display()), e))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| err(&format!("rule for {}", path.display()), e))?;
    }
    if c.scratch_bytes.is_some() && c.layers.mount_ns {
        let scratch = AccessFs::ReadFile
            | AccessFs::WriteFile
            | AccessFs::ReadDir
            | AccessFs::RemoveDir
            | AccessFs::RemoveFile
            | AccessFs::MakeDir
            | AccessFs::MakeReg
            | AccessFs::Truncate;
        let fd = PathFd::new(Path::new("/tmp")).map_err(|e| err("open /tmp", e))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, scratch))
            .map_err(|e| err("rule for /tmp", e))?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| err("landlock_restrict_self", e))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(err(
            "enforcement",
            format!("ruleset only {:?}", status.ruleset),
        ));
    }
    Ok(())
}
