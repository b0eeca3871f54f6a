//! Copying a profile folder for `vigil import`, with the same exclusions
//! and link rules as archives.

use std::fs;
use std::path::{Path, PathBuf};

use super::{ArchiveError, Excludes, Progress, link_stays_inside};
/// Copies a profile folder (an import source) into `dst`, an existing empty
/// folder, leaving out `excludes`. Links are kept when they stay inside
/// the profile and skipped otherwise. Returns (files, bytes).
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    excludes: &Excludes,
    progress: &Progress,
) -> Result<(u64, u64), ArchiveError> {
    let root = fs::canonicalize(src).map_err(|source| ArchiveError::Read {
        path: src.to_path_buf(),
        source,
    })?;
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let from_dir = root.join(&rel_dir);
        let entries = fs::read_dir(&from_dir).map_err(|source| ArchiveError::Read {
            path: from_dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ArchiveError::Read {
                path: from_dir.clone(),
                source,
            })?;
            let rel = rel_dir.join(entry.file_name());
            if excludes.is_excluded(&rel) {
                continue;
            }
            let from = entry.path();
            let to = dst.join(&rel);
            let read_err = |source| ArchiveError::Read {
                path: from.clone(),
                source,
            };
            let write_err = |source| ArchiveError::Write {
                path: to.clone(),
                source,
            };
            let meta = fs::symlink_metadata(&from).map_err(read_err)?;
            if meta.is_dir() {
                fs::create_dir(&to).map_err(write_err)?;
                stack.push(rel);
            } else if meta.is_symlink() {
                let target = fs::read_link(&from).map_err(read_err)?;
                if link_stays_inside(&root, &from_dir, &target) {
                    std::os::unix::fs::symlink(&target, &to).map_err(write_err)?;
                } else {
                    tracing::warn!(path = %from.display(), target = %target.display(), "skipping a link that leads outside the profile");
                }
            } else if meta.is_file() {
                let n = fs::copy(&from, &to).map_err(|source| ArchiveError::Write {
                    path: to.clone(),
                    source,
                })?;
                files += 1;
                bytes += n;
                progress.add(n, 1);
            }
        }
    }
    Ok((files, bytes))
}
