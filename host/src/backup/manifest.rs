//! The small JSON documents beside each archive: the manifest (the commit
//! point of a backup) and the failure mark (a restore or verify found the
//! archive damaged).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::Sha256;
use crate::id::SessionId;
use crate::volume::ProfilePath;

/// Names one backup of one session: its creation time (UTC, sortable) and
/// a random suffix, e.g. `20250301T020000Z-3fa2c1d0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BackupId(String);

impl BackupId {
    pub fn new(created: DateTime<Utc>) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self(format!(
            "{}-{}",
            created.format("%Y%m%dT%H%M%SZ"),
            &random[..8]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BackupId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a backup id (letters, digits and '-', e.g. 20250301T020000Z-3fa2c1d0)"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for BackupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Written once the archive is complete and its checksum known: a backup
/// without a manifest does not exist for listings, restores or retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of this document's layout.
    pub format: u32,
    pub session: SessionId,
    pub id: BackupId,
    pub created: DateTime<Utc>,
    /// The archive's object name, relative to the session's folder.
    pub archive: String,
    /// The archive's size in the store, in bytes.
    pub size: u64,
    /// sha256 of the archive as stored (after encryption, if any), so it can
    /// be verified without the key.
    pub sha256: Sha256,
    /// Regular files in the archive.
    pub files: u64,
    /// Their bytes before compression.
    pub profile_bytes: u64,
    /// The machine that made it.
    pub host: String,
    pub vigil_version: String,
    /// The critical paths present (with data) when it was made.
    pub critical: Vec<ProfilePath>,
    pub encrypted: bool,
    /// `quiesce` or `live`.
    pub mode: String,
    pub excludes: Vec<String>,
    /// The owner epoch of the host that made it, in a fleet (see
    /// `fleet`); absent on a single host and in manifests written before
    /// fleets existed, which count as epoch 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

pub const MANIFEST_FORMAT: u32 = 1;

impl Manifest {
    /// Where this backup stands among its session's backups: a later owner
    /// epoch always wins, then the creation time, then the id. So a backup
    /// a fenced owner publishes late never outranks one made by the owner
    /// that took over.
    pub fn order(&self) -> (u64, DateTime<Utc>, &BackupId) {
        (self.epoch.unwrap_or(0), self.created, &self.id)
    }
}

/// "A restore (or verify) of this backup found it damaged": written beside
/// the manifest so every host sees it, and so the restore policy is not
/// offered the same bad backup again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureMark {
    pub reason: String,
    pub at: DateTime<Utc>,
    pub host: String,
}
