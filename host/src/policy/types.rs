//! The plain Rust side of the policy contract: what the host tells a policy
//! and what a policy answers. Other layers build and read these without
//! touching wasmtime; `wit.rs` converts them to and from the WIT types.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::SessionId;

/// The three things a policy can decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Keeps a connected session looking used (`tick(facts) -> list<action>`).
    Keepalive,
    /// Judges a session's health (`check(facts) -> verdict`).
    Watchdog,
    /// Chooses where a profile comes from (`decide(inventory, backups) -> plan`).
    Restore,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Keepalive, Role::Watchdog, Role::Restore];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Keepalive => "keepalive",
            Role::Watchdog => "watchdog",
            Role::Restore => "restore",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session is in its life, as policies see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    Starting,
    Restoring,
    Launching,
    Connected,
    Degraded,
    NeedsLogin,
    Stopped,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 8] = [
        Self::Starting,
        Self::Restoring,
        Self::Launching,
        Self::Connected,
        Self::Degraded,
        Self::NeedsLogin,
        Self::Stopped,
        Self::Failed,
    ];

    /// The state's name in logs, the API and the WIT ("needs-login").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Restoring => "restoring",
            Self::Launching => "launching",
            Self::Connected => "connected",
            Self::Degraded => "degraded",
            Self::NeedsLogin => "needs-login",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// Past start-up: the session reached a browser state or a final one.
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Starting | Self::Restoring | Self::Launching)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one session, taken just before a keepalive or watchdog call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Facts {
    pub session: SessionId,
    pub state: SessionState,
    #[serde(with = "millis")]
    pub time_in_state: Duration,
    /// Probes that failed in a row; 0 after a successful probe.
    pub consecutive_probe_failures: u32,
    /// Browser restarts during the last 60 minutes.
    pub restarts_last_hour: u32,
    #[serde(with = "millis::option")]
    pub since_activity: Option<Duration>,
    #[serde(with = "millis::option")]
    pub since_backup: Option<Duration>,
    /// What the last probe saw, in words.
    pub last_probe_detail: String,
    /// Since the session was last connected; `None`: not since this host
    /// started it.
    #[serde(with = "millis::option")]
    pub since_connected: Option<Duration>,
    /// Launches in a row in which the browser did not start.
    pub launch_failures: u32,
    /// Critical profile files missing or empty (looked at while the session
    /// is not connected).
    pub missing_critical_files: Vec<String>,
}

impl Facts {
    /// A session that just reached `state`, with nothing else known.
    pub fn new(session: SessionId, state: SessionState) -> Self {
        Facts {
            session,
            state,
            time_in_state: Duration::ZERO,
            consecutive_probe_failures: 0,
            restarts_last_hour: 0,
            since_activity: None,
            since_backup: None,
            last_probe_detail: String::new(),
            since_connected: None,
            launch_failures: 0,
            missing_critical_files: Vec::new(),
        }
    }
}

/// Something a keepalive policy asks the host to do in the page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    MouseMove {
        x: u32,
        y: u32,
    },
    /// A key named as in the DOM's `KeyboardEvent.key` ("Shift").
    KeyPress {
        key: String,
    },
    Focus,
    WakeLock,
    Presence,
    ReloadPage,
    /// Only ever reaches the caller when the policy file grants `run_script`.
    RunScript {
        script: String,
    },
    BackupNow,
    Nothing,
}

impl Action {
    /// The WIT name of the action ("mouse-move").
    pub fn kind(&self) -> &'static str {
        match self {
            Action::MouseMove { .. } => "mouse-move",
            Action::KeyPress { .. } => "key-press",
            Action::Focus => "focus",
            Action::WakeLock => "wake-lock",
            Action::Presence => "presence",
            Action::ReloadPage => "reload-page",
            Action::RunScript { .. } => "run-script",
            Action::BackupNow => "backup-now",
            Action::Nothing => "nothing",
        }
    }

    /// The action's argument as written in scenarios ("200,200", "Shift").
    pub fn argument(&self) -> Option<String> {
        match self {
            Action::MouseMove { x, y } => Some(format!("{x},{y}")),
            Action::KeyPress { key } => Some(key.clone()),
            Action::RunScript { script } => Some(script.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.argument() {
            Some(arg) => write!(f, "{}({arg})", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// A watchdog's opinion of a session; every verdict but `Healthy` says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Verdict {
    Healthy,
    Degraded { reason: String },
    ReloadPage { reason: String },
    RestartBrowser { reason: String },
    RestoreFromBackup { reason: String },
    GiveUp { reason: String },
}

impl Verdict {
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded { .. } => "degraded",
            Verdict::ReloadPage { .. } => "reload-page",
            Verdict::RestartBrowser { .. } => "restart-browser",
            Verdict::RestoreFromBackup { .. } => "restore-from-backup",
            Verdict::GiveUp { .. } => "give-up",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Healthy => "",
            Verdict::Degraded { reason }
            | Verdict::ReloadPage { reason }
            | Verdict::RestartBrowser { reason }
            | Verdict::RestoreFromBackup { reason }
            | Verdict::GiveUp { reason } => reason,
        }
    }

    /// Whether acting on this verdict interrupts the session.
    pub fn is_disruptive(&self) -> bool {
        matches!(
            self,
            Verdict::ReloadPage { .. }
                | Verdict::RestartBrowser { .. }
                | Verdict::RestoreFromBackup { .. }
                | Verdict::GiveUp { .. }
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Healthy => f.write_str("healthy"),
            other => write!(f, "{} ({})", other.kind(), other.reason()),
        }
    }
}

/// Whether a Chromium profile is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    /// No lock files.
    None,
    /// Lock files left by a process that is gone.
    Stale,
    /// A live process holds the profile.
    Held,
}

/// A file or folder whose loss means the login is lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriticalFile {
    /// Relative to the profile root, `/`-separated ("Default/IndexedDB").
    pub path: String,
    pub present: bool,
    /// For a folder: it holds at least one non-empty file.
    pub non_empty: bool,
}

/// What is on disk for a session's profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub exists: bool,
    pub critical_files: Vec<CriticalFile>,
    pub size_bytes: u64,
    pub lock: LockState,
}

impl Inventory {
    /// No profile on disk at all.
    pub fn missing() -> Self {
        Inventory {
            exists: false,
            critical_files: Vec::new(),
            size_bytes: 0,
            lock: LockState::None,
        }
    }

    /// The profile exists, every listed critical file is present and
    /// non-empty, and no live process holds it.
    pub fn is_complete(&self) -> bool {
        self.exists
            && !self.critical_files.is_empty()
            && self.critical_files.iter().all(|f| f.present && f.non_empty)
            && self.lock != LockState::Held
    }
}

/// One backup of a session's profile, as the restore policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupFacts {
    pub id: String,
    #[serde(with = "millis")]
    pub age: Duration,
    pub size_bytes: u64,
    /// Written completely, checksum recorded.
    pub verified: bool,
    /// A restore from it was already tried and failed.
    pub restore_failed: bool,
}

/// What the restore policy chose; each plan says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Plan {
    UseDisk {
        reason: String,
    },
    /// `id` is always one of the backups passed to the policy.
    RestoreBackup {
        id: String,
        reason: String,
    },
    /// An empty profile: the session will need a new login.
    StartFresh {
        reason: String,
    },
    /// Decide again after this long.
    Wait {
        #[serde(with = "millis")]
        after: Duration,
        reason: String,
    },
}

impl Plan {
    pub fn kind(&self) -> &'static str {
        match self {
            Plan::UseDisk { .. } => "use-disk",
            Plan::RestoreBackup { .. } => "restore-backup",
            Plan::StartFresh { .. } => "start-fresh",
            Plan::Wait { .. } => "wait",
        }
    }

    pub fn argument(&self) -> Option<String> {
        match self {
            Plan::RestoreBackup { id, .. } => Some(id.clone()),
            Plan::Wait { after, .. } => Some(format!("{}ms", after.as_millis())),
            _ => None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Plan::UseDisk { reason }
            | Plan::RestoreBackup { reason, .. }
            | Plan::StartFresh { reason }
            | Plan::Wait { reason, .. } => reason,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.argument() {
            Some(arg) => write!(f, "{}({arg}) ({})", self.kind(), self.reason()),
            None => write!(f, "{} ({})", self.kind(), self.reason()),
        }
    }
}

/// Durations as whole milliseconds in JSON.
pub(crate) mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub mod option {
        use std::time::Duration;

        pub fn serialize<S: serde::Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}
