//! Preparing the profile before a launch: claim it, ask the restore policy
//! where it comes from (disk, a backup, fresh, or wait), restore it if so
//! decided, and tidy what a dead browser left (stale locks, the crash
//! flag). Also operators' and watchdogs' restores, which end the same way.

use std::time::{Instant, SystemTime};

use super::{Phase, Runner, blocking};
use crate::archive::Progress;
use crate::backup::{BackupEntry, BackupError, BackupId, RestoreReport};
use crate::policy::role::Restore;
use crate::policy::{Plan, RestoreQuestion};
use crate::session::status::RestoreSource;
use crate::session::translate;
use crate::session::{SessionError, SessionEvent, SessionState};
use crate::volume::{self, VolumeError};

/// Restore decisions asked at one start before Vigil gives up on the
/// policy and launches on what is on disk.
const MAX_RESTORE_DECISIONS: usize = 8;
/// How long a browser left by an earlier Vigil gets to close itself (and
/// flush the profile) before it is killed.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl Runner {
    pub(super) async fn prepare(&mut self) -> Phase {
        self.set_state(
            SessionState::Starting,
            "choosing where the profile comes from",
        );
        if let Err(e) = self.ensure_claim().await {
            return self.blocked(format!("cannot claim the profile: {e}"));
        }
        if let Err(reason) = self.stop_orphan_browser().await {
            return self.blocked(reason);
        }
        if !self.may_run() {
            return self.lost_ownership();
        }
        let started = Instant::now();
        if let Some(phase) = self.restore_moved().await {
            return phase;
        }
        for _ in 0..MAX_RESTORE_DECISIONS {
            let inventory = match self.inventory().await {
                Ok(i) => i,
                Err(e) => return self.blocked(format!("cannot read the profile: {e}")),
            };
            if let volume::LockState::Held { host, pid } = &inventory.lock {
                return self.blocked(format!(
                    "profile {} is held by a running browser (pid {pid} on this host, {host}); Vigil does not touch it until that browser is gone",
                    self.spec.profile_dir.display()
                ));
            }
            let entries = self.list_backups().await;
            let question = RestoreQuestion {
                session: self.spec.id.clone(),
                inventory: translate::inventory(&inventory),
                backups: translate::backups(
                    &entries,
                    self.record.failed_restores(),
                    SystemTime::now(),
                ),
            };
            match self.ask::<Restore>(question).await.value {
                Plan::UseDisk { reason } => {
                    self.note_restore(RestoreSource::Disk, None, started.elapsed());
                    return self
                        .launch_on_disk(format!("profile on disk: {reason}"), inventory.exists)
                        .await;
                }
                Plan::StartFresh { reason } => {
                    self.note_restore(RestoreSource::Fresh, None, started.elapsed());
                    return self
                        .launch_on_disk(format!("fresh profile: {reason}"), inventory.exists)
                        .await;
                }
                Plan::RestoreBackup { id, reason } => {
                    let Ok(backup) = id.parse::<BackupId>() else {
                        self.record.restore_skipped(&id);
                        continue;
                    };
                    self.set_state(
                        SessionState::Restoring,
                        format!("restoring backup {backup}: {reason}"),
                    );
                    if self.restore_backup(Some(backup.clone())).await.is_ok() {
                        return Phase::Launch(format!("restored backup {backup}"));
                    }
                }
                Plan::Wait { after, reason } => {
                    tracing::info!(session = %self.spec.id, wait_ms = after.as_millis() as u64, %reason, "restore policy asks to wait");
                    if self.sleep_or_shutdown(after).await {
                        return Phase::Stop;
                    }
                }
            }
        }
        let exists = self.profile.dir().exists();
        self.launch_on_disk(
            format!("no usable restore decision after {MAX_RESTORE_DECISIONS} tries; starting on the profile on disk"),
            exists,
        )
        .await
    }

    /// A session that comes from another host (handed over, or taken
    /// over from a lost one): its backups are newer than anything this
    /// disk may hold from an earlier stay, so it is restored without asking
    /// the restore policy: exactly the backup the previous owner handed
    /// over, else the newest its lineage admits. None: the policy decides
    /// (a first owner, an earlier run of this host, or no usable backup).
    async fn restore_moved(&mut self) -> Option<Phase> {
        let tenure = self.spec.tenure.clone()?;
        let owned = tenure.owned();
        let previous = owned.previous.as_ref()?;
        if owned.previously_here(&tenure.member().host) {
            return None;
        }
        if let Some(id) = owned.handover.clone() {
            self.set_state(
                SessionState::Restoring,
                format!("restoring backup {id}, handed over by the previous owner"),
            );
            if self.restore_backup(Some(id.clone())).await.is_ok() {
                return Some(Phase::Launch(format!("restored handover backup {id}")));
            }
        }
        self.set_state(
            SessionState::Restoring,
            "restoring the newest backup of its lineage: the session comes from another host",
        );
        tracing::info!(session = %self.spec.id, previous = %previous, epoch = owned.epoch, "restoring a session that moved here");
        match self.restore_backup(None).await {
            Ok(report) => Some(Phase::Launch(format!("restored backup {}", report.id))),
            Err(_) => None,
        }
    }

    /// Claims the profile for this host, once. The error keeps its cause:
    /// another Vigil process at work on it, or an I/O failure.
    pub(super) async fn ensure_claim(&mut self) -> Result<(), VolumeError> {
        if self.claim.is_some() {
            return Ok(());
        }
        let profile = self.profile.clone();
        self.claim = Some(blocking(move || profile.claim()).await?);
        Ok(())
    }

    /// Stops a Chromium that an earlier Vigil, killed before it could
    /// close it, left holding this session's profile; its lock is then
    /// stale and cleared like a crashed browser's. Any other live holder is
    /// refused below, as before.
    async fn stop_orphan_browser(&self) -> Result<(), String> {
        let Some(claim) = self.claim.clone() else {
            return Ok(());
        };
        let session = self.spec.id.clone();
        let orphan = blocking(move || claim.orphan_browser(&session))
            .await
            .map_err(|e| format!("cannot read the profile's lock: {e}"))?;
        let Some(pid) = orphan else { return Ok(()) };
        match crate::browser::stop_orphan(pid, ORPHAN_GRACE).await {
            Ok(how) => {
                tracing::warn!(session = %self.spec.id, pid, ?how, profile = %self.spec.profile_dir.display(), "stopped the browser an earlier Vigil left running on the profile");
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot stop the browser (pid {pid}) an earlier Vigil left running on profile {}: {e}",
                self.spec.profile_dir.display()
            )),
        }
    }

    async fn inventory(&self) -> Result<volume::Inventory, VolumeError> {
        let profile = self.profile.clone();
        blocking(move || profile.inventory()).await
    }

    /// The session's backups, newest first; an unreachable store is logged
    /// and counts as no backups (the restore policy then decides on the
    /// disk alone, and nothing is overwritten).
    async fn list_backups(&mut self) -> Vec<BackupEntry> {
        let listed = match &self.spec.tenure {
            Some(t) => {
                self.deps
                    .backups
                    .list_admitted(&self.spec.id, &t.owned().lineage)
                    .await
            }
            None => self.deps.backups.list(&self.spec.id).await,
        };
        match listed {
            Ok(entries) => {
                if let Some(newest) = translate::newest_backup(&entries) {
                    self.record.found_backup(newest);
                }
                entries
            }
            Err(e) => {
                tracing::warn!(session = %self.spec.id, error = %e, "cannot list backups; deciding without them");
                Vec::new()
            }
        }
    }

    /// Clears stale browser locks and the crash flag, then launches.
    async fn launch_on_disk(&mut self, reason: String, exists: bool) -> Phase {
        if exists {
            self.relaunch(reason).await
        } else {
            Phase::Launch(reason)
        }
    }

    /// Tidies the profile (see [`Runner::tidy_profile`]) and launches,
    /// saying in the reason what was tidied.
    pub(super) async fn relaunch(&mut self, reason: String) -> Phase {
        match self.tidy_profile().await {
            Ok(tidied) if tidied.is_empty() => Phase::Launch(reason),
            Ok(tidied) => Phase::Launch(format!("{reason} ({})", tidied.join(", "))),
            Err(e) => self.blocked(format!("cannot tidy the profile: {e}")),
        }
    }

    /// Removes `Singleton*` links left by a browser that is gone and marks
    /// the last exit clean, so the next launch neither refuses the profile
    /// nor shows a "restore pages?" bubble. Returns what it did, in words.
    async fn tidy_profile(&mut self) -> Result<Vec<String>, VolumeError> {
        let Some(claim) = self.claim.clone() else {
            return Ok(Vec::new());
        };
        blocking(move || {
            let mut tidied = Vec::new();
            let cleared = claim.clear_stale_locks()?.removed.len();
            if cleared > 0 {
                tidied.push(format!("cleared {cleared} stale browser lock(s)"));
            }
            if claim.reset_crash_exit_type()? {
                tidied.push("marked the last exit clean".to_string());
            }
            Ok(tidied)
        })
        .await
    }

    async fn restore_backup(
        &mut self,
        backup: Option<BackupId>,
    ) -> Result<RestoreReport, SessionError> {
        self.ensure_claim().await?;
        let claim = self.claim.clone().expect("claimed above");
        let started = Instant::now();
        let progress = Progress::default();
        let result = match &backup {
            Some(id) => {
                self.deps
                    .backups
                    .restore(&self.spec.id, id, &claim, true, &progress)
                    .await
            }
            None => match &self.spec.tenure {
                Some(t) => {
                    self.deps
                        .backups
                        .restore_newest_admitted(
                            &self.spec.id,
                            &claim,
                            true,
                            &progress,
                            &t.owned().lineage,
                        )
                        .await
                }
                None => {
                    self.deps
                        .backups
                        .restore_newest(&self.spec.id, &claim, true, &progress)
                        .await
                }
            },
        };
        match result {
            Ok(report) => {
                let took = started.elapsed();
                for (id, _) in &report.skipped {
                    self.record.restore_skipped(id.as_str());
                }
                self.note_restore(RestoreSource::Backup, Some(report.id.to_string()), took);
                tracing::info!(session = %self.spec.id, backup = %report.id, files = report.files, bytes = report.bytes, took_ms = took.as_millis() as u64, "profile restored from backup");
                Ok(report)
            }
            Err(e) => {
                self.record
                    .restore_failed(backup.as_ref().map(BackupId::as_str));
                tracing::warn!(session = %self.spec.id, error = %e, "restore failed; the profile on disk is unchanged");
                self.emit(SessionEvent::RestoreFailed {
                    session: self.spec.id.clone(),
                    backup: backup.map(|b| b.to_string()),
                    error: e.to_string(),
                });
                self.publish();
                Err(e.into())
            }
        }
    }

    fn note_restore(
        &mut self,
        source: RestoreSource,
        backup: Option<String>,
        took: std::time::Duration,
    ) {
        let event = self
            .record
            .restored(source, backup, took, SystemTime::now());
        self.emit(event);
        self.publish();
    }

    /// Before an operator's restore closes a working browser: the backup
    /// asked for exists (or, when none is named, some good one does), and
    /// the session is not connected, unless `force` says to replace its
    /// working login anyway.
    pub(super) async fn check_restorable(
        &self,
        backup: Option<&BackupId>,
        force: bool,
    ) -> Result<(), SessionError> {
        let session = &self.spec.id;
        let entries = self.deps.backups.list(session).await?;
        match backup {
            Some(id) if !entries.iter().any(|e| e.id() == id) => {
                return Err(BackupError::NotFound {
                    session: session.clone(),
                    id: id.clone(),
                }
                .into());
            }
            None if !entries.iter().any(BackupEntry::is_good) => {
                return Err(BackupError::NoGoodBackup {
                    session: session.clone(),
                    tried: Vec::new(),
                }
                .into());
            }
            _ => {}
        }
        if !force && self.record.state() == SessionState::Connected {
            return Err(SessionError::Refused {
                session: session.clone(),
                what: "restore over it",
                why: "it is connected, with a working login; pass force to replace its profile with a backup",
            });
        }
        Ok(())
    }

    /// Closes the browser, restores `backup` (or the newest good one) over
    /// the profile, and relaunches, on the restored profile or, if the
    /// restore failed, on the untouched old one.
    pub(super) async fn restore_now(
        &mut self,
        backup: Option<BackupId>,
        reason: String,
    ) -> (Phase, Result<RestoreReport, SessionError>) {
        self.close_browser().await;
        let which = backup
            .as_ref()
            .map_or("the newest good backup".to_string(), |b| {
                format!("backup {b}")
            });
        self.set_state(
            SessionState::Restoring,
            format!("restoring {which}: {reason}"),
        );
        let result = self.restore_backup(backup).await;
        let reason = match &result {
            Ok(report) => format!("restored backup {}", report.id),
            Err(e) => format!("restore failed ({e}); relaunching on the profile on disk"),
        };
        (self.relaunch(reason).await, result)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use tokio::sync::{Semaphore, broadcast, mpsc, watch};

    use super::*;
    use crate::backup::{Backups, NoQuiesce};
    use crate::config::Config;
    use crate::journal::{self, Journal, JournalConfig, Since};
    use crate::policy::{PolicyRuntime, PolicySource, RuntimeOptions};
    use crate::session::{SessionDeps, SessionSpec};
    use crate::volume::Profile;

    /// A runner for session `main` of a host in `root`: a `file://` store
    /// there, no policy file (the built-in defaults decide), no browser
    /// (prepare never launches one: it says to). The senders keep the
    /// runner's shutdown and command channels open.
    struct Host {
        runner: Runner,
        backups: Arc<Backups>,
        journal: Journal,
        spec: SessionSpec,
        _stop: watch::Sender<bool>,
        _commands: mpsc::Sender<crate::session::Command>,
    }

    fn host(root: &Path) -> Host {
        std::fs::create_dir_all(root.join("policies")).unwrap();
        let config = Config::parse(
            "data_dir = \"data\"\n[backup]\nstore = \"file://backups\"\n[policy]\ndir = \"policies\"\n[[session]]\nid = \"main\"\nurl = \"http://127.0.0.1:9/\"\n",
            &root.join("vigil.toml"),
            root,
        )
        .unwrap();
        let spec = SessionSpec::from_config(&config, &config.sessions[0]);
        let policies = PolicyRuntime::new(RuntimeOptions::new(PolicySource::Directory(
            config.policy.dir.clone(),
        )))
        .unwrap();
        let backups = Arc::new(Backups::open(&config.backup).unwrap());
        let journal =
            Journal::open(&journal::dir(&config.data_dir), &JournalConfig::default()).unwrap();
        let deps = SessionDeps {
            policies: Arc::new(policies),
            journal: journal.clone(),
            backups: Arc::clone(&backups),
            launches: Arc::new(Semaphore::new(1)),
            events: broadcast::channel(16).0,
        };
        let (stop, shutdown) = watch::channel(false);
        let (commands_tx, commands) = mpsc::channel(1);
        let (runner, _) = Runner::new(spec.clone(), deps, shutdown, commands);
        Host {
            runner,
            backups,
            journal,
            spec,
            _stop: stop,
            _commands: commands_tx,
        }
    }

    /// A profile that holds a login: both critical folders, not empty.
    fn logged_in_profile(dir: &Path) {
        for (folder, file) in [
            ("Default/IndexedDB/app.leveldb", "000003.log"),
            ("Default/Local Storage/leveldb", "000005.ldb"),
        ] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
            std::fs::write(dir.join(folder).join(file), b"a login").unwrap();
        }
    }

    fn launch_reason(phase: Phase) -> String {
        match phase {
            Phase::Launch(reason) => reason,
            other => panic!("expected a launch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_on_disk_and_no_backup_starts_fresh_and_the_decision_is_journaled() {
        let root = tempfile::tempdir().unwrap();
        let mut host = host(root.path());
        let reason = launch_reason(host.runner.prepare().await);
        assert!(
            reason.starts_with("fresh profile: there is no profile on disk"),
            "{reason}"
        );
        let status = host.runner.record.status(&host.spec, None, Instant::now());
        assert_eq!(status.counters.restores_fresh, 1);
        assert_eq!(
            status.last_decision.unwrap().role,
            crate::policy::Role::Restore
        );

        host.journal.close();
        let lines = host.journal.lines(&host.spec.id, Since::Start).unwrap();
        let [line] = &lines[..] else {
            panic!("one decision: {lines:?}")
        };
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["role"], "restore");
        assert_eq!(line["input"]["inventory"]["exists"], false);
        assert_eq!(line["answer"]["kind"], "start-fresh");
        assert_eq!(line["served_by"]["kind"], "built-in");
    }

    #[tokio::test]
    async fn a_lost_profile_comes_back_from_its_backup_and_a_whole_one_is_used_as_it_is() {
        let root = tempfile::tempdir().unwrap();
        let mut host = host(root.path());
        let dir = host.spec.profile_dir.clone();
        logged_in_profile(&dir);
        let backup = {
            let claim = Profile::new(dir.clone(), host.spec.critical.clone())
                .claim()
                .unwrap();
            host.backups
                .backup(
                    &host.spec.id,
                    &claim,
                    Arc::new(NoQuiesce),
                    &Progress::default(),
                )
                .await
                .unwrap()
        };

        // A whole profile on disk: used as it is.
        let reason = launch_reason(host.runner.prepare().await);
        assert!(reason.starts_with("profile on disk: "), "{reason}");

        // The disk is lost: the newest good backup comes back.
        std::fs::remove_dir_all(&dir).unwrap();
        let reason = launch_reason(host.runner.prepare().await);
        assert_eq!(reason, format!("restored backup {}", backup.id));
        assert_eq!(
            std::fs::read(dir.join("Default/IndexedDB/app.leveldb/000003.log")).unwrap(),
            b"a login"
        );
        let status = host.runner.record.status(&host.spec, None, Instant::now());
        assert_eq!(
            (
                status.counters.restores_from_disk,
                status.counters.restores_from_backup
            ),
            (1, 1)
        );
        assert!(
            status
                .history
                .iter()
                .any(|t| t.to == SessionState::Restoring && t.reason.contains("restoring backup")),
            "{:?}",
            status.history
        );
    }
}
