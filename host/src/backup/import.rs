//! Bringing an existing login into Vigil: a Chromium user-data-dir, a
//! whatsapp-web.js `LocalAuth` folder (`.wwebjs_auth/session-<id>`, itself
//! a user-data-dir), or a `.tar.gz` of one, at its top level or inside a
//! single folder. The result goes through the same staging, checks and
//! atomic swap as a restore.

use std::fs;
use std::path::{Path, PathBuf};

use super::{BackupError, task_failed};
use crate::archive::{self, Decoding, Excludes, Progress};
use crate::id::SessionId;
use crate::volume::ProfilePath;
use crate::volume::{LockState, Profile, ProfileClaim, VolumeError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub session: SessionId,
    /// The folder or archive imported from.
    pub source: PathBuf,
    /// The profile now in place.
    pub profile: PathBuf,
    pub files: u64,
    pub bytes: u64,
}

/// Imports `source` as the profile of `session`. A complete profile
/// already in place is replaced only with `force`; a source held by a
/// running browser, or lacking the critical files, is refused.
pub async fn import(
    session: &SessionId,
    source: &Path,
    profile: &ProfileClaim,
    excludes: &Excludes,
    force: bool,
    progress: &Progress,
) -> Result<ImportReport, BackupError> {
    let (session, source, claim, excludes, progress) = (
        session.clone(),
        source.to_path_buf(),
        profile.clone(),
        excludes.clone(),
        progress.clone(),
    );
    tokio::task::spawn_blocking(move || {
        import_blocking(&session, &source, &claim, &excludes, force, &progress)
    })
    .await
    .map_err(task_failed)?
}

fn import_blocking(
    session: &SessionId,
    source: &Path,
    claim: &ProfileClaim,
    excludes: &Excludes,
    force: bool,
    progress: &Progress,
) -> Result<ImportReport, BackupError> {
    let unreadable = |e: std::io::Error| BackupError::ImportSource {
        path: source.to_path_buf(),
        reason: e.to_string(),
    };
    let critical = claim.profile().critical().to_vec();
    let current = claim.inventory()?;
    if let LockState::Held { host, pid } = current.lock {
        return Err(VolumeError::Held {
            dir: current.dir,
            host,
            pid,
        }
        .into());
    }
    if current.is_complete() && !force {
        return Err(BackupError::WouldOverwrite {
            session: session.clone(),
            dir: current.dir,
        });
    }

    let meta = fs::metadata(source).map_err(unreadable)?;
    let mut staging = claim.stage()?;
    let (files, bytes) = if meta.is_dir() {
        let root = profile_root(source, &critical).map_err(unreadable)?;
        // Copying a profile a browser is writing gives torn LevelDB files.
        if let LockState::Held { host, pid } = Profile::new(&root, critical.clone()).lock_state()? {
            return Err(VolumeError::Held {
                dir: root,
                host,
                pid,
            }
            .into());
        }
        archive::copy_tree(&root, staging.path(), excludes, progress).map_err(|source_err| {
            BackupError::ImportArchive {
                path: source.to_path_buf(),
                source: Box::new(source_err),
            }
        })?
    } else {
        let file = fs::File::open(source).map_err(unreadable)?;
        let summary = archive::unpack(file, staging.path(), None, Decoding::Plain, progress)
            .map_err(|e| BackupError::ImportArchive {
                path: source.to_path_buf(),
                source: Box::new(e),
            })?;
        let missing = staging.critical_missing(&critical)?;
        if !looks_like_profile(staging.path(), &missing, &critical) {
            staging.hoist_single_folder()?;
        }
        (summary.files, summary.bytes_out)
    };
    staging.clear_locks()?;
    let missing = staging.critical_missing(&critical)?;
    if !missing.is_empty() {
        return Err(BackupError::MissingCritical {
            session: session.clone(),
            dir: source.to_path_buf(),
            missing,
        });
    }
    staging.reset_crash_exit_type()?;
    claim.replace_with(staging)?;
    tracing::info!(%session, source = %source.display(), files, bytes, "profile imported");
    Ok(ImportReport {
        session: session.clone(),
        source: source.to_path_buf(),
        profile: claim.dir().to_path_buf(),
        files,
        bytes,
    })
}

/// A user-data-dir has `Default/` or `Local State` (or the critical
/// paths); otherwise a folder holding exactly one folder (`.wwebjs_auth`
/// with one `session-<id>`) is looked into.
fn profile_root(source: &Path, critical: &[ProfilePath]) -> std::io::Result<PathBuf> {
    let missing: Vec<ProfilePath> = critical
        .iter()
        .filter(|c| fs::symlink_metadata(source.join(c.as_path())).is_err())
        .cloned()
        .collect();
    if looks_like_profile(source, &missing, critical) {
        return Ok(source.to_path_buf());
    }
    let folders: Vec<PathBuf> = fs::read_dir(source)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    match folders.as_slice() {
        [only] => Ok(only.clone()),
        _ => Ok(source.to_path_buf()),
    }
}

fn looks_like_profile(dir: &Path, missing: &[ProfilePath], critical: &[ProfilePath]) -> bool {
    missing.len() < critical.len()
        || dir.join("Default").is_dir()
        || dir.join("Local State").is_file()
}
