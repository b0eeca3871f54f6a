//! What the runtime reports about itself: the provenance of each decision,
//! reload events, and a serializable status snapshot for `vigil status` and
//! the admin API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::PolicyConfig;
use super::engine::{CompileSource, Footprint};
use super::file::{Limits, Permissions};
use super::memory::KvMemory;
use super::types::{Action, Role};

/// A decision with where it came from, how long it took, the binding of
/// the policy version that made it, and what the call saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision<T> {
    pub value: T,
    pub served_by: ServedBy,
    #[serde(with = "super::types::millis")]
    pub took: Duration,
    /// Actions the plugin asked for that its policy file does not permit;
    /// they are not in `value` and never reach the browser.
    pub refused: Vec<Action>,
    /// The binding of the policy version that answered (its interval and
    /// permissions): what acts on the decision needs no other lookup.
    pub binding: Binding,
    pub record: CallRecord,
}

/// What one call saw and left, beyond its input and answer: enough to
/// make the same call again (see the journal and `vigil policy replay`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallRecord {
    /// The call's clock, milliseconds since the Unix epoch; every clock
    /// the policy read during the call said this.
    pub now_ms: u64,
    /// The `[config]` the policy read (empty for the built-in defaults).
    #[serde(serialize_with = "shared")]
    pub config: Arc<PolicyConfig>,
    /// The policy's memory of the session before the call.
    pub memory_before: KvMemory,
    /// The memory the call left, when it changed it (a failed call never
    /// does).
    pub memory_after: Option<KvMemory>,
    /// Full hex sha256 of the plugin asked and of its policy file (`None`
    /// for the built-in defaults).
    #[serde(serialize_with = "shared_opt")]
    pub plugin_sha256: Option<Arc<str>>,
    #[serde(serialize_with = "shared_opt")]
    pub file_sha256: Option<Arc<str>>,
}

fn shared<T: Serialize + ?Sized, S: serde::Serializer>(
    v: &Arc<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    (**v).serialize(s)
}

fn shared_opt<T: Serialize + ?Sized, S: serde::Serializer>(
    v: &Option<Arc<T>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

/// Which policy a decision came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The policy file ("policies/activity.toml").
    pub file: PathBuf,
    /// The plugin as resolved from the file.
    pub plugin: PathBuf,
    /// First 12 hex digits of the plugin's sha256.
    pub sha256: String,
}

/// Who answered a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ServedBy {
    /// The plugin bound by a policy file answered.
    Policy(PolicyRef),
    /// No policy file binds this session and role: Vigil's built-in
    /// defaults (the seed behaviour) answered.
    BuiltIn,
    /// The bound plugin failed; the role's safe fallback answered.
    Fallback {
        policy: PolicyRef,
        cause: FallbackCause,
    },
}

impl ServedBy {
    pub fn is_fallback(&self) -> bool {
        matches!(self, ServedBy::Fallback { .. })
    }
}

impl std::fmt::Display for ServedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedBy::Policy(p) => write!(
                f,
                "{} ({} {})",
                p.file.display(),
                p.plugin.display(),
                p.sha256
            ),
            ServedBy::BuiltIn => f.write_str("built-in defaults"),
            ServedBy::Fallback { policy, cause } => {
                write!(f, "fallback for {} ({cause})", policy.file.display())
            }
        }
    }
}

/// Why a plugin's answer was not used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FallbackCause {
    Trap {
        message: String,
    },
    Timeout {
        #[serde(with = "super::types::millis")]
        limit: Duration,
    },
    MemoryLimit {
        limit_bytes: u64,
    },
    InvalidAnswer {
        reason: String,
    },
    /// The blocking task running the call was lost (the runtime is
    /// shutting down).
    Interrupted,
}

impl std::fmt::Display for FallbackCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FallbackCause::Trap { message } => write!(f, "trap: {message}"),
            FallbackCause::Timeout { limit } => write!(f, "timeout after {} ms", limit.as_millis()),
            FallbackCause::MemoryLimit { limit_bytes } => {
                write!(f, "memory cap of {} MiB", limit_bytes >> 20)
            }
            FallbackCause::InvalidAnswer { reason } => write!(f, "invalid answer: {reason}"),
            FallbackCause::Interrupted => f.write_str("call interrupted"),
        }
    }
}

/// What the host uses for one session and role.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Binding {
    pub role: Role,
    /// The policy file that binds the session, or `None` for the built-in
    /// defaults.
    pub policy: Option<PolicyRef>,
    /// How often to call (`None` for restore, which runs once per start).
    #[serde(with = "super::types::millis::option")]
    pub interval: Option<Duration>,
    pub limits: Limits,
    pub permissions: Permissions,
}

/// One outcome of a reload, sent to subscribers as it happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReloadEvent {
    /// A new or changed policy file (or plugin) passed every check and now
    /// serves.
    Accepted {
        file: PathBuf,
        role: Role,
        plugin: PathBuf,
        sha256: String,
        compiled_from: CompileSource,
    },
    /// A new or changed policy file (or plugin) was refused; the previous
    /// version, if any, keeps serving.
    Rejected {
        file: PathBuf,
        reason: String,
        /// Short sha256 of the plugin still serving this file, if any.
        still_serving: Option<String>,
    },
    /// The policy file is gone: its sessions fall back to other files or
    /// the built-in defaults.
    Removed { file: PathBuf },
}

impl ReloadEvent {
    pub fn file(&self) -> &std::path::Path {
        match self {
            ReloadEvent::Accepted { file, .. }
            | ReloadEvent::Rejected { file, .. }
            | ReloadEvent::Removed { file } => file,
        }
    }
}

impl std::fmt::Display for ReloadEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadEvent::Accepted {
                file,
                role,
                plugin,
                sha256,
                ..
            } => write!(
                f,
                "{}: now serving {role} with {} (sha256 {sha256})",
                file.display(),
                plugin.display()
            ),
            ReloadEvent::Rejected {
                file,
                reason,
                still_serving,
            } => match still_serving {
                Some(sha) => write!(
                    f,
                    "{}: refused, previous version {sha} keeps serving: {reason}",
                    file.display()
                ),
                None => write!(f, "{}: refused: {reason}", file.display()),
            },
            ReloadEvent::Removed { file } => {
                write!(
                    f,
                    "{}: removed; its sessions use the built-in defaults",
                    file.display()
                )
            }
        }
    }
}

/// A loaded policy file, as shown in status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyInfo {
    pub file: PathBuf,
    pub role: Role,
    pub plugin: PathBuf,
    pub sha256: String,
    pub sessions: Vec<String>,
    pub priority: i64,
    #[serde(with = "super::types::millis::option")]
    pub interval: Option<Duration>,
    pub limits: Limits,
    /// What a fresh instance of the plugin costs (measured at load).
    pub footprint: Footprint,
    pub permissions: Permissions,
    /// Milliseconds since the Unix epoch (runtime clock).
    pub loaded_at_ms: u64,
}

/// A refused policy file: stays until a good reload of that file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub file: PathBuf,
    pub reason: String,
    pub at_ms: u64,
    pub still_serving: Option<String>,
}

/// The outcome of the most recent reload that changed anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    pub at_ms: u64,
    pub events: Vec<ReloadEvent>,
}

/// Everything the runtime can say about its policies.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyStatus {
    /// The watched folder (or file, or bare plugin).
    pub source: PathBuf,
    pub policies: Vec<PolicyInfo>,
    pub rejected: Vec<Rejection>,
    pub last_reload: Option<ReloadSummary>,
    /// The last [`RELOAD_HISTORY`] reloads that changed anything, newest
    /// first (the first is `last_reload`).
    pub reload_history: Vec<ReloadSummary>,
}

/// Reloads kept for [`PolicyStatus::reload_history`].
pub const RELOAD_HISTORY: usize = 20;
