//! What a webhook tells a receiver: the events, their names, the filters
//! that pick them, and the JSON body they travel in. Plain data; nothing
//! here sends anything.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backup::BackupId;
use crate::id::SessionId;
use crate::policy::{ReloadEvent, SessionState};

/// The layout of the JSON body; raised only if a field changes meaning or
/// disappears (new fields may be added without raising it).
pub const BODY_VERSION: u32 = 1;

/// Something an operator wants to be told about.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    SessionStateChanged {
        session: SessionId,
        from: SessionState,
        to: SessionState,
        reason: String,
    },
    /// A session's page asks for a login. Follows the state change to
    /// `needs-login` once the login screen was looked at.
    SessionNeedsLogin {
        session: SessionId,
        /// The text of the QR code the page showed, as a phone would read
        /// it; `None` when no readable QR code was visible. Codes rotate:
        /// `GET /v1/sessions/{id}/qr` has the current one.
        qr: Option<String>,
    },
    BackupSaved {
        session: SessionId,
        backup: BackupId,
        size_bytes: u64,
        duration: Duration,
    },
    BackupFailed {
        session: SessionId,
        error: String,
    },
    RestoreDone {
        session: SessionId,
        source: RestoreSource,
        duration: Duration,
    },
    RestoreFailed {
        session: SessionId,
        /// The backup that could not be restored, if one was chosen.
        backup: Option<BackupId>,
        error: String,
    },
    PolicyReloaded {
        file: PathBuf,
        plugin: PathBuf,
        /// The plugin's sha256 (as the policy status shows it).
        plugin_sha256: String,
    },
    PolicyRejected {
        file: PathBuf,
        reason: String,
        /// The plugin still serving this file, if any.
        still_serving: Option<String>,
    },
    PolicyRemoved {
        file: PathBuf,
    },
    /// In a fleet: a session changed owner (raised by the host whose claim
    /// won).
    SessionMoved {
        session: SessionId,
        /// The previous owner's run (`host/run`), none for a first owner.
        from: Option<String>,
        to: String,
        epoch: u64,
    },
    /// In a fleet: a host joined as a new run (raised by that host).
    HostJoined {
        host: String,
        incarnation: String,
    },
    /// In a fleet: a host was declared dead (raised by the host that
    /// declared it).
    HostLost {
        host: String,
        incarnation: String,
        by: String,
    },
}

/// Where a restored profile came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreSource {
    /// The profile already on disk was complete and used as is.
    Disk,
    Backup(BackupId),
}

/// An event's name, as receivers and `events = [...]` filters see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    SessionStateChanged,
    SessionNeedsLogin,
    BackupSaved,
    BackupFailed,
    RestoreDone,
    RestoreFailed,
    PolicyReloaded,
    PolicyRejected,
    PolicyRemoved,
    SessionMoved,
    HostJoined,
    HostLost,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        Self::SessionStateChanged,
        Self::SessionNeedsLogin,
        Self::BackupSaved,
        Self::BackupFailed,
        Self::RestoreDone,
        Self::RestoreFailed,
        Self::PolicyReloaded,
        Self::PolicyRejected,
        Self::PolicyRemoved,
        Self::SessionMoved,
        Self::HostJoined,
        Self::HostLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionStateChanged => "session.state_changed",
            Self::SessionNeedsLogin => "session.needs_login",
            Self::BackupSaved => "backup.saved",
            Self::BackupFailed => "backup.failed",
            Self::RestoreDone => "restore.done",
            Self::RestoreFailed => "restore.failed",
            Self::PolicyReloaded => "policy.reloaded",
            Self::PolicyRejected => "policy.rejected",
            Self::PolicyRemoved => "policy.removed",
            Self::SessionMoved => "session.moved",
            Self::HostJoined => "host.joined",
            Self::HostLost => "host.lost",
        }
    }

    /// The part before the dot: `session`, `backup`, `restore`, `policy`.
    fn group(self) -> &'static str {
        self.as_str()
            .split_once('.')
            .map_or(self.as_str(), |(group, _)| group)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::SessionStateChanged { .. } => EventKind::SessionStateChanged,
            Event::SessionNeedsLogin { .. } => EventKind::SessionNeedsLogin,
            Event::BackupSaved { .. } => EventKind::BackupSaved,
            Event::BackupFailed { .. } => EventKind::BackupFailed,
            Event::RestoreDone { .. } => EventKind::RestoreDone,
            Event::RestoreFailed { .. } => EventKind::RestoreFailed,
            Event::PolicyReloaded { .. } => EventKind::PolicyReloaded,
            Event::PolicyRejected { .. } => EventKind::PolicyRejected,
            Event::PolicyRemoved { .. } => EventKind::PolicyRemoved,
            Event::SessionMoved { .. } => EventKind::SessionMoved,
            Event::HostJoined { .. } => EventKind::HostJoined,
            Event::HostLost { .. } => EventKind::HostLost,
        }
    }

    /// The `data` object of the body. Its fields are the stable contract
    /// documented in the README ("Webhooks").
    pub fn data(&self) -> Value {
        let millis = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self {
            Event::SessionStateChanged {
                session,
                from,
                to,
                reason,
            } => json!({ "session": session, "from": from, "to": to, "reason": reason }),
            Event::SessionNeedsLogin { session, qr } => json!({ "session": session, "qr": qr }),
            Event::BackupSaved {
                session,
                backup,
                size_bytes,
                duration,
            } => json!({
                "session": session,
                "backup": backup,
                "size_bytes": size_bytes,
                "duration_ms": millis(duration),
            }),
            Event::BackupFailed { session, error } => {
                json!({ "session": session, "error": error })
            }
            Event::RestoreDone {
                session,
                source,
                duration,
            } => {
                let (source, backup) = match source {
                    RestoreSource::Disk => ("disk", None),
                    RestoreSource::Backup(id) => ("backup", Some(id)),
                };
                json!({
                    "session": session,
                    "source": source,
                    "backup": backup,
                    "duration_ms": millis(duration),
                })
            }
            Event::RestoreFailed {
                session,
                backup,
                error,
            } => json!({ "session": session, "backup": backup, "error": error }),
            Event::PolicyReloaded {
                file,
                plugin,
                plugin_sha256,
            } => json!({
                "file": file.display().to_string(),
                "plugin": plugin.display().to_string(),
                "plugin_sha256": plugin_sha256,
            }),
            Event::PolicyRejected {
                file,
                reason,
                still_serving,
            } => json!({
                "file": file.display().to_string(),
                "reason": reason,
                "still_serving": still_serving,
            }),
            Event::PolicyRemoved { file } => json!({ "file": file.display().to_string() }),
            Event::SessionMoved {
                session,
                from,
                to,
                epoch,
            } => json!({ "session": session, "from": from, "to": to, "epoch": epoch }),
            Event::HostJoined { host, incarnation } => {
                json!({ "host": host, "incarnation": incarnation })
            }
            Event::HostLost {
                host,
                incarnation,
                by,
            } => json!({ "host": host, "incarnation": incarnation, "by": by }),
        }
    }
}

/// The fleet's events operators hear of; a fence is told by the logs and
/// the metrics (the fenced host cannot be sure its webhooks go out).
impl Event {
    pub fn from_fleet(e: &crate::fleet::FleetEvent) -> Option<Self> {
        use crate::fleet::FleetEvent;
        Some(match e {
            FleetEvent::HostJoined { member } => Event::HostJoined {
                host: member.host.to_string(),
                incarnation: member.incarnation.as_str().to_string(),
            },
            FleetEvent::HostLost { member, by } => Event::HostLost {
                host: member.host.to_string(),
                incarnation: member.incarnation.as_str().to_string(),
                by: by.to_string(),
            },
            FleetEvent::SessionMoved {
                session,
                from,
                to,
                epoch,
            } => Event::SessionMoved {
                session: session.clone(),
                from: from.as_ref().map(ToString::to_string),
                to: to.to_string(),
                epoch: *epoch,
            },
            FleetEvent::Fenced { .. } => return None,
        })
    }
}

/// The policy runtime's reload outcomes are webhook events as they are.
impl From<&ReloadEvent> for Event {
    fn from(e: &ReloadEvent) -> Self {
        match e {
            ReloadEvent::Accepted {
                file,
                plugin,
                sha256,
                ..
            } => Event::PolicyReloaded {
                file: file.clone(),
                plugin: plugin.clone(),
                plugin_sha256: sha256.clone(),
            },
            ReloadEvent::Rejected {
                file,
                reason,
                still_serving,
            } => Event::PolicyRejected {
                file: file.clone(),
                reason: reason.clone(),
                still_serving: still_serving.clone(),
            },
            ReloadEvent::Removed { file } => Event::PolicyRemoved { file: file.clone() },
        }
    }
}

/// One event made ready to send: its id, time and body are fixed here, so
/// every webhook and every retry carries the very same bytes.
#[derive(Debug)]
pub struct Delivery {
    pub kind: EventKind,
    /// A UUID; receivers deduplicate retries with it.
    pub id: String,
    pub body: Bytes,
}

impl Delivery {
    pub fn new(event: &Event, host: &str, at: DateTime<Utc>) -> Self {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let kind = event.kind();
        let body = json!({
            "version": BODY_VERSION,
            "event": kind.as_str(),
            "delivery": id,
            "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "host": host,
            "data": event.data(),
        });
        Self {
            kind,
            id,
            body: Bytes::from(body.to_string()),
        }
    }
}

/// One entry of a webhook's `events = [...]`: an event name
/// (`"backup.failed"`), a group (`"session.*"`) or every event (`"*"`).
/// Names are checked when the config is read, so a typo is an error rather
/// than a webhook that silently never fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPattern(Pattern);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Every,
    Group(&'static str),
    One(EventKind),
}

impl EventPattern {
    /// The default filter: `["*"]`.
    pub fn every_event() -> Vec<EventPattern> {
        vec![EventPattern(Pattern::Every)]
    }

    pub fn matches(&self, kind: EventKind) -> bool {
        match self.0 {
            Pattern::Every => true,
            Pattern::Group(group) => kind.group() == group,
            Pattern::One(one) => kind == one,
        }
    }
}

impl FromStr for EventPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self(Pattern::Every));
        }
        if let Some(group) = s.strip_suffix(".*")
            && let Some(kind) = EventKind::ALL.iter().find(|k| k.group() == group)
        {
            return Ok(Self(Pattern::Group(kind.group())));
        }
        if let Some(kind) = EventKind::ALL.into_iter().find(|k| k.as_str() == s) {
            return Ok(Self(Pattern::One(kind)));
        }
        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        Err(format!(
            "unknown event {s:?}: expected one of {}, a group such as \"session.*\", or \"*\"",
            known.join(", ")
        ))
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Pattern::Every => f.write_str("*"),
            Pattern::Group(group) => write!(f, "{group}.*"),
            Pattern::One(kind) => f.write_str(kind.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionId {
        SessionId::new("main").unwrap()
    }

    #[test]
    fn patterns_pick_one_event_a_group_or_all() {
        let p = |s: &str| s.parse::<EventPattern>().unwrap();
        assert!(p("*").matches(EventKind::PolicyRemoved));
        assert!(p("session.*").matches(EventKind::SessionStateChanged));
        assert!(!p("session.*").matches(EventKind::BackupFailed));
        assert!(p("backup.*").matches(EventKind::BackupSaved));
        assert!(p("backup.failed").matches(EventKind::BackupFailed));
        assert!(!p("backup.failed").matches(EventKind::BackupSaved));
        assert_eq!(p("restore.*").to_string(), "restore.*");
    }

    #[test]
    fn a_misspelled_event_is_refused_with_the_known_names() {
        for bad in ["backup.faild", "sessions.*", "", "session", "*.failed"] {
            let err = bad.parse::<EventPattern>().unwrap_err();
            assert!(err.contains("backup.failed"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_body_has_the_documented_shape() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T02:00:00.5Z")
            .unwrap()
            .to_utc();
        let event = Event::RestoreDone {
            session: session(),
            source: RestoreSource::Backup("20260301T020000Z-3fa2c1d0".parse().unwrap()),
            duration: Duration::from_millis(1520),
        };
        let d = Delivery::new(&event, "vigil-0", at);
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            body,
            json!({
                "version": 1,
                "event": "restore.done",
                "delivery": d.id,
                "timestamp": "2026-03-01T02:00:00.500Z",
                "host": "vigil-0",
                "data": {
                    "session": "main",
                    "source": "backup",
                    "backup": "20260301T020000Z-3fa2c1d0",
                    "duration_ms": 1520,
                },
            })
        );
        assert_eq!(uuid::Uuid::parse_str(&d.id).unwrap().get_version_num(), 4);
        assert_ne!(Delivery::new(&event, "vigil-0", at).id, d.id);
    }

    #[test]
    fn state_names_are_the_ones_the_api_shows() {
        let event = Event::SessionStateChanged {
            session: session(),
            from: SessionState::Connected,
            to: SessionState::NeedsLogin,
            reason: "probe: needs-login".into(),
        };
        assert_eq!(
            event.data(),
            json!({ "session": "main", "from": "connected", "to": "needs-login", "reason": "probe: needs-login" })
        );
    }

    #[test]
    fn needs_login_carries_the_qr_text_or_null() {
        let event = Event::SessionNeedsLogin {
            session: session(),
            qr: Some("2@abc,def==".into()),
        };
        assert_eq!(event.kind().as_str(), "session.needs_login");
        assert!(
            "session.*"
                .parse::<EventPattern>()
                .unwrap()
                .matches(event.kind())
        );
        assert_eq!(
            event.data(),
            json!({ "session": "main", "qr": "2@abc,def==" })
        );
        let unreadable = Event::SessionNeedsLogin {
            session: session(),
            qr: None,
        };
        assert_eq!(unreadable.data(), json!({ "session": "main", "qr": null }));
    }

    #[test]
    fn reload_outcomes_become_policy_events() {
        let rejected = ReloadEvent::Rejected {
            file: "policies/activity.toml".into(),
            reason: "compile error".into(),
            still_serving: Some("0123456789ab".into()),
        };
        let event = Event::from(&rejected);
        assert_eq!(event.kind(), EventKind::PolicyRejected);
        assert_eq!(event.data()["still_serving"], "0123456789ab");
        let removed = Event::from(&ReloadEvent::Removed {
            file: "policies/a.toml".into(),
        });
        assert_eq!(removed.kind().as_str(), "policy.removed");
    }
}
