//! Typed errors. Each variant's doc comment is its message.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Layer;

/// Why a jail could not be built or watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JailError {
    /// A layer cannot be applied on this host (strict mode).
    #[error("confinement layer `{layer}` is unavailable: {reason}; to enable it: {how_to_enable}")]
    LayerUnavailable {
        /// The layer.
        layer: Layer,
        /// What is missing.
        reason: String,
        /// How an operator enables it.
        how_to_enable: String,
    },
    /// A layer failed while being applied.
    #[error("confinement layer `{layer}` failed: {message}")]
    Setup {
        /// The layer.
        layer: Layer,
        /// What failed (step and errno).
        message: String,
    },
    /// The configuration is invalid.
    #[error("invalid jail configuration: {0}")]
    InvalidConfig(String),
    /// The launcher binary was not found.
    #[error(
        "the jail launcher `palisade-jail-launcher` was not found (looked at {searched:?}); build it with `cargo build -p palisade-jail` or set PALISADE_JAIL_LAUNCHER"
    )]
    LauncherNotFound {
        /// Paths tried.
        searched: Vec<PathBuf>,
    },
    /// The program could not be executed inside the jail.
    #[error("exec of {program} inside the jail failed: {message}")]
    Exec {
        /// The program.
        program: PathBuf,
        /// errno text.
        message: String,
    },
    /// The launcher broke the protocol or died.
    #[error("jail launcher protocol error: {0}")]
    Protocol(String),
    /// Installing a seccomp filter failed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// An I/O error in the supervisor or launcher.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl JailError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        JailError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The layer this error is about, if any.
    pub fn layer(&self) -> Option<Layer> {
        match self {
            JailError::LayerUnavailable { layer, .. } | JailError::Setup { layer, .. } => {
                Some(*layer)
            }
            JailError::Seccomp(_) => Some(Layer::Seccomp),
            _ => None,
        }
    }
}

/// [`JailError`] as it crosses the launcher's pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireError {
    LayerUnavailable {
        layer: Layer,
        reason: String,
        how_to_enable: String,
    },
    Setup {
        layer: Layer,
        message: String,
    },
    InvalidConfig {
        message: String,
    },
    Exec {
        program: PathBuf,
        message: String,
    },
    Other {
        message: String,
    },
}

impl From<&JailError> for WireError {
    fn from(e: &JailError) -> Self {
        match e {
            JailError::LayerUnavailable {
                layer,
                reason,
                how_to_enable,
            } => WireError::LayerUnavailable {
                layer: *layer,
                reason: reason.clone(),
                how_to_enable: how_to_enable.clone(),
            },
            JailError::Setup { layer, message } => WireError::Setup {
                layer: *layer,
                message: message.clone(),
            },
            JailError::InvalidConfig(m) => WireError::InvalidConfig { message: m.clone() },
            JailError::Exec { program, message } => WireError::Exec {
                program: program.clone(),
                message: message.clone(),
            },
            other => WireError::Other {
                message: other.to_string(),
            },
        }
    }
}

impl From<WireError> for JailError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::LayerUnavailable {
                layer,
                reason,
                how_to_enable,
            } => JailError::LayerUnavailable {
                layer,
                reason,
                how_to_enable,
            },
            WireError::Setup { layer, message } => JailError::Setup { layer, message },
            WireError::InvalidConfig { message } => JailError::InvalidConfig(message),
            WireError::Exec { program, message } => JailError::Exec { program, message },
            WireError::Other { message } => JailError::Protocol(message),
        }
    }
}
