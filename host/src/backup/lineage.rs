//! Which backups of a session still count once several hosts have owned
//! it: a plain decision over listed manifests, no I/O.
//!
//! Every owner of a session in a fleet has an epoch, one more than the
//! owner before it, and stamps it into each manifest it publishes. When a
//! host takes a session over it lists the session's backups and *seals*
//! what it saw: for each earlier epoch, the newest backup that counted.
//! A backup of an earlier epoch that is not at or below its epoch's seal
//! was published after the takeover by an owner that had already lost the
//! session (a host paused in the middle of an upload, say). It is never
//! restored and never counted as the newest: its profile forked from the
//! one the new owner restored.
//!
//! Seals are carried from owner to owner (a new seal keeps only what the
//! previous one admitted), so such a backup stays out however many times
//! the session moves afterwards. Manifests without an epoch (a single
//! host, or written before fleets existed) count as epoch 0.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BackupEntry;
use super::manifest::{BackupId, Manifest};

/// The seals of a session's owners so far, kept in its owner record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The epoch of the owner holding this lineage: its backups, and any
    /// of a later owner, always count.
    pub epoch: u64,
    /// For each earlier epoch that still has backups that count: the newest
    /// of them when the session last changed owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sealed: BTreeMap<u64, Seal>,
}

/// The newest backup of one epoch that counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub created: DateTime<Utc>,
    pub id: BackupId,
}

impl Lineage {
    /// No owner yet: every backup counts.
    pub fn unowned() -> Self {
        Self::default()
    }

    /// Whether `manifest` belongs to the session's history as its owners
    /// saw it (see the module docs).
    pub fn admits(&self, manifest: &Manifest) -> bool {
        let epoch = manifest.epoch.unwrap_or(0);
        if epoch >= self.epoch {
            return true;
        }
        self.sealed
            .get(&epoch)
            .is_some_and(|seal| (manifest.created, &manifest.id) <= (seal.created, &seal.id))
    }

    /// The lineage of a new owner at `epoch`, which listed `listed` (every
    /// backup it saw, damaged or not) before claiming the session.
    pub fn seal(&self, listed: &[BackupEntry], epoch: u64) -> Self {
        let mut sealed: BTreeMap<u64, Seal> = BTreeMap::new();
        for entry in listed.iter().filter(|e| self.admits(&e.manifest)) {
            let m = &entry.manifest;
            let e = m.epoch.unwrap_or(0);
            if e >= epoch {
                // A later owner's backup seen by a claim that is about to
                // lose its race: nothing to seal.
                continue;
            }
            let newer = sealed
                .get(&e)
                .is_none_or(|seal| (m.created, &m.id) > (seal.created, &seal.id));
            if newer {
                sealed.insert(
                    e,
                    Seal {
                        created: m.created,
                        id: m.id.clone(),
                    },
                );
            }
        }
        Self { epoch, sealed }
    }

    /// Why `manifest` does not count, for listings; `None` if it does.
    pub fn refusal(&self, manifest: &Manifest) -> Option<String> {
        (!self.admits(manifest)).then(|| {
            format!(
                "published by owner epoch {} after the session moved to epoch {}: \
                 a fenced host's late backup, never restored",
                manifest.epoch.unwrap_or(0),
                self.epoch
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::MANIFEST_FORMAT;
    use crate::id::SessionId;

    fn backup(epoch: Option<u64>, minute: i64) -> BackupEntry {
        let created = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::minutes(minute);
        let id = BackupId::new(created);
        BackupEntry {
            manifest: Manifest {
                format: MANIFEST_FORMAT,
                session: SessionId::new("main").unwrap(),
                id: id.clone(),
                created,
                archive: format!("{id}.tar.gz"),
                size: 1,
                sha256: crate::archive::Sha256([0; 32]),
                files: 1,
                profile_bytes: 1,
                host: "h".into(),
                vigil_version: "0".into(),
                critical: vec![],
                encrypted: false,
                mode: "quiesce".into(),
                excludes: vec![],
                epoch,
            },
            failure: None,
        }
    }

    #[test]
    fn an_unowned_session_admits_everything() {
        let l = Lineage::unowned();
        assert!(l.admits(&backup(None, 0).manifest));
        assert!(l.admits(&backup(Some(7), 0).manifest));
    }

    #[test]
    fn a_late_backup_of_the_old_owner_is_refused_even_if_it_looks_newer() {
        let before = vec![backup(None, 0), backup(Some(1), 10)];
        let at2 = Lineage::unowned().seal(&before, 1).seal(&before, 2);
        // The epoch-1 owner was paused mid-upload and publishes at minute 30.
        let late = backup(Some(1), 30);
        assert!(!at2.admits(&late.manifest));
        assert!(at2.refusal(&late.manifest).unwrap().contains("epoch 1"));
        assert!(
            at2.admits(&before[1].manifest),
            "what was seen still counts"
        );
        assert!(at2.admits(&backup(Some(2), 20).manifest));
    }

    #[test]
    fn a_refused_backup_stays_refused_after_more_moves() {
        let seen = vec![backup(Some(1), 10)];
        let at2 = Lineage::unowned().seal(&seen, 1).seal(&seen, 2);
        let late = backup(Some(1), 30);
        let owner2 = backup(Some(2), 40);
        // The next owner lists the late one too, but seals from the lineage
        // it inherited.
        let listed = vec![seen[0].clone(), late.clone(), owner2.clone()];
        let at3 = at2.seal(&listed, 3);
        assert!(!at3.admits(&late.manifest));
        assert!(at3.admits(&seen[0].manifest));
        assert!(at3.admits(&owner2.manifest));
        assert_eq!(at3.sealed.len(), 2);
    }

    #[test]
    fn an_epoch_with_no_backup_seen_admits_none_later() {
        // Owner 2 never backed up before owner 3 took over.
        let seen = vec![backup(Some(1), 10)];
        let at3 = Lineage::unowned()
            .seal(&seen, 1)
            .seal(&seen, 2)
            .seal(&seen, 3);
        assert!(!at3.admits(&backup(Some(2), 50).manifest));
        assert!(at3.admits(&seen[0].manifest));
    }
}
