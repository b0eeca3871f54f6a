//! Translation between the vocabularies the session layer joins: what the
//! volume, the backup store and the browser report, in the words policies
//! read. Plain functions, each tested here.

use std::collections::HashSet;
use std::time::SystemTime;

use super::status::BackupSummary;
use crate::backup::BackupEntry;
use crate::browser::{BrowserError, PageState, ProbeOutcome};
use crate::policy::{BackupFacts, CriticalFile, Inventory, LockState};
use crate::volume::{self, Presence};

/// The profile as the restore policy sees it.
pub(crate) fn inventory(inventory: &volume::Inventory) -> Inventory {
    Inventory {
        exists: inventory.exists,
        critical_files: inventory
            .critical
            .iter()
            .map(|c| CriticalFile {
                path: c.path.as_str().to_string(),
                present: !matches!(c.state, Presence::Missing),
                non_empty: matches!(c.state, Presence::Present { .. }),
            })
            .collect(),
        size_bytes: inventory.size_bytes,
        lock: match inventory.lock {
            volume::LockState::Free => LockState::None,
            volume::LockState::Stale { .. } => LockState::Stale,
            volume::LockState::Held { .. } => LockState::Held,
        },
    }
}

/// The backups as the restore policy sees them, newest first; those whose
/// restore failed (in the store's record or during this run) say so.
pub(crate) fn backups(
    entries: &[BackupEntry],
    failed_here: &HashSet<String>,
    now: SystemTime,
) -> Vec<BackupFacts> {
    entries
        .iter()
        .map(|e| {
            let created: SystemTime = e.manifest.created.into();
            BackupFacts {
                id: e.id().to_string(),
                age: now.duration_since(created).unwrap_or_default(),
                size_bytes: e.manifest.size,
                verified: true,
                restore_failed: e.failure.is_some() || failed_here.contains(e.id().as_str()),
            }
        })
        .collect()
}

/// The newest good backup of a listing, as the status shows it.
pub(crate) fn newest_backup(entries: &[BackupEntry]) -> Option<BackupSummary> {
    entries
        .iter()
        .find(|e| e.is_good())
        .map(|newest| BackupSummary {
            id: newest.id().to_string(),
            at: newest.manifest.created.into(),
            size_bytes: newest.manifest.size,
            took: None,
            downtime: None,
        })
}

/// What a probe saw: a browser that failed to answer is a page in no
/// known state, with the error as detail.
pub(crate) fn probe_seen(outcome: Result<ProbeOutcome, BrowserError>) -> (PageState, String) {
    match outcome {
        Ok(o) => (o.state, o.detail),
        Err(e) => (PageState::Other, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_sees_critical_files_and_locks_in_its_own_words() {
        let on_disk = volume::Inventory {
            dir: "/p".into(),
            exists: true,
            critical: vec![
                volume::CriticalFile {
                    path: "Default/IndexedDB".parse().unwrap(),
                    state: Presence::Present { bytes: 10 },
                },
                volume::CriticalFile {
                    path: "Default/Local Storage".parse().unwrap(),
                    state: Presence::Empty,
                },
            ],
            size_bytes: 10,
            files: 1,
            lock: volume::LockState::Stale {
                target: "elsewhere-1".into(),
                why: volume::StaleReason::OtherHost,
            },
        };
        let seen = inventory(&on_disk);
        assert_eq!(seen.lock, LockState::Stale);
        assert!(seen.critical_files[0].present && seen.critical_files[0].non_empty);
        assert!(seen.critical_files[1].present && !seen.critical_files[1].non_empty);
        assert!(!seen.is_complete());
    }

    #[test]
    fn a_failed_probe_is_a_page_in_no_known_state() {
        let (page, detail) = probe_seen(Ok(ProbeOutcome::other("loading")));
        assert_eq!((page, detail.as_str()), (PageState::Other, "loading"));
        let error = BrowserError::Timeout {
            session: crate::id::SessionId::new("main").unwrap(),
            what: "probe the page",
            after: std::time::Duration::from_secs(10),
        };
        let (page, detail) = probe_seen(Err(error));
        assert_eq!(page, PageState::Other);
        assert!(detail.contains("probe the page"), "{detail}");
    }
}
