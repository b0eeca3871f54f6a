//! The fleet's documents: a host's membership record and a session's owner
//! record, and the object names they live under.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::settings::HostId;
use crate::backup::{BackupId, Lineage};
use crate::id::SessionId;

pub const RECORD_FORMAT: u32 = 1;

/// One run of a host: new at every start and after every fencing, so a
/// host that restarts never inherits what its previous run held.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(String);

impl Incarnation {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())).then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 digits, enough to tell runs apart in logs.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl Default for Incarnation {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One run of one host: the pair named by owner records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    pub host: HostId,
    pub incarnation: Incarnation,
}

impl Member {
    /// `member.<host>.<incarnation>.json`, directly in `.fleet/`: listing
    /// that folder shows every run's record and its version in one request.
    pub fn object_name(&self) -> String {
        format!("member.{}.{}.json", self.host, self.incarnation)
    }

    /// The inverse of [`Member::object_name`]; `None` for other objects.
    pub fn from_object_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("member.")?.strip_suffix(".json")?;
        let (host, incarnation) = rest.rsplit_once('.')?;
        Some(Self {
            host: HostId::new(host).ok()?,
            incarnation: Incarnation::parse(incarnation)?,
        })
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.incarnation.short())
    }
}

/// A host's membership record: renewed every `renew_secs` by its host
/// alone. Observers judge liveness by its *version* changing, never by the
/// times written in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub format: u32,
    pub host: HostId,
    pub incarnation: Incarnation,
    pub state: HostState,
    /// Renewals so far: every renewal writes new bytes, so a new version.
    pub seq: u64,
    /// Wall-clock times, for people only.
    pub started: DateTime<Utc>,
    pub renewed: DateTime<Utc>,
    pub max_sessions: Option<usize>,
    /// The sessions this run owns, with their owner epochs, as of this
    /// renewal: how other hosts learn the owner map without reading a
    /// record per session. Owner records stay the authority.
    pub owned: BTreeMap<SessionId, u64>,
    pub vigil_version: String,
    /// Makes every write's bytes unique (see `store`).
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HostState {
    /// Renewing, and taking sessions up to its share.
    Active,
    /// Handing its sessions over before it leaves: takes none.
    Draining,
    /// Declared dead (by `by`, after its record did not change for a
    /// lease, or by itself once fenced). A dead record is never renewed
    /// again: its host's sessions may be taken over.
    Dead { by: HostId },
}

/// A session's owner record, the arbiter of who runs it. Changed only by
/// conditional writes: a claim (the epoch grows), a release by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub format: u32,
    pub session: SessionId,
    /// One more at every change of owner.
    pub epoch: u64,
    pub owner: Member,
    pub state: OwnerState,
    /// Which backups count (see [`Lineage`]), sealed when this owner
    /// claimed the session.
    pub lineage: Lineage,
    /// The host that owned the session before (a claimer that finds its
    /// own name here knows its disk may hold the newest profile).
    pub previous: Option<Member>,
    /// Wall-clock time of the change, for people only.
    pub changed: DateTime<Utc>,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OwnerState {
    /// `owner` runs it.
    Owned,
    /// `owner` stopped it and let it go; anyone may claim it at once.
    /// `handover` names the backup it took on the way out, which the next
    /// owner restores.
    Released { handover: Option<BackupId> },
}

/// Where a session's owner record lives, inside `.fleet/`.
pub fn owner_object(session: &SessionId) -> String {
    format!("owners/{session}.json")
}

pub const CATALOG_OBJECT: &str = "catalog.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_round_trip_with_dots_in_host_ids() {
        let m = Member {
            host: HostId::new("web-1.eu.example").unwrap(),
            incarnation: Incarnation::new(),
        };
        assert_eq!(Member::from_object_name(&m.object_name()), Some(m));
        assert_eq!(Member::from_object_name("catalog.json"), None);
        assert_eq!(Member::from_object_name("member.a.nothex.json"), None);
    }
}
