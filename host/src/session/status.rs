//! What an operator sees of one session: state, since when, why, the last
//! backup, the last policy decision, the last probe, and counters for
//! metrics. A snapshot, published by the session's task after every change;
//! readers never wait for the task.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::state::{SessionState, Transition, rfc3339};
use crate::id::SessionId;
use crate::policy::Role;

#[derive(Clone, Debug, Serialize)]
pub struct SessionStatus {
    pub id: SessionId,
    pub url: String,
    pub state: SessionState,
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
    /// Why the session is in its state (the last transition's reason).
    pub reason: String,
    pub browser_pid: Option<u32>,
    pub last_probe: Option<ProbeSummary>,
    pub consecutive_probe_failures: u32,
    pub restarts_last_hour: u32,
    pub last_backup: Option<BackupSummary>,
    /// The last backup attempt's error, cleared by the next success.
    pub last_backup_error: Option<String>,
    pub last_restore: Option<RestoreSummary>,
    pub last_decision: Option<DecisionSummary>,
    /// The last transitions, oldest first (at most 100).
    pub history: Vec<Transition>,
    pub counters: SessionCounters,
    /// In a fleet: the run of this host that owns the session, and the
    /// owner epoch its backups carry.
    pub owner: Option<OwnerSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OwnerSummary {
    pub host: String,
    pub incarnation: String,
    pub epoch: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeSummary {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// `connected`, `needs-login` or `other`.
    pub outcome: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub id: String,
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub size_bytes: u64,
    /// How long the backup took; `None` for one found in the store at start.
    #[serde(with = "opt_millis", rename = "took_ms")]
    pub took: Option<Duration>,
    /// How long the browser was closed for it (quiesce mode).
    #[serde(with = "opt_millis", rename = "downtime_ms")]
    pub downtime: Option<Duration>,
}

/// Where the profile of the current run came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreSource {
    Disk,
    Backup,
    Fresh,
}

impl RestoreSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Backup => "backup",
            Self::Fresh => "fresh",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub source: RestoreSource,
    /// The backup restored, when the source is a backup.
    pub backup: Option<String>,
    #[serde(with = "millis", rename = "took_ms")]
    pub took: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecisionSummary {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub role: Role,
    /// What was decided, in words ("restart-browser (not connected: ...)").
    pub decision: String,
    /// Who decided: the policy file and plugin, built-in defaults, or a
    /// fallback with its cause.
    pub served_by: String,
    pub fallback: bool,
    #[serde(with = "micros", rename = "took_us")]
    pub took: Duration,
}

/// Monotonic counters, for `/metrics`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SessionCounters {
    /// Transitions into each state, indexed like [`SessionState::ALL`].
    pub transitions: [u64; 8],
    pub restarts: u64,
    pub probe_failures: u64,
    pub backups: u64,
    pub backup_failures: u64,
    /// Sum of backup durations, for an average.
    #[serde(with = "millis", rename = "backup_ms_total")]
    pub backup_time_total: Duration,
    pub restores_from_disk: u64,
    pub restores_from_backup: u64,
    pub restores_fresh: u64,
    pub restore_failures: u64,
    #[serde(with = "millis", rename = "restore_ms_total")]
    pub restore_time_total: Duration,
}

impl SessionCounters {
    pub fn transitions_into(&self, state: SessionState) -> u64 {
        SessionState::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.transitions[i])
    }
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }
}

mod micros {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().try_into().unwrap_or(u64::MAX))
    }
}

mod opt_millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::millis::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}
