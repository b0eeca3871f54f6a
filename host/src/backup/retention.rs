//! Which backups to keep: a plain decision over listed facts, no I/O.
//!
//! Rules, in order: the newest `keep_last` good backups are kept whatever
//! their age (so the newest good backup is never deleted); everything
//! younger than `keep_days` (`keep`) is kept; the rest goes.

use chrono::{DateTime, Duration, Utc};

use super::BackupEntry;
use super::KeepLast;
use super::manifest::BackupId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Among the newest `keep_last` good backups.
    KeepLast,
    /// Younger than `keep_days`.
    KeepYoung,
    /// Older than `keep_days` and not needed to keep `keep_last`.
    Expired,
}

impl Verdict {
    pub fn keeps(self) -> bool {
        !matches!(self, Verdict::Expired)
    }
}

/// One verdict per entry, newest first.
pub fn plan(
    entries: &[BackupEntry],
    now: DateTime<Utc>,
    keep: Duration,
    keep_last: KeepLast,
) -> Vec<(BackupId, Verdict)> {
    let mut sorted: Vec<&BackupEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| b.manifest.order().cmp(&a.manifest.order()));
    let cutoff = now
        .checked_sub_signed(keep)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut good_kept = 0;
    sorted
        .into_iter()
        .map(|e| {
            let verdict = if e.is_good() && good_kept < keep_last.get() {
                good_kept += 1;
                Verdict::KeepLast
            } else if e.manifest.created > cutoff {
                Verdict::KeepYoung
            } else {
                Verdict::Expired
            };
            (e.manifest.id.clone(), verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::{FailureMark, MANIFEST_FORMAT, Manifest};
    use crate::id::SessionId;

    fn entry(days_old: i64, failed: bool, now: DateTime<Utc>) -> BackupEntry {
        let created = now - Duration::days(days_old);
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
                epoch: None,
            },
            failure: failed.then(|| FailureMark {
                reason: "bad".into(),
                at: now,
                host: "h".into(),
            }),
        }
    }

    fn verdicts(entries: &[BackupEntry], keep_days: u32, keep_last: u32) -> Vec<Verdict> {
        let now = Utc::now();
        plan(
            entries,
            now,
            Duration::days(i64::from(keep_days)),
            KeepLast::new(keep_last).unwrap(),
        )
        .into_iter()
        .map(|(_, v)| v)
        .collect()
    }

    #[test]
    fn young_backups_stay_and_old_ones_go_beyond_keep_last() {
        let now = Utc::now();
        let entries: Vec<_> = [1, 5, 40, 50, 60]
            .iter()
            .map(|d| entry(*d, false, now))
            .collect();
        assert_eq!(
            verdicts(&entries, 30, 1),
            [
                Verdict::KeepLast,
                Verdict::KeepYoung,
                Verdict::Expired,
                Verdict::Expired,
                Verdict::Expired
            ]
        );
    }

    #[test]
    fn keep_last_holds_old_backups_when_nothing_recent_exists() {
        let now = Utc::now();
        let entries: Vec<_> = [100, 200, 300, 400]
            .iter()
            .map(|d| entry(*d, false, now))
            .collect();
        assert_eq!(
            verdicts(&entries, 30, 3),
            [
                Verdict::KeepLast,
                Verdict::KeepLast,
                Verdict::KeepLast,
                Verdict::Expired
            ]
        );
    }

    #[test]
    fn damaged_backups_do_not_count_toward_keep_last() {
        let now = Utc::now();
        let entries = vec![
            entry(100, true, now),
            entry(200, false, now),
            entry(300, true, now),
        ];
        // The newest good one is the 200-day-old backup: it must survive.
        assert_eq!(
            verdicts(&entries, 30, 1),
            [Verdict::Expired, Verdict::KeepLast, Verdict::Expired]
        );
    }

    #[test]
    fn order_of_the_listing_does_not_matter() {
        let now = Utc::now();
        let mut entries: Vec<_> = [3, 1, 2]
            .iter()
            .map(|d| entry(*d * 100, false, now))
            .collect();
        let newest = entries[1].manifest.id.clone();
        entries.reverse();
        let plan = plan(&entries, now, Duration::days(30), KeepLast::new(1).unwrap());
        assert_eq!(plan[0], (newest, Verdict::KeepLast));
    }
}
