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
//! sharing one store without moving objects. In a fleet, the owner passes
//! a [`Fence`]: its epoch goes into the manifest, and it confirms it still
//! owns the session right before the manifest is written; listings under
//! a [`Lineage`] refuse what a fenced owner published late. The fleet's
//! own objects live under `.fleet/`, a name no session id can take.
//!
//! This module never imports `session`, `supervisor`, `browser` or
//! `policy`, and knows no web app: the caller brings the profile's
//! critical files and a [`Quiesce`] hook to stop writers during a backup.

mod config;
mod import;
mod lineage;
mod listing;
mod manifest;
mod prune;
mod publish;
mod restore;
mod retention;
mod store;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore};

pub use config::{
    AgeRecipient, BackupConfig, BackupMode, CompressionLevel, CronSchedule, DEFAULT_CRITICAL,
    KeepLast, S3Options, StoreUrl,
};
pub use import::{ImportReport, import};
pub use lineage::{Lineage, Seal};
pub use manifest::{BackupId, FailureMark, MANIFEST_FORMAT, Manifest};
pub use retention::{Verdict, plan as plan_retention};

use crate::archive::{ArchiveError, Excludes, PackOptions};
use crate::id::SessionId;
use crate::volume::ProfilePath;
use crate::volume::VolumeError;

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

/// The owner side of a fleet as a backup sees it. A single host passes
/// none.
pub trait Fence: Send + Sync {
    /// The owner epoch stamped into the manifest.
    fn epoch(&self) -> u64;
    /// Called once the archive is stored, right before the manifest (the
    /// commit point) is written: an error means this host no longer owns
    /// the session, and nothing is published.
    fn confirm<'a>(&'a self, session: &'a SessionId) -> HookFuture<'a>;
}

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
    /// Backups younger than this are kept (`keep_days`).
    pub keep: chrono::Duration,
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
            keep: chrono_duration(cfg.keep),
            keep_last: cfg.keep_last,
            orphan_grace: chrono_duration(cfg.orphan_grace),
            identity: cfg.identity.clone(),
        }
    }
}

/// A configured age as chrono counts it; one beyond its range (millions of
/// years) means "forever" (the cutoffs saturate at the earliest date).
fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
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
    #[error(
        "session {session}: this host no longer owns it (epoch {epoch}); the backup was not published: {source}"
    )]
    Fenced {
        session: SessionId,
        epoch: u64,
        source: HookError,
    },
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

    /// The opened store, for the fleet's own objects beside the backups.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where Vigil's objects live inside the store.
    pub fn root(&self) -> &StorePath {
        &self.root
    }

    /// For `file://` stores: the folder.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
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
