//! Why a policy could not be loaded, checked or watched. Every variant names
//! the file it is about.

use std::path::PathBuf;

use super::types::Role;
use crate::fields::Location;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file is not valid TOML or not a valid policy.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The plugin is not a WebAssembly component wasmtime can compile.
    #[error("{}: plugin {}: not a valid WebAssembly component: {reason}", policy.display(), plugin.display())]
    Compile {
        policy: PathBuf,
        plugin: PathBuf,
        reason: String,
    },
    /// The component does not implement the role's world, or imports
    /// something the host does not give policies.
    #[error("{}: plugin {} does not fit the {role} world: {reason}", policy.display(), plugin.display())]
    WrongWorld {
        policy: PathBuf,
        plugin: PathBuf,
        role: Role,
        reason: String,
    },
    /// The load-time call with made-up facts did not give a valid answer.
    #[error("{}: plugin {} failed its self-check call: {cause}", policy.display(), plugin.display())]
    SelfCheck {
        policy: PathBuf,
        plugin: PathBuf,
        cause: String,
    },
    #[error("cannot set up the policy engine: {0}")]
    Engine(String),
    #[error("{}: cannot list policy files: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch {}: {reason}", path.display())]
    Watch { path: PathBuf, reason: String },
}
