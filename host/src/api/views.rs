//! The JSON bodies the API answers with. They are the API's contract
//! (`docs/openapi.json` describes each), kept apart from the internal
//! types they are built from so that those may change without breaking
//! clients.

use std::collections::BTreeMap;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::archive::Sha256;
use crate::backup::{BackupEntry, BackupId, FailureMark, Manifest, RestoreReport};
use crate::id::SessionId;
use crate::session::state::rfc3339;
use crate::session::{
    BackupSummary, DecisionSummary, OwnerSummary, ProbeSummary, RestoreSummary, SessionCounters,
    SessionState, SessionStatus, Transition,
};
use crate::volume::ProfilePath;

/// `GET /v1/sessions`.
#[derive(Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionSummary>,
}

/// One row of the session list: what an operator checks at a glance.
#[derive(Serialize)]
pub struct SessionSummary {
    pub id: SessionId,
    pub url: String,
    pub state: SessionState,
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
    pub reason: String,
    /// Browser restarts in the last hour.
    pub restarts_last_hour: u32,
    pub last_backup: Option<BackupSummary>,
    pub last_backup_error: Option<String>,
    pub last_decision: Option<DecisionSummary>,
    /// In a fleet: the host (and its run) that owns it, and the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerSummary>,
}

impl From<SessionStatus> for SessionSummary {
    fn from(s: SessionStatus) -> Self {
        Self {
            id: s.id,
            url: s.url,
            state: s.state,
            since: s.since,
            reason: s.reason,
            restarts_last_hour: s.restarts_last_hour,
            last_backup: s.last_backup,
            last_backup_error: s.last_backup_error,
            last_decision: s.last_decision,
            owner: s.owner,
        }
    }
}

/// `GET /v1/sessions/{id}`: everything known about one session.
#[derive(Serialize)]
pub struct SessionDetail {
    pub id: SessionId,
    pub url: String,
    pub state: SessionState,
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
    pub reason: String,
    pub browser_pid: Option<u32>,
    pub last_probe: Option<ProbeSummary>,
    pub consecutive_probe_failures: u32,
    pub restarts_last_hour: u32,
    pub last_backup: Option<BackupSummary>,
    pub last_backup_error: Option<String>,
    pub last_restore: Option<RestoreSummary>,
    pub last_decision: Option<DecisionSummary>,
    /// Oldest first.
    pub history: Vec<Transition>,
    pub counters: Counters,
    /// In a fleet: the host (and its run) that owns it, and the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerSummary>,
}

/// Counts since the host started.
#[derive(Serialize)]
pub struct Counters {
    /// Transitions into each state, by state name.
    pub transitions: BTreeMap<&'static str, u64>,
    pub restarts: u64,
    pub probe_failures: u64,
    pub backups: u64,
    pub backup_failures: u64,
    /// Where each start's profile came from: `disk`, `backup`, `fresh`.
    pub restores: BTreeMap<&'static str, u64>,
    pub restore_failures: u64,
}

impl From<&SessionCounters> for Counters {
    fn from(c: &SessionCounters) -> Self {
        Self {
            transitions: SessionState::ALL
                .iter()
                .map(|s| (s.as_str(), c.transitions_into(*s)))
                .collect(),
            restarts: c.restarts,
            probe_failures: c.probe_failures,
            backups: c.backups,
            backup_failures: c.backup_failures,
            restores: BTreeMap::from([
                ("disk", c.restores_from_disk),
                ("backup", c.restores_from_backup),
                ("fresh", c.restores_fresh),
            ]),
            restore_failures: c.restore_failures,
        }
    }
}

impl From<SessionStatus> for SessionDetail {
    fn from(s: SessionStatus) -> Self {
        Self {
            counters: Counters::from(&s.counters),
            id: s.id,
            url: s.url,
            state: s.state,
            since: s.since,
            reason: s.reason,
            browser_pid: s.browser_pid,
            last_probe: s.last_probe,
            consecutive_probe_failures: s.consecutive_probe_failures,
            restarts_last_hour: s.restarts_last_hour,
            last_backup: s.last_backup,
            last_backup_error: s.last_backup_error,
            last_restore: s.last_restore,
            last_decision: s.last_decision,
            history: s.history,
            owner: s.owner,
        }
    }
}

/// One backup in the store.
#[derive(Serialize)]
pub struct BackupView {
    pub id: BackupId,
    pub created: DateTime<Utc>,
    /// The archive's size in the store.
    pub size_bytes: u64,
    pub sha256: Sha256,
    pub files: u64,
    /// The profile's bytes before compression.
    pub profile_bytes: u64,
    /// The machine that made it.
    pub host: String,
    pub vigil_version: String,
    pub encrypted: bool,
    /// `quiesce` or `live`.
    pub mode: String,
    pub critical: Vec<ProfilePath>,
    /// Written completely with its checksum recorded, and not found
    /// damaged since: a restore may use it.
    pub verified: bool,
    /// Set when a restore or verify found it damaged.
    pub damaged: Option<FailureMark>,
    /// In a fleet: the owner epoch of the host that made it (backups rank
    /// by epoch, then time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl BackupView {
    pub fn new(m: Manifest, damaged: Option<FailureMark>) -> Self {
        Self {
            id: m.id,
            created: m.created,
            size_bytes: m.size,
            sha256: m.sha256,
            files: m.files,
            profile_bytes: m.profile_bytes,
            host: m.host,
            vigil_version: m.vigil_version,
            encrypted: m.encrypted,
            mode: m.mode,
            critical: m.critical,
            verified: damaged.is_none(),
            damaged,
            epoch: m.epoch,
        }
    }
}

impl From<BackupEntry> for BackupView {
    fn from(e: BackupEntry) -> Self {
        Self::new(e.manifest, e.failure)
    }
}

/// `GET /v1/sessions/{id}/backups` and `vigil backups --json`, newest
/// first.
#[derive(Serialize)]
pub struct BackupList {
    pub session: SessionId,
    pub backups: Vec<BackupView>,
}

/// `POST /v1/sessions/{id}/restore`.
#[derive(Serialize)]
pub struct Restored {
    pub session: SessionId,
    /// The backup now in place.
    pub backup: BackupId,
    pub files: u64,
    pub bytes: u64,
    /// Newer backups tried first and found damaged.
    pub skipped: Vec<Skipped>,
}

#[derive(Serialize)]
pub struct Skipped {
    pub backup: BackupId,
    pub reason: String,
}

impl From<RestoreReport> for Restored {
    fn from(r: RestoreReport) -> Self {
        Self {
            session: r.session,
            backup: r.id,
            files: r.files,
            bytes: r.bytes,
            skipped: r
                .skipped
                .into_iter()
                .map(|(backup, reason)| Skipped { backup, reason })
                .collect(),
        }
    }
}

/// `POST /v1/sessions/{id}/restart`.
#[derive(Serialize)]
pub struct Accepted {
    pub session: SessionId,
    pub message: String,
}

/// `GET /v1/sessions/{id}/qr`: the QR code the session's page shows.
#[derive(Serialize)]
pub struct LoginQr {
    pub session: SessionId,
    /// What the code says, as a phone would read it.
    pub text: String,
    /// The code cut out of a screenshot, quiet zone included: a greyscale
    /// PNG, base64.
    pub png: String,
}

/// `GET /v1/events/recent`: the events the host keeps, oldest first, each
/// the very body a webhook receives.
#[derive(Serialize)]
pub struct RecentEvents {
    pub events: Vec<serde_json::Value>,
    /// The number of the newest event (0 before the first): resume the
    /// stream after it with `GET /v1/events?after=N`.
    pub last_id: u64,
}

/// `GET /healthz`.
#[derive(Serialize)]
pub struct Health {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// Why it is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub version: &'static str,
    #[serde(with = "rfc3339")]
    pub started: SystemTime,
}

/// `GET /readyz`.
#[derive(Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Sessions still starting, restoring or launching.
    pub waiting: Vec<SessionId>,
}

/// `GET /v1/hosts`: the fleet as this host saw it at its latest listing.
#[derive(Serialize)]
pub struct HostList {
    /// Whether this host is in a fleet (false: no `[fleet]`, no hosts).
    pub fleet: bool,
    /// This host's current run.
    pub me: Option<String>,
    pub hosts: Vec<HostEntry>,
}

#[derive(Serialize)]
pub struct HostEntry {
    pub host: String,
    pub incarnation: String,
    /// `alive`, `silent` (unchanged for a lease, about to be declared
    /// dead) or `dead`.
    pub health: crate::fleet::Health,
    /// `active`, `draining` or `dead` as its record says; none when the
    /// record could not be read.
    pub state: Option<&'static str>,
    /// Sessions its record says it owns, with their epochs.
    pub sessions: std::collections::BTreeMap<SessionId, u64>,
    /// When it last renewed, by its own clock (shown, never compared).
    pub last_renew: Option<chrono::DateTime<chrono::Utc>>,
    /// How long its record had stayed unchanged at the latest listing, on
    /// this host's clock.
    pub unchanged_for_secs: Option<f64>,
    pub max_sessions: Option<usize>,
}

impl HostList {
    /// A host alone (no `[fleet]`).
    pub fn alone() -> Self {
        Self {
            fleet: false,
            me: None,
            hosts: Vec::new(),
        }
    }

    pub fn from_view(view: &crate::fleet::FleetView) -> Self {
        use crate::fleet::HostState;
        Self {
            fleet: true,
            me: Some(view.me.to_string()),
            hosts: view
                .hosts
                .iter()
                .map(|h| HostEntry {
                    host: h.member.host.to_string(),
                    incarnation: h.member.incarnation.as_str().to_string(),
                    health: h.health,
                    state: h.record.as_ref().map(|r| match r.state {
                        HostState::Active => "active",
                        HostState::Draining => "draining",
                        HostState::Dead { .. } => "dead",
                    }),
                    sessions: h
                        .record
                        .as_ref()
                        .map(|r| r.owned.clone())
                        .unwrap_or_default(),
                    last_renew: h.record.as_ref().map(|r| r.renewed),
                    unchanged_for_secs: h.unchanged_for.map(|d| d.as_secs_f64()),
                    max_sessions: h.record.as_ref().and_then(|r| r.max_sessions),
                })
                .collect(),
        }
    }
}
