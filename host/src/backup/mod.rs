//! Backups of profiles in an object store: publish, list, verify, restore,
//! prune, and mark the damaged ones.
//!
//! Layout: everything of a session lives under `<prefix>/<session>/`:
//! `<id>.tar.gz` (or `.tar.gz.age`), then `<id>.manifest.json`, written only
//! once the archive is complete and its size checked. The manifest is the
//! commit point: listings read manifests only, so an interrupted upload is
//! never seen as a backup (retention deletes its leftovers after a grace
//! period). `<id>.failed.json` marks a backup found damaged.
//!
//! Keeping each session under its own prefix leaves room for several hosts
//! sharing one store (leases, fencing) without moving objects.
//!
//! This module never imports `session`, `supervisor`, `browser` or
//! `policy`, and knows no web app: the caller brings the profile's
//! critical files and a [`Quiesce`] hook to stop writers during a backup.

mod import;
mod manifest;
mod retention;
mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

pub use import::{ImportReport, import};
pub use manifest::{BackupId, FailureMark, MANIFEST_FORMAT, Manifest};
pub use retention::{Verdict, plan as plan_retention};

use crate::archive::{
    self, ArchiveError, CheckSummary, Decoding, Excludes, Expected, PackOptions, Progress,
};
use crate::config::{BackupConfig, BackupMode, KeepLast, ProfilePath};
use crate::id::SessionId;
use crate::volume::{self, LockState, ProfileClaim, VolumeError};

/// What the caller does around a backup to make the profile consistent.
/// The browser layer closes Chromium in `pause` and relaunches it in
/// `resume`.
///
/// `resume` is called once after every `pause`, whether `pause` succeeded
/// or not and whether the backup succeeded or not, as soon as the archive
/// has read the profile (the upload may still be finishing). If the backup
/// future is dropped half-way, `resume` still runs, on a spawned task.
pub trait Quiesce: Send + Sync {
    fn pause<'a>(&'a self, session: &'a SessionId) -> HookFuture<'a>;
    fn resume<'a>(&'a self, session: &'a SessionId) -> HookFuture<'a>;
}

pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send + 'a>>;
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// For callers with no browser running (the offline CLI): nothing to stop.
pub struct NoQuiesce;

impl Quiesce for NoQuiesce {
    fn pause<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }
    fn resume<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// One backup as listed: its manifest and, if it was found damaged, why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupEntry {
    pub manifest: Manifest,
    pub failure: Option<FailureMark>,
}

impl BackupEntry {
    /// Committed (manifest and checksum recorded) and never found damaged:
    /// a candidate for restore.
    pub fn is_good(&self) -> bool {
        self.failure.is_none()
    }
    pub fn id(&self) -> &BackupId {
        &self.manifest.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub session: SessionId,
    pub id: BackupId,
    pub files: u64,
    pub bytes: u64,
    /// Newer backups that were tried first and found damaged.
    pub skipped: Vec<(BackupId, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub sessions: Vec<SessionPrune>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionPrune {
    pub session: SessionId,
    pub kept: Vec<(BackupId, Verdict)>,
    pub deleted: Vec<BackupId>,
    /// Objects of interrupted uploads (or stray marks) removed.
    pub leftovers: Vec<String>,
}

/// Settings a [`Backups`] works with, read from `[backup]`.
#[derive(Clone)]
pub struct BackupOptions {
    pub mode: BackupMode,
    pub excludes: Excludes,
    pub pack: PackOptions,
    pub keep_days: u32,
    pub keep_last: KeepLast,
    pub orphan_grace: chrono::Duration,
    pub identity: Option<PathBuf>,
}

impl BackupOptions {
    pub fn from_config(cfg: &BackupConfig) -> Self {
        Self {
            mode: cfg.mode,
            excludes: Excludes::new(cfg.default_excludes, &cfg.exclude),
            pack: PackOptions {
                level: cfg.compression_level.get(),
                encrypt_to: cfg.encrypt_to.iter().map(|r| r.get().clone()).collect(),
                ..PackOptions::default()
            },
            keep_days: cfg.keep_days,
            keep_last: cfg.keep_last,
            orphan_grace: chrono::Duration::hours(i64::from(cfg.orphan_grace_hours)),
            identity: cfg.identity.clone(),
        }
    }
}

/// Why a backup operation failed. Messages name the session, the backup
/// and the object or folder involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("cannot open the backup store {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("backup store {store}: cannot {op} {key}: {source}")]
    Store {
        store: String,
        op: &'static str,
        key: String,
        source: Box<object_store::Error>,
    },
    #[error("session {session}: no profile at {}", dir.display())]
    NoProfile { session: SessionId, dir: PathBuf },
    #[error(
        "session {session}: {} lacks critical files ({}); refusing: such a backup could not bring the login back",
        dir.display(), join(missing)
    )]
    MissingCritical {
        session: SessionId,
        dir: PathBuf,
        missing: Vec<ProfilePath>,
    },
    #[error(
        "session {session}: {} already holds a complete profile; pass --force to replace it",
        dir.display()
    )]
    WouldOverwrite { session: SessionId, dir: PathBuf },
    #[error("session {session}: no backup {id}")]
    NotFound { session: SessionId, id: BackupId },
    #[error("session {session}: no good backup to restore{}", tried_list(tried))]
    NoGoodBackup {
        session: SessionId,
        tried: Vec<(BackupId, String)>,
    },
    #[error("session {session}: backup {id} ({key}): {source}")]
    Archive {
        session: SessionId,
        id: BackupId,
        key: String,
        source: Box<ArchiveError>,
    },
    #[error(
        "session {session}: backup {id} lacks critical files ({})",
        join(missing)
    )]
    ArchiveLacksCritical {
        session: SessionId,
        id: BackupId,
        missing: Vec<ProfilePath>,
    },
    #[error("session {session}: backup {id}: its archive {key} is missing from the store")]
    ArchiveMissing {
        session: SessionId,
        id: BackupId,
        key: String,
    },
    #[error(
        "session {session}: backup {id} is encrypted; set [backup] identity to an age identity file to restore it"
    )]
    NoIdentity { session: SessionId, id: BackupId },
    #[error("cannot import {}: {reason}", path.display())]
    ImportSource { path: PathBuf, reason: String },
    #[error("cannot import {}: {source}", path.display())]
    ImportArchive {
        path: PathBuf,
        source: Box<ArchiveError>,
    },
    #[error("identity file {}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
    #[error("session {session}: the quiesce hook failed: {source}")]
    Quiesce {
        session: SessionId,
        source: HookError,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("a background task failed: {0}")]
    Task(String),
}

impl BackupError {
    /// The backup itself is bad (damaged, truncated, incomplete): another
    /// one may still restore. Errors of this host, the network or the
    /// configuration are not.
    pub fn is_damaged_backup(&self) -> bool {
        match self {
            Self::Archive { source, .. } => source.is_damaged_archive(),
            Self::ArchiveLacksCritical { .. } | Self::ArchiveMissing { .. } => true,
            _ => false,
        }
    }
}

fn join(paths: &[ProfilePath]) -> String {
    paths
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn tried_list(tried: &[(BackupId, String)]) -> String {
    if tried.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = tried
        .iter()
        .map(|(id, why)| format!("\n  {id}: {why}"))
        .collect();
    format!("; tried:{}", lines.concat())
}

fn task_failed(e: tokio::task::JoinError) -> BackupError {
    BackupError::Task(e.to_string())
}

/// Keys read from the identity file, shared with the blocking archive code.
type Identities = Arc<Vec<Box<dyn age::Identity + Send + Sync>>>;

/// The backups of every session in one store.
pub struct Backups {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    url: String,
    local_dir: Option<PathBuf>,
    options: BackupOptions,
}

impl Backups {
    /// Opens the store named in `[backup]`, with credentials from the
    /// process environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(cfg: &BackupConfig) -> Result<Self, BackupError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::open_with_env(cfg, &env)
    }

    /// Like [`Backups::open`], with the environment given explicitly.
    pub fn open_with_env(
        cfg: &BackupConfig,
        env: &[(String, String)],
    ) -> Result<Self, BackupError> {
        let url = cfg.store.to_string();
        let opened = store::open(cfg, env).map_err(|reason| BackupError::Open {
            url: url.clone(),
            reason,
        })?;
        Ok(Self {
            store: opened.store,
            root: opened.root,
            url,
            local_dir: opened.local_dir,
            options: BackupOptions::from_config(cfg),
        })
    }

    pub fn store_url(&self) -> &str {
        &self.url
    }

    pub fn options(&self) -> &BackupOptions {
        &self.options
    }

    fn session_prefix(&self, session: &SessionId) -> StorePath {
        self.root.clone().join(session.as_str())
    }

    fn key(&self, session: &SessionId, name: &str) -> StorePath {
        self.session_prefix(session).join(name)
    }

    fn store_err<'a>(
        &'a self,
        op: &'static str,
        key: &'a StorePath,
    ) -> impl FnOnce(object_store::Error) -> BackupError + 'a {
        move |source| BackupError::Store {
            store: self.url.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    // --------------------------------------------------------------- backup

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
        let published = self.publish(session, profile, progress, &mut guard).await;
        guard.resume().await;
        published
    }

    async fn publish(
        &self,
        session: &SessionId,
        profile: &ProfileClaim,
        progress: &Progress,
        guard: &mut ResumeGuard,
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
        };
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

    // ---------------------------------------------------------------- list

    /// The backups of `session`, newest first.
    pub async fn list(&self, session: &SessionId) -> Result<Vec<BackupEntry>, BackupError> {
        Ok(self.listing(session).await?.entries)
    }

    /// Sessions that have anything in the store.
    pub async fn sessions(&self) -> Result<Vec<SessionId>, BackupError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(self.store_err("list", &self.root))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|n| SessionId::new(n).ok()))
            .collect())
    }

    /// Everything under `session`'s prefix, including what is not a backup.
    pub async fn listing(&self, session: &SessionId) -> Result<Listing, BackupError> {
        let prefix = self.session_prefix(session);
        let objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.store_err("list", &prefix))?;
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for meta in objects {
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            let Some((id, kind)) = name.split_once('.') else {
                continue;
            };
            let group = groups.entry(id.to_string()).or_default();
            match kind {
                "manifest.json" => group.manifest = Some(meta),
                "failed.json" => group.failed = Some(meta),
                "tar.gz" | "tar.gz.age" => group.archive = Some(meta),
                _ => {}
            }
        }

        let store = &self.store;
        let fetched: Vec<Fetched> = futures::stream::iter(groups)
            .map(|(id, group)| async move {
                let manifest = match &group.manifest {
                    Some(m) => Some(fetch_json::<Manifest>(store, &m.location).await),
                    None => None,
                };
                let failure = match &group.failed {
                    Some(m) => fetch_json::<FailureMark>(store, &m.location).await.ok(),
                    None => None,
                };
                Fetched {
                    id,
                    group,
                    manifest,
                    failure,
                }
            })
            .buffered(8)
            .collect()
            .await;

        let mut scan = Listing::default();
        for Fetched {
            id,
            group,
            manifest,
            failure,
        } in fetched
        {
            match manifest {
                None => {
                    scan.leftovers.extend(group.archive);
                    scan.leftovers.extend(group.failed);
                }
                Some(Err(reason)) => {
                    let key = group
                        .manifest
                        .map(|m| m.location.to_string())
                        .unwrap_or_default();
                    tracing::warn!(%session, key, reason, "unreadable manifest; the backup is not listed");
                    scan.unreadable.push((key, reason));
                }
                Some(Ok(manifest)) => {
                    let archive_names = [format!("{id}.tar.gz"), format!("{id}.tar.gz.age")];
                    if manifest.id.as_str() != id
                        || &manifest.session != session
                        || !archive_names.contains(&manifest.archive)
                    {
                        let key = group
                            .manifest
                            .map(|m| m.location.to_string())
                            .unwrap_or_default();
                        scan.unreadable
                            .push((key, "names another backup, session or archive".into()));
                        continue;
                    }
                    let problem = match &group.archive {
                        None => Some("its archive is missing from the store".to_string()),
                        Some(a) if a.size != manifest.size => Some(format!(
                            "its archive holds {} bytes, the manifest says {}",
                            a.size, manifest.size
                        )),
                        Some(_) => None,
                    };
                    let failure = failure.or_else(|| {
                        problem.map(|reason| FailureMark {
                            reason,
                            at: Utc::now(),
                            host: volume::hostname(),
                        })
                    });
                    scan.entries.push(BackupEntry { manifest, failure });
                }
            }
        }
        scan.entries.sort_by(|a, b| {
            (b.manifest.created, &b.manifest.id).cmp(&(a.manifest.created, &a.manifest.id))
        });
        Ok(scan)
    }

    async fn entry(&self, session: &SessionId, id: &BackupId) -> Result<BackupEntry, BackupError> {
        self.list(session)
            .await?
            .into_iter()
            .find(|e| e.id() == id)
            .ok_or_else(|| BackupError::NotFound {
                session: session.clone(),
                id: id.clone(),
            })
    }

    /// Records that backup `id` is damaged, so listings show it and
    /// restores skip it. Also done by restore and verify themselves when
    /// they find damage.
    pub async fn mark_failed(
        &self,
        session: &SessionId,
        id: &BackupId,
        reason: &str,
    ) -> Result<(), BackupError> {
        let key = self.key(session, &format!("{id}.failed.json"));
        let mark = FailureMark {
            reason: reason.to_string(),
            at: Utc::now(),
            host: volume::hostname(),
        };
        let body = serde_json::to_vec_pretty(&mark).expect("a mark always serializes");
        self.store
            .put(&key, PutPayload::from(body))
            .await
            .map_err(self.store_err("write the failure mark", &key))?;
        tracing::warn!(%session, %id, reason, "backup marked as damaged");
        Ok(())
    }

    async fn mark_if_damaged(&self, session: &SessionId, id: &BackupId, error: &BackupError) {
        if error.is_damaged_backup()
            && let Err(e) = self.mark_failed(session, id, &error.to_string()).await
        {
            tracing::warn!(%session, %id, error = %e, "could not record the damaged backup");
        }
    }

    // -------------------------------------------------------------- restore

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
        let mut skipped = Vec::new();
        for entry in self
            .list(session)
            .await?
            .into_iter()
            .filter(BackupEntry::is_good)
        {
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

    // --------------------------------------------------------------- verify

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

    // ---------------------------------------------------------------- prune

    /// Applies retention to every session in the store (see
    /// [`plan_retention`]) and removes leftovers of interrupted uploads
    /// older than the grace period. With `dry_run`, only reports.
    pub async fn prune(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<PruneReport, BackupError> {
        let mut report = PruneReport {
            dry_run,
            sessions: Vec::new(),
        };
        for session in self.sessions().await? {
            report
                .sessions
                .push(self.prune_session(&session, now, dry_run).await?);
        }
        Ok(report)
    }

    async fn prune_session(
        &self,
        session: &SessionId,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SessionPrune, BackupError> {
        let scan = self.listing(session).await?;
        let plan = plan_retention(
            &scan.entries,
            now,
            self.options.keep_days,
            self.options.keep_last,
        );
        let mut result = SessionPrune {
            session: session.clone(),
            kept: Vec::new(),
            deleted: Vec::new(),
            leftovers: Vec::new(),
        };
        for (id, verdict) in plan {
            if verdict.keeps() {
                result.kept.push((id, verdict));
                continue;
            }
            let entry = scan
                .entries
                .iter()
                .find(|e| e.id() == &id)
                .expect("the plan only names listed entries");
            if !dry_run {
                // The manifest goes first: a crash half-way leaves an
                // unlisted leftover, never a listed backup without data.
                for name in [
                    format!("{id}.manifest.json"),
                    entry.manifest.archive.clone(),
                    format!("{id}.failed.json"),
                ] {
                    self.delete(&self.key(session, &name)).await?;
                }
                tracing::info!(%session, %id, "backup expired and deleted");
            }
            result.deleted.push(id);
        }
        let grace_cutoff = now - self.options.orphan_grace;
        for meta in scan.leftovers {
            let is_mark = meta.location.as_ref().ends_with(".failed.json");
            if is_mark || meta.last_modified < grace_cutoff {
                if !dry_run {
                    self.delete(&meta.location).await?;
                }
                result.leftovers.push(meta.location.to_string());
            }
        }
        if let Some(dir) = &self.local_dir {
            let folder = dir.join(self.session_prefix(session).as_ref());
            let cutoff = std::time::SystemTime::from(grace_cutoff);
            let swept =
                tokio::task::spawn_blocking(move || sweep_staged_uploads(&folder, cutoff, dry_run))
                    .await
                    .map_err(task_failed)?;
            result.leftovers.extend(swept);
        }
        Ok(result)
    }

    async fn delete(&self, key: &StorePath) -> Result<(), BackupError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("delete", key)(e)),
        }
    }
}

/// One id's objects, with its manifest and mark read.
struct Fetched {
    id: String,
    group: Group,
    manifest: Option<Result<Manifest, String>>,
    failure: Option<FailureMark>,
}

#[derive(Default)]
struct Group {
    archive: Option<ObjectMeta>,
    manifest: Option<ObjectMeta>,
    failed: Option<ObjectMeta>,
}

/// Everything found under one session's prefix.
#[derive(Debug, Default)]
pub struct Listing {
    /// Backups with a readable manifest, newest first.
    pub entries: Vec<BackupEntry>,
    /// Archives and marks with no manifest (interrupted uploads).
    pub leftovers: Vec<ObjectMeta>,
    /// Manifests that could not be read: (object key, why).
    pub unreadable: Vec<(String, String)>,
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    store: &Arc<dyn ObjectStore>,
    key: &StorePath,
) -> Result<T, String> {
    let bytes = store
        .get(key)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

async fn abort(upload: WriteMultipart, key: &StorePath) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(key = %key, error = %e, "could not abort the upload; pruning removes what is left");
    }
}

/// `file://` stores write an upload to `<name>#<n>` and rename it when done;
/// a killed upload leaves that file, which listings never show.
fn sweep_staged_uploads(
    folder: &std::path::Path,
    cutoff: std::time::SystemTime,
    dry_run: bool,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains('#') {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if !old {
            continue;
        }
        if !dry_run && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove an interrupted upload");
            continue;
        }
        swept.push(entry.path().display().to_string());
    }
    swept
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
