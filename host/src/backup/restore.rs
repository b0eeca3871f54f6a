//! Restoring and verifying: download, check, extract beside, swap.

use std::sync::Arc;

use object_store::path::Path as StorePath;

use super::manifest::BackupId;
use super::{
    BackupEntry, BackupError, Backups, Identities, Lineage, RestoreReport, store, task_failed,
};
use crate::archive::{self, ArchiveError, CheckSummary, Decoding, Expected, Progress};
use crate::id::SessionId;
use crate::volume::ProfilePath;
use crate::volume::{LockState, ProfileClaim, VolumeError};

impl Backups {
    /// Restores backup `id` into the profile: download, check the sha256,
    /// extract beside the profile, check the critical files, then swap.
    /// Any failure leaves the profile as it was. A complete profile is
    /// replaced only with `force`.
    pub async fn restore(
        &self,
        session: &SessionId,
        id: &BackupId,
        profile: &ProfileClaim,
        force: bool,
        progress: &Progress,
    ) -> Result<RestoreReport, BackupError> {
        self.check_target(session, profile, force).await?;
        let entry = self.entry(session, id).await?;
        let restored = self.restore_entry(&entry, profile, progress).await;
        if let Err(e) = &restored {
            self.mark_if_damaged(session, id, e).await;
        }
        let (files, bytes) = restored?;
        Ok(RestoreReport {
            session: session.clone(),
            id: id.clone(),
            files,
            bytes,
            skipped: Vec::new(),
        })
    }

    /// Restores the newest good backup; a damaged one is marked and the
    /// next older one is tried.
    pub async fn restore_newest(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        force: bool,
        progress: &Progress,
    ) -> Result<RestoreReport, BackupError> {
        self.check_target(session, profile, force).await?;
        let entries = self.list(session).await?;
        self.restore_first_good(session, entries, profile, progress)
            .await
    }

    /// [`Backups::restore_newest`] by a fleet owner: only backups its
    /// lineage admits are candidates (see [`Lineage`]).
    pub async fn restore_newest_admitted(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        force: bool,
        progress: &Progress,
        lineage: &Lineage,
    ) -> Result<RestoreReport, BackupError> {
        self.check_target(session, profile, force).await?;
        let entries = self.list_admitted(session, lineage).await?;
        self.restore_first_good(session, entries, profile, progress)
            .await
    }

    async fn restore_first_good(
        &self,
        session: &SessionId,
        entries: Vec<BackupEntry>,
        profile: &ProfileClaim,
        progress: &Progress,
    ) -> Result<RestoreReport, BackupError> {
        let mut skipped = Vec::new();
        for entry in entries.into_iter().filter(BackupEntry::is_good) {
            match self.restore_entry(&entry, profile, progress).await {
                Ok((files, bytes)) => {
                    return Ok(RestoreReport {
                        session: session.clone(),
                        id: entry.manifest.id,
                        files,
                        bytes,
                        skipped,
                    });
                }
                Err(e) if e.is_damaged_backup() => {
                    self.mark_if_damaged(session, entry.id(), &e).await;
                    tracing::warn!(%session, id = %entry.id(), error = %e, "backup damaged; trying the one before");
                    skipped.push((entry.manifest.id, e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        Err(BackupError::NoGoodBackup {
            session: session.clone(),
            tried: skipped,
        })
    }

    async fn check_target(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        force: bool,
    ) -> Result<(), BackupError> {
        let claim = profile.clone();
        let inventory = tokio::task::spawn_blocking(move || claim.inventory())
            .await
            .map_err(task_failed)??;
        if let LockState::Held { host, pid } = inventory.lock {
            return Err(VolumeError::Held {
                dir: inventory.dir,
                host,
                pid,
            }
            .into());
        }
        if inventory.is_complete() && !force {
            return Err(BackupError::WouldOverwrite {
                session: session.clone(),
                dir: inventory.dir,
            });
        }
        Ok(())
    }

    async fn restore_entry(
        &self,
        entry: &BackupEntry,
        profile: &ProfileClaim,
        progress: &Progress,
    ) -> Result<(u64, u64), BackupError> {
        let manifest = &entry.manifest;
        let session = &manifest.session;
        let key = self.key(session, &manifest.archive);
        let archive_err = |source: ArchiveError| BackupError::Archive {
            session: session.clone(),
            id: manifest.id.clone(),
            key: key.to_string(),
            source: Box::new(source),
        };
        let identities = if manifest.encrypted {
            match self.identities()? {
                Some(ids) => Some(ids),
                None => {
                    return Err(BackupError::NoIdentity {
                        session: session.clone(),
                        id: manifest.id.clone(),
                    });
                }
            }
        } else {
            None
        };

        let claim = profile.clone();
        let staging = tokio::task::spawn_blocking(move || claim.stage())
            .await
            .map_err(task_failed)??;
        let (reader, pump) = self.download(entry, &key).await?;
        let target = staging.path().to_path_buf();
        let expect = Expected {
            sha256: manifest.sha256,
            size: manifest.size,
        };
        let progress = progress.clone();
        tracing::info!(session = %session, id = %manifest.id, staging = %target.display(), "extracting the backup beside the profile");
        // The staging folder moves into the blocking task, so that a failed
        // extraction is also deleted there, off the async threads.
        let unpacking = tokio::task::spawn_blocking(move || {
            let decoding = match &identities {
                Some(ids) => Decoding::Age(ids),
                None => Decoding::Plain,
            };
            archive::unpack(reader, &target, Some(expect), decoding, &progress)
                .map(|summary| (summary, staging))
        });
        let (pumped, unpacked) = tokio::join!(pump, unpacking);
        pumped.map_err(self.store_err("download", &key))?;
        let (unpacked, staging) = unpacked.map_err(task_failed)?.map_err(archive_err)?;

        let critical = profile.profile().critical().to_vec();
        let claim = profile.clone();
        let id = manifest.id.clone();
        let session_id = session.clone();
        tokio::task::spawn_blocking(move || {
            let missing = staging.critical_missing(&critical)?;
            if !missing.is_empty() {
                return Err(BackupError::ArchiveLacksCritical {
                    session: session_id,
                    id,
                    missing,
                });
            }
            staging.reset_crash_exit_type()?;
            claim.replace_with(staging)?;
            Ok(())
        })
        .await
        .map_err(task_failed)??;
        tracing::info!(%session, id = %manifest.id, files = unpacked.files, bytes = unpacked.bytes_out, profile = %profile.dir().display(), "profile restored");
        Ok((unpacked.files, unpacked.bytes_out))
    }

    /// A reader of the archive for blocking code, and the future that feeds
    /// it (await both together). A `file://` archive is read straight from
    /// disk: object_store would hand it over in 8 KiB hops.
    async fn download(
        &self,
        entry: &BackupEntry,
        key: &StorePath,
    ) -> Result<(Box<dyn std::io::Read + Send>, store::Pump), BackupError> {
        let missing = || BackupError::ArchiveMissing {
            session: entry.manifest.session.clone(),
            id: entry.manifest.id.clone(),
            key: key.to_string(),
        };
        if let Some(dir) = &self.local_dir {
            let path = dir.join(key.as_ref());
            return match std::fs::File::open(&path) {
                Ok(file) => Ok((
                    Box::new(std::io::BufReader::with_capacity(256 << 10, file)),
                    Box::pin(async { Ok(()) }),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
                Err(e) => Err(self.store_err("download", key)(
                    object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                )),
            };
        }
        match store::download(&self.store, key).await {
            Ok((reader, pump)) => Ok((Box::new(reader), Box::pin(pump))),
            Err(object_store::Error::NotFound { .. }) => Err(missing()),
            Err(e) => Err(self.store_err("download", key)(e)),
        }
    }

    fn identities(&self) -> Result<Option<Identities>, BackupError> {
        let Some(path) = &self.options.identity else {
            return Ok(None);
        };
        let failed = |reason: String| BackupError::Identity {
            path: path.clone(),
            reason,
        };
        let file = age::IdentityFile::from_file(path.to_string_lossy().into_owned())
            .map_err(|e| failed(e.to_string()))?;
        let identities = file.into_identities().map_err(|e| failed(e.to_string()))?;
        if identities.is_empty() {
            return Err(failed("holds no identity".into()));
        }
        Ok(Some(Arc::new(identities)))
    }

    /// Downloads backup `id` and checks it: size and sha256 always; when it
    /// can be decoded (plain, or encrypted with the identity at hand) also
    /// that the tar stream is whole and holds the critical files. A damaged
    /// backup is marked.
    pub async fn verify(
        &self,
        session: &SessionId,
        id: &BackupId,
    ) -> Result<CheckSummary, BackupError> {
        let entry = self.entry(session, id).await?;
        let checked = self.check_entry(&entry).await;
        if let Err(e) = &checked {
            self.mark_if_damaged(session, id, e).await;
        }
        checked
    }

    async fn check_entry(&self, entry: &BackupEntry) -> Result<CheckSummary, BackupError> {
        let manifest = &entry.manifest;
        let session = &manifest.session;
        let key = self.key(session, &manifest.archive);
        let identities = if manifest.encrypted {
            self.identities()?
        } else {
            None
        };
        let (reader, pump) = self.download(entry, &key).await?;
        let expect = Expected {
            sha256: manifest.sha256,
            size: manifest.size,
        };
        let critical = manifest.critical.clone();
        let encrypted = manifest.encrypted;
        let checking = tokio::task::spawn_blocking(move || {
            let decoding = match (&identities, encrypted) {
                (Some(ids), _) => Decoding::Age(ids),
                (None, true) => Decoding::Opaque,
                (None, false) => Decoding::Plain,
            };
            archive::check(reader, Some(expect), decoding, &critical)
        });
        let (pumped, checked) = tokio::join!(pump, checking);
        pumped.map_err(self.store_err("download", &key))?;
        let summary = checked
            .map_err(task_failed)?
            .map_err(|source| BackupError::Archive {
                session: session.clone(),
                id: manifest.id.clone(),
                key: key.to_string(),
                source: Box::new(source),
            })?;
        if let Some(present) = &summary.critical_present {
            let missing: Vec<ProfilePath> = manifest
                .critical
                .iter()
                .filter(|c| !present.contains(c))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(BackupError::ArchiveLacksCritical {
                    session: session.clone(),
                    id: manifest.id.clone(),
                    missing,
                });
            }
        }
        Ok(summary)
    }
}
