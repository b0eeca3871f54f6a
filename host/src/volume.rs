//! One browser profile directory on the volume: what is in it (inventory),
//! who holds it (Chromium's `Singleton*` lock), and replacing it atomically.
//!
//! A [`Profile`] only looks. Changing a profile needs a [`ProfileClaim`]: an
//! advisory lock beside the profile, so two Vigil processes (the service
//! and a `vigil restore` typed by an operator) never rewrite the same
//! profile at once. Claiming also repairs what an interrupted restore left
//! behind.
//!
//! This module never talks to a browser, a store or a policy, and knows no
//! web app: which files hold a login ("critical files") is the caller's
//! list. Everything here is blocking file-system work: call it from
//! `spawn_blocking`.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::ProfilePath;

/// Where Chromium records that it did not exit cleanly; resetting it avoids
/// the "restore pages?" bubble after a restore or a crash.
const PREFERENCES: &str = "Default/Preferences";

/// Names of the temporary folders Vigil puts beside a profile named `p`:
/// `.p.vigil-staging-XXXX` (a restore being written) and `.p.vigil-old-XXXX`
/// (a replaced profile not yet deleted). Both are garbage after a crash.
const STAGING_TAG: &str = "vigil-staging-";
const OLD_TAG: &str = "vigil-old-";

/// A profile directory and the paths in it that hold the login.
#[derive(Debug, Clone)]
pub struct Profile {
    dir: PathBuf,
    critical: Vec<ProfilePath>,
}

/// What is on disk, as plain facts for the restore policy and `vigil inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inventory {
    pub dir: PathBuf,
    pub exists: bool,
    pub critical: Vec<CriticalFile>,
    /// Bytes in regular files, everything included.
    pub size_bytes: u64,
    pub files: u64,
    pub lock: LockState,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CriticalFile {
    pub path: ProfilePath,
    pub state: Presence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Presence {
    Missing,
    /// There, but holds no data (an empty file, or a folder without a
    /// non-empty file in it).
    Empty,
    Present {
        bytes: u64,
    },
}

/// Who holds the profile, read from Chromium's `SingletonLock` symlink
/// (`<hostname>-<pid>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "lock")]
pub enum LockState {
    Free,
    /// A live process on this host holds it: Vigil must not touch it.
    Held {
        host: String,
        pid: u32,
    },
    /// Left behind by a crash, or by a profile copied from another machine.
    Stale {
        target: String,
        why: StaleReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    OtherHost,
    DeadProcess,
    /// Not `<hostname>-<pid>`.
    Unrecognized,
}

impl Inventory {
    /// Every critical path is there with data in it.
    pub fn critical_complete(&self) -> bool {
        self.critical
            .iter()
            .all(|c| matches!(c.state, Presence::Present { .. }))
    }

    /// The critical paths that are missing or empty.
    pub fn critical_missing(&self) -> Vec<ProfilePath> {
        self.critical
            .iter()
            .filter(|c| !matches!(c.state, Presence::Present { .. }))
            .map(|c| c.path.clone())
            .collect()
    }

    /// A profile worth protecting: a restore will not overwrite it unless forced.
    pub fn is_complete(&self) -> bool {
        self.exists && self.critical_complete()
    }
}

/// Why a profile could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "{}: held by a running browser (pid {pid} on this host, {host}); stop it first",
        dir.display()
    )]
    Held {
        dir: PathBuf,
        host: String,
        pid: u32,
    },
    #[error("{}: another Vigil process is working on this profile", dir.display())]
    Claimed { dir: PathBuf },
    #[error("{}: not valid JSON: {source}", path.display())]
    Preferences {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl Profile {
    pub fn new(dir: impl Into<PathBuf>, critical: Vec<ProfilePath>) -> Self {
        Self {
            dir: dir.into(),
            critical,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The critical paths missing or empty on disk now. Stops at the first
    /// file with data in each, so it costs little on a big profile (unlike
    /// [`inventory`](Self::inventory), which walks everything).
    pub fn critical_missing(&self) -> Result<Vec<ProfilePath>, VolumeError> {
        critical_missing_in(&self.dir, &self.critical)
    }

    pub fn critical(&self) -> &[ProfilePath] {
        &self.critical
    }

    /// Looks at the profile without changing anything.
    pub fn inventory(&self) -> Result<Inventory, VolumeError> {
        inventory_of(&self.dir, &self.critical)
    }

    /// Who holds the profile.
    pub fn lock_state(&self) -> Result<LockState, VolumeError> {
        lock_state(&self.dir)
    }

    /// Takes the right to change this profile, and repairs what an
    /// interrupted restore left beside it. Fails with
    /// [`VolumeError::Claimed`] while another Vigil process holds it; the
    /// claim ends when the returned value is dropped.
    pub fn claim(&self) -> Result<ProfileClaim, VolumeError> {
        let parent = self.parent()?;
        fs::create_dir_all(&parent).map_err(io_err(&parent, "create the folder"))?;
        let lock_path = parent.join(format!(".{}.vigil-claim", self.name()?));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open the claim file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(VolumeError::Claimed {
                    dir: self.dir.clone(),
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(&lock_path, "lock the claim file")(e));
            }
        }
        let claim = ProfileClaim {
            profile: self.clone(),
            _lock: std::sync::Arc::new(file),
        };
        claim.recover()?;
        Ok(claim)
    }

    fn parent(&self) -> Result<PathBuf, VolumeError> {
        let abs = std::path::absolute(&self.dir).map_err(io_err(&self.dir, "resolve the path"))?;
        abs.parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| VolumeError::Io {
                path: self.dir.clone(),
                op: "use as a profile",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a profile cannot be the root folder",
                ),
            })
    }

    fn name(&self) -> Result<String, VolumeError> {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| VolumeError::Io {
                path: self.dir.clone(),
                op: "use as a profile",
                source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no folder name"),
            })
    }
}

/// The right to change one profile (see [`Profile::claim`]). Clones share
/// the claim; it ends when the last one is dropped.
#[derive(Debug, Clone)]
pub struct ProfileClaim {
    profile: Profile,
    _lock: std::sync::Arc<fs::File>,
}

/// What [`ProfileClaim::clear_stale_locks`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockCleanup {
    pub removed: Vec<PathBuf>,
}

/// A folder beside the profile that a restore or import is written into.
/// Removed on drop unless it was swapped in.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The critical paths missing or empty in the staged tree. Stops at the
    /// first file with data in each, so it costs little on a big profile.
    pub fn critical_missing(
        &self,
        critical: &[ProfilePath],
    ) -> Result<Vec<ProfilePath>, VolumeError> {
        critical_missing_in(&self.path, critical)
    }

    /// The staged tree seen as a profile with the same critical files.
    pub fn inventory(&self, critical: &[ProfilePath]) -> Result<Inventory, VolumeError> {
        inventory_of(&self.path, critical)
    }

    /// Removes `Singleton*` locks copied along with the tree: a staged
    /// profile is never in use.
    pub fn clear_locks(&self) -> Result<Vec<PathBuf>, VolumeError> {
        remove_singletons(&self.path)
    }

    /// See [`ProfileClaim::reset_crash_exit_type`].
    pub fn reset_crash_exit_type(&self) -> Result<bool, VolumeError> {
        reset_crash_exit_type(&self.path)
    }

    /// Moves the staged profile down one level when the real profile is the
    /// only folder inside it (archives that hold `session-<id>/...`).
    /// Returns whether it did.
    pub fn hoist_single_folder(&mut self) -> Result<bool, VolumeError> {
        let entries: Vec<_> = fs::read_dir(&self.path)
            .map_err(io_err(&self.path, "list"))?
            .collect::<Result<_, _>>()
            .map_err(io_err(&self.path, "list"))?;
        let [only] = entries.as_slice() else {
            return Ok(false);
        };
        let ty = only.file_type().map_err(io_err(&only.path(), "stat"))?;
        if !ty.is_dir() {
            return Ok(false);
        }
        let inner = only.path();
        let hoisted = sibling(&self.path, STAGING_TAG)?;
        fs::rename(&inner, &hoisted).map_err(io_err(&inner, "move"))?;
        fs::remove_dir(&self.path).map_err(io_err(&self.path, "remove"))?;
        self.path = hoisted;
        Ok(true)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staging folder; it is removed at the next claim");
        }
    }
}

impl ProfileClaim {
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn dir(&self) -> &Path {
        &self.profile.dir
    }

    pub fn inventory(&self) -> Result<Inventory, VolumeError> {
        self.profile.inventory()
    }

    /// Removes `Singleton*` at the top and under `Default/` when no live
    /// process on this host holds them. Refuses with
    /// [`VolumeError::Held`] otherwise.
    pub fn clear_stale_locks(&self) -> Result<LockCleanup, VolumeError> {
        let dir = &self.profile.dir;
        if let LockState::Held { host, pid } = lock_state(dir)? {
            return Err(VolumeError::Held {
                dir: dir.clone(),
                host,
                pid,
            });
        }
        let socket_dir = abandoned_socket_dir(dir);
        let mut cleanup = LockCleanup {
            removed: remove_singletons(dir)?,
        };
        if let Some(socket_dir) = socket_dir {
            match fs::remove_dir_all(&socket_dir) {
                Ok(()) => cleanup.removed.push(socket_dir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %socket_dir.display(), error = %e, "could not remove a dead browser's socket folder")
                }
            }
        }
        if !cleanup.removed.is_empty() {
            tracing::info!(profile = %dir.display(), removed = cleanup.removed.len(), "cleared stale browser locks");
        }
        Ok(cleanup)
    }

    /// Marks the last exit as clean in `Default/Preferences`, so the next
    /// launch shows no "restore pages?" bubble. Returns whether the file
    /// changed; a profile without preferences is left alone.
    pub fn reset_crash_exit_type(&self) -> Result<bool, VolumeError> {
        reset_crash_exit_type(&self.profile.dir)
    }

    /// A new empty folder beside the profile, on the same file system, for
    /// a restore or import to be written into.
    pub fn stage(&self) -> Result<Staging, VolumeError> {
        let path = sibling(&self.profile.dir, STAGING_TAG)?;
        fs::create_dir(&path).map_err(io_err(&path, "create a staging folder"))?;
        Ok(Staging { path, keep: false })
    }

    /// Puts the staged tree in place of the profile. The swap is one atomic
    /// rename (`RENAME_EXCHANGE`) where the file system allows it, so the
    /// profile path always holds either the old or the new tree; the old
    /// one is deleted only afterwards.
    ///
    /// Nothing is fsynced: on a journaling file system a crash leaves the
    /// old or the new tree, and a lost restore is simply redone at the next
    /// start, while an fsync of the folder would force every restored byte
    /// to disk first (seconds on a big profile).
    pub fn replace_with(&self, mut staging: Staging) -> Result<(), VolumeError> {
        let target = &self.profile.dir;
        let exists = fs::symlink_metadata(target).is_ok();
        if !exists {
            fs::rename(&staging.path, target)
                .map_err(io_err(target, "move the staged profile into place"))?;
            staging.keep = true;
            return Ok(());
        }
        let old = match exchange(&staging.path, target) {
            Ok(()) => {
                // The staging path now holds the old profile.
                staging.path.clone()
            }
            Err(e) if matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::INVAL.raw_os_error() || code == rustix::io::Errno::NOSYS.raw_os_error()) =>
            {
                // No RENAME_EXCHANGE here (e.g. some overlay file systems):
                // two renames, with a window that `recover` repairs.
                let old = sibling(target, OLD_TAG)?;
                fs::rename(target, &old).map_err(io_err(target, "move the old profile aside"))?;
                if let Err(e) = fs::rename(&staging.path, target) {
                    let _ = fs::rename(&old, target);
                    return Err(io_err(target, "move the staged profile into place")(e));
                }
                staging.keep = true;
                old
            }
            Err(e) => return Err(io_err(target, "swap in the staged profile")(e)),
        };
        staging.keep = true;
        if let Err(e) = remove_tree(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not delete the replaced profile; it is removed at the next claim");
        }
        Ok(())
    }

    /// Puts back a profile that an interrupted two-rename swap left aside,
    /// then deletes leftover staging and old folders. Run by
    /// [`Profile::claim`].
    fn recover(&self) -> Result<(), VolumeError> {
        let target = &self.profile.dir;
        let parent = self.profile.parent()?;
        let prefix = format!(".{}.", self.profile.name()?);
        let leftovers: Vec<PathBuf> = match fs::read_dir(&parent) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(OsStr::to_str)
                        .and_then(|n| n.strip_prefix(&prefix))
                        .is_some_and(|rest| {
                            rest.starts_with(STAGING_TAG) || rest.starts_with(OLD_TAG)
                        })
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&parent, "list")(e)),
        };
        if fs::symlink_metadata(target).is_err()
            && let Some(old) = leftovers
                .iter()
                .find(|p| p.to_string_lossy().contains(OLD_TAG))
        {
            tracing::warn!(profile = %target.display(), from = %old.display(), "putting back a profile left aside by an interrupted restore");
            fs::rename(old, target).map_err(io_err(target, "put back the previous profile"))?;
        }
        for path in leftovers {
            if fs::symlink_metadata(&path).is_err() {
                continue;
            }
            tracing::info!(path = %path.display(), "removing a leftover from an interrupted restore");
            remove_tree(&path).map_err(io_err(&path, "remove a leftover folder"))?;
        }
        Ok(())
    }
}

/// The entries of `folder`, or `None` when it does not exist.
fn list_if_present(folder: &Path) -> Result<Option<fs::ReadDir>, VolumeError> {
    match fs::read_dir(folder) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(folder, "list")(e)),
    }
}

/// Removes `Singleton*` at the top of `dir` and under `Default/`.
fn remove_singletons(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let mut removed = Vec::new();
    for folder in [dir.to_path_buf(), dir.join("Default")] {
        let Some(entries) = list_if_present(&folder)? else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&folder, "list"))?;
            if !is_singleton(&entry.file_name()) {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, "remove a stale lock")(e)),
            }
        }
    }
    Ok(removed)
}

/// The `/tmp/org.chromium.Chromium.XXXXXX` folder a dead browser's
/// `SingletonSocket` link points to: Chromium leaves one behind at every
/// crash. Only a folder of that name in the temp folder, holding a socket
/// nobody listens on, is returned.
fn abandoned_socket_dir(profile: &Path) -> Option<PathBuf> {
    let target = fs::read_link(profile.join("SingletonSocket")).ok()?;
    let folder = target.parent()?;
    let named_like_chromium = folder
        .file_name()?
        .to_str()?
        .starts_with("org.chromium.Chromium.");
    let in_temp = folder.parent() == Some(std::env::temp_dir().as_path())
        || folder.parent() == Some(Path::new("/tmp"));
    let listening = std::os::unix::net::UnixStream::connect(&target).is_ok();
    (named_like_chromium && in_temp && !listening).then(|| folder.to_path_buf())
}

fn is_singleton(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with("Singleton"))
}

/// A fresh name `.<profile>.<tag><random>` beside `profile`.
fn sibling(profile: &Path, tag: &str) -> Result<PathBuf, VolumeError> {
    let abs = std::path::absolute(profile).map_err(io_err(profile, "resolve the path"))?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.trim_start_matches('.');
    let name = name.split(".vigil-").next().unwrap_or(name);
    let random = uuid::Uuid::new_v4().simple().to_string();
    Ok(abs.with_file_name(format!(".{name}.{tag}{}", &random[..12])))
}

fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn inventory_of(dir: &Path, critical: &[ProfilePath]) -> Result<Inventory, VolumeError> {
    let exists = match fs::metadata(dir) {
        Ok(m) => m.is_dir(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(dir, "stat")(e)),
    };
    let (size_bytes, files) = if exists { tree_size(dir)? } else { (0, 0) };
    let critical = critical
        .iter()
        .map(|path| {
            Ok(CriticalFile {
                path: path.clone(),
                state: presence(&dir.join(path.as_path()))?,
            })
        })
        .collect::<Result<_, VolumeError>>()?;
    Ok(Inventory {
        dir: dir.to_path_buf(),
        exists,
        critical,
        size_bytes,
        files,
        lock: if exists {
            lock_state(dir)?
        } else {
            LockState::Free
        },
    })
}

fn presence(path: &Path) -> Result<Presence, VolumeError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Presence::Missing),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    let bytes = if meta.is_dir() {
        tree_size(path)?.0
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    };
    Ok(if bytes == 0 {
        Presence::Empty
    } else {
        Presence::Present { bytes }
    })
}

/// A non-empty regular file at `path` or anywhere under it.
fn critical_missing_in(
    root: &Path,
    critical: &[ProfilePath],
) -> Result<Vec<ProfilePath>, VolumeError> {
    let mut missing = Vec::new();
    for c in critical {
        if !has_data(&root.join(c.as_path()))? {
            missing.push(c.clone());
        }
    }
    Ok(missing)
}

fn has_data(path: &Path) -> Result<bool, VolumeError> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&p, "stat")(e)),
        };
        if meta.is_file() && meta.len() > 0 {
            return Ok(true);
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&p).map_err(io_err(&p, "list"))? {
                stack.push(entry.map_err(io_err(&p, "list"))?.path());
            }
        }
    }
    Ok(false)
}

/// Bytes and count of regular files under `dir`, not following links.
fn tree_size(dir: &Path) -> Result<(u64, u64), VolumeError> {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        // A browser may delete files while we walk; that is not an error.
        let Some(entries) = list_if_present(&folder)? else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&folder, "list"))?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// This machine's name as Chromium writes it into `SingletonLock`.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn lock_state(dir: &Path) -> Result<LockState, VolumeError> {
    let lock = dir.join("SingletonLock");
    // A symlink whose target does not exist: `exists()` would say false.
    let target = match fs::read_link(&lock) {
        Ok(t) => t.to_string_lossy().into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockState::Free),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            // A regular file named SingletonLock: not Chromium's format.
            return Ok(LockState::Stale {
                target: String::new(),
                why: StaleReason::Unrecognized,
            });
        }
        Err(e) => return Err(io_err(&lock, "read the lock")(e)),
    };
    Ok(judge_lock(&target, &hostname(), process_alive))
}

/// The decision, apart from the I/O: `<host>-<pid>` held by a live process
/// on this host is held; anything else is stale.
pub fn judge_lock(target: &str, this_host: &str, alive: impl Fn(u32) -> bool) -> LockState {
    let stale = |why| LockState::Stale {
        target: target.to_string(),
        why,
    };
    let Some((host, pid)) = target.rsplit_once('-') else {
        return stale(StaleReason::Unrecognized);
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return stale(StaleReason::Unrecognized);
    };
    if host != this_host {
        return stale(StaleReason::OtherHost);
    }
    if alive(pid) {
        LockState::Held {
            host: host.to_string(),
            pid,
        }
    } else {
        stale(StaleReason::DeadProcess)
    }
}

fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // Exists, but belongs to someone else: still alive.
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

fn reset_crash_exit_type(dir: &Path) -> Result<bool, VolumeError> {
    let path = dir.join(PREFERENCES);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(&path, "read")(e)),
    };
    let mut prefs: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| VolumeError::Preferences {
            path: path.clone(),
            source,
        })?;
    let Some(root) = prefs.as_object_mut() else {
        return Ok(false);
    };
    let profile = root
        .entry("profile")
        .or_insert_with(|| serde_json::json!({}));
    let Some(profile) = profile.as_object_mut() else {
        return Ok(false);
    };
    let clean = profile.get("exit_type").and_then(|v| v.as_str()) == Some("Normal")
        && profile.get("exited_cleanly").and_then(|v| v.as_bool()) != Some(false);
    if clean {
        return Ok(false);
    }
    profile.insert("exit_type".into(), "Normal".into());
    profile.insert("exited_cleanly".into(), true.into());
    let bytes = serde_json::to_vec(&prefs).map_err(|source| VolumeError::Preferences {
        path: path.clone(),
        source,
    })?;
    let tmp = path.with_extension("vigil-tmp");
    fs::write(&tmp, bytes).map_err(io_err(&tmp, "write"))?;
    fs::rename(&tmp, &path).map_err(io_err(&path, "replace"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_only_by_a_live_process_on_this_host() {
        let alive = |pid| pid == 42;
        assert_eq!(
            judge_lock("box-42", "box", alive),
            LockState::Held {
                host: "box".into(),
                pid: 42
            }
        );
        assert!(matches!(
            judge_lock("box-43", "box", alive),
            LockState::Stale {
                why: StaleReason::DeadProcess,
                ..
            }
        ));
        assert!(matches!(
            judge_lock("other-42", "box", alive),
            LockState::Stale {
                why: StaleReason::OtherHost,
                ..
            }
        ));
        // Host names may contain dashes; the pid is after the last one.
        assert!(matches!(
            judge_lock("my-box-42", "my-box", alive),
            LockState::Held { .. }
        ));
        assert!(matches!(
            judge_lock("garbage", "box", alive),
            LockState::Stale {
                why: StaleReason::Unrecognized,
                ..
            }
        ));
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
    }
}
