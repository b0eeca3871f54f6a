//! Publishing a backup: quiesce, archive, upload, then the manifest.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::BackupMode;
use super::manifest::{BackupId, MANIFEST_FORMAT, Manifest};
use super::{BackupError, Backups, Fence, Quiesce, store, task_failed};
use crate::archive::{self, ArchiveError, Progress};
use crate::id::SessionId;
use crate::volume::{self, LockState, ProfileClaim, VolumeError};

impl Backups {
    /// Archives the profile and publishes it as a new backup. In quiesce
    /// mode the hook pauses the profile's writers first (see [`Quiesce`]).
    /// Nothing is published unless the archive is complete: a failure
    /// leaves the previous backup as the newest.
    pub async fn backup(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        quiesce: Arc<dyn Quiesce>,
        progress: &Progress,
    ) -> Result<Manifest, BackupError> {
        self.backup_fenced(session, profile, quiesce, progress, None)
            .await
    }

    /// [`Backups::backup`] by a fleet owner: the manifest carries the
    /// fence's epoch, and is written only if the fence confirms, once the
    /// archive is stored, that this host still owns the session. A refused
    /// backup deletes its archive and fails with [`BackupError::Fenced`].
    pub async fn backup_fenced(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        quiesce: Arc<dyn Quiesce>,
        progress: &Progress,
        fence: Option<&dyn Fence>,
    ) -> Result<Manifest, BackupError> {
        let mut guard = ResumeGuard(None);
        if self.options.mode == BackupMode::Quiesce {
            guard = ResumeGuard(Some((Arc::clone(&quiesce), session.clone())));
            if let Err(source) = quiesce.pause(session).await {
                guard.resume().await;
                return Err(BackupError::Quiesce {
                    session: session.clone(),
                    source,
                });
            }
        }
        let published = self
            .publish(session, profile, progress, &mut guard, fence)
            .await;
        guard.resume().await;
        published
    }

    async fn publish(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        progress: &Progress,
        guard: &mut ResumeGuard,
        fence: Option<&dyn Fence>,
    ) -> Result<Manifest, BackupError> {
        let started = Instant::now();
        let claim = profile.clone();
        let inventory = tokio::task::spawn_blocking(move || claim.inventory())
            .await
            .map_err(task_failed)??;
        let dir = profile.dir().to_path_buf();
        if !inventory.exists {
            return Err(BackupError::NoProfile {
                session: session.clone(),
                dir,
            });
        }
        if let (BackupMode::Quiesce, LockState::Held { host, pid }) =
            (self.options.mode, &inventory.lock)
        {
            return Err(VolumeError::Held {
                dir,
                host: host.clone(),
                pid: *pid,
            }
            .into());
        }
        if !inventory.critical_complete() {
            return Err(BackupError::MissingCritical {
                session: session.clone(),
                dir,
                missing: inventory.critical_missing(),
            });
        }

        let created = Utc::now();
        let id = BackupId::new(created);
        let encrypted = !self.options.pack.encrypt_to.is_empty();
        let archive_name = format!("{id}.tar.gz{}", if encrypted { ".age" } else { "" });
        let archive_key = self.key(session, &archive_name);

        let upload = self
            .store
            .put_multipart(&archive_key)
            .await
            .map_err(self.store_err("start uploading", &archive_key))?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, store::PART_SIZE);
        let (writer, chunks) = store::upload_channel();
        let (excludes, pack_options, progress) = (
            self.options.excludes.clone(),
            self.options.pack.clone(),
            progress.clone(),
        );
        let pack_dir = dir.clone();
        let packing = tokio::task::spawn_blocking(move || {
            archive::pack(&pack_dir, &excludes, &pack_options, writer, &progress)
        });
        let fed = store::feed(&mut upload, chunks).await;
        let packed = packing.await;
        // The profile has been read: writers may come back while the last
        // parts are uploaded.
        guard.resume().await;

        let packed = match (fed, packed) {
            (Err(source), _) => {
                abort(upload, &archive_key).await;
                return Err(self.store_err("upload", &archive_key)(source));
            }
            (Ok(_), Err(join)) => {
                abort(upload, &archive_key).await;
                return Err(task_failed(join));
            }
            (Ok(_), Ok(Err(source))) => {
                abort(upload, &archive_key).await;
                return Err(BackupError::Archive {
                    session: session.clone(),
                    id,
                    key: archive_key.to_string(),
                    source: Box::new(source),
                });
            }
            (Ok(_), Ok(Ok(summary))) => summary,
        };
        upload
            .finish()
            .await
            .map_err(self.store_err("finish uploading", &archive_key))?;
        let stored = self
            .store
            .head(&archive_key)
            .await
            .map_err(self.store_err("check", &archive_key))?;
        if stored.size != packed.size {
            let _ = self.store.delete(&archive_key).await;
            return Err(BackupError::Archive {
                session: session.clone(),
                id,
                key: archive_key.to_string(),
                source: Box::new(ArchiveError::SizeMismatch {
                    expected: packed.size,
                    actual: stored.size,
                }),
            });
        }

        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            session: session.clone(),
            id: id.clone(),
            created,
            archive: archive_name,
            size: packed.size,
            sha256: packed.sha256,
            files: packed.files,
            profile_bytes: packed.bytes_in,
            host: volume::hostname(),
            vigil_version: env!("CARGO_PKG_VERSION").to_string(),
            critical: inventory.critical.iter().map(|c| c.path.clone()).collect(),
            encrypted,
            mode: match self.options.mode {
                BackupMode::Quiesce => "quiesce",
                BackupMode::Live => "live",
            }
            .to_string(),
            excludes: self.options.excludes.patterns().to_vec(),
            epoch: fence.map(|f| f.epoch()),
        };
        if let Some(fence) = fence
            && let Err(source) = fence.confirm(session).await
        {
            // A leftover would be pruned after the grace period; delete it
            // now, since it can never be published.
            let _ = self.store.delete(&archive_key).await;
            tracing::warn!(%session, %id, epoch = fence.epoch(), error = %source, "backup not published: this host lost the session");
            return Err(BackupError::Fenced {
                session: session.clone(),
                epoch: fence.epoch(),
                source,
            });
        }
        let manifest_key = self.key(session, &format!("{id}.manifest.json"));
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
        self.store
            .put(&manifest_key, PutPayload::from(body))
            .await
            .map_err(self.store_err("write the manifest", &manifest_key))?;
        tracing::info!(
            %session, %id, size = manifest.size, files = manifest.files,
            profile_bytes = manifest.profile_bytes, seconds = started.elapsed().as_secs_f64(),
            store = %self.url, "backup published"
        );
        Ok(manifest)
    }
}

async fn abort(upload: WriteMultipart, key: &StorePath) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(key = %key, error = %e, "could not abort the upload; pruning removes what is left");
    }
}

/// Makes sure `resume` follows `pause`, even if the backup future is
/// dropped half-way.
struct ResumeGuard(Option<(Arc<dyn Quiesce>, SessionId)>);

impl ResumeGuard {
    async fn resume(&mut self) {
        if let Some((hook, session)) = self.0.take()
            && let Err(e) = hook.resume(&session).await
        {
            tracing::error!(%session, error = %e, "the quiesce hook could not resume the profile");
        }
    }
}

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        if let Some((hook, session)) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Dropped mid-backup (cancelled): resume on a task of its own,
            // since a destructor cannot wait.
            runtime.spawn(async move {
                if let Err(e) = hook.resume(&session).await {
                    tracing::error!(%session, error = %e, "the quiesce hook could not resume the profile");
                }
            });
        }
    }
}
