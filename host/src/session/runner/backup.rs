//! The session's backup: in quiesce mode the browser is closed first (a
//! consistent profile) and relaunched as soon as the archive has read the
//! profile, while the upload finishes; in live mode the browser keeps
//! running.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::{Phase, Runner};
use crate::archive::Progress;
use crate::backup::BackupMode;
use crate::backup::{HookFuture, Manifest, Quiesce};
use crate::id::SessionId;
use crate::session::status::BackupSummary;
use crate::session::{SessionError, SessionEvent, SessionState};

impl Runner {
    /// Backs the profile up. Returns the phase to go to when a quiesced
    /// backup's relaunch did not lead back to watching.
    pub(super) async fn backup(
        &mut self,
        reason: &str,
    ) -> (Option<Phase>, Result<Manifest, SessionError>) {
        if self.record.state() == SessionState::NeedsLogin {
            return (
                None,
                Err(self.not_now(
                    "back up",
                    "the page asks for a login; such a profile would hide the last logged-in backup",
                )),
            );
        }
        if !self.may_run() {
            return (
                None,
                Err(self.not_now("back up", "this host no longer owns the session")),
            );
        }
        let Some(claim) = self.claim.clone() else {
            return (
                None,
                Err(self.not_now("back up", "the profile is not claimed by this host")),
            );
        };
        let quiesce = self.spec.backup_mode == BackupMode::Quiesce && self.browser.is_some();
        tracing::info!(session = %self.spec.id, reason, quiesce, "backup starts");
        let started = Instant::now();
        if quiesce {
            self.close_browser().await;
        }
        let (profile_read, read) = oneshot::channel();
        let hook: Arc<dyn Quiesce> = Arc::new(AlreadyQuiet(Mutex::new(Some(profile_read))));
        let backups = Arc::clone(&self.deps.backups);
        let session = self.spec.id.clone();
        // In a fleet the manifest carries the owner epoch and is written
        // only while this host still owns the session.
        let fence = self.spec.tenure.as_ref().map(crate::fleet::Tenure::fence);
        let upload = async move {
            let fence = fence.as_ref().map(|f| f as &dyn crate::backup::Fence);
            backups
                .backup_fenced(&session, &claim, hook, &Progress::default(), fence)
                .await
        };
        tokio::pin!(upload);
        let mut phase = None;
        let mut downtime = None;
        let result = if quiesce {
            let finished = tokio::select! {
                result = &mut upload => Some(result),
                _ = read => None,
            };
            let relaunch = self.launch("relaunching after the backup".into());
            let (result, next) = match finished {
                Some(result) => (result, relaunch.await),
                None => tokio::join!(&mut upload, relaunch),
            };
            downtime = Some(started.elapsed());
            if !matches!(next, Phase::Watch) {
                phase = Some(next);
            }
            result
        } else {
            upload.await
        };
        let took = started.elapsed();
        // The relaunch inside may have reached connected again; that is not
        // a new login, and a failed backup must not retry in a loop.
        self.record.take_backup_due();
        match result {
            Ok(manifest) => {
                self.record.backup_saved(BackupSummary {
                    id: manifest.id.to_string(),
                    at: SystemTime::now(),
                    size_bytes: manifest.size,
                    took: Some(took),
                    downtime,
                });
                tracing::info!(session = %self.spec.id, id = %manifest.id, size = manifest.size, took_ms = took.as_millis() as u64, downtime_ms = downtime.map(|d| d.as_millis() as u64), "backup saved");
                self.emit(SessionEvent::BackupSaved {
                    session: self.spec.id.clone(),
                    id: manifest.id.to_string(),
                    size_bytes: manifest.size,
                    took,
                });
                self.publish();
                (phase, Ok(manifest))
            }
            Err(e) => {
                self.record.backup_failed(e.to_string());
                tracing::error!(session = %self.spec.id, error = %e, "backup failed; the previous backup stays the newest");
                self.emit(SessionEvent::BackupFailed {
                    session: self.spec.id.clone(),
                    error: e.to_string(),
                });
                self.publish();
                (phase, Err(e.into()))
            }
        }
    }
}

/// The quiesce hook of a backup whose browser the session already closed:
/// `pause` has nothing left to do, and `resume` tells the session it may
/// relaunch (the archive has read the profile).
struct AlreadyQuiet(Mutex<Option<oneshot::Sender<()>>>);

impl Quiesce for AlreadyQuiet {
    fn pause<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn resume<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
        Box::pin(async { Ok(()) })
    }
}
