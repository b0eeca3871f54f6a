//! A profile on disk: what `vigil inspect` reports, Chromium's lock, the
//! "crashed" flag, and the claim that keeps two Vigil processes apart.

mod common;

use std::os::unix::fs::symlink;
use std::process::{Child, Command};

use common::profile;
use vigil::volume::ProfilePath;
use vigil::volume::{LockState, Presence, Profile, StaleReason, VolumeError, hostname};

fn critical() -> Vec<ProfilePath> {
    vec![
        "Default/IndexedDB".parse().unwrap(),
        "Default/Local Storage".parse().unwrap(),
    ]
}

/// A live process whose pid can stand in for a running browser.
struct Live(Child);

impl Live {
    fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("sleep(1) to stand in for a browser"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn stop(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn inventory_reports_what_is_on_disk() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    let p = Profile::new(&dir, critical());

    let absent = p.inventory().unwrap();
    assert!(!absent.exists);
    assert!(!absent.is_complete());
    assert_eq!(absent.lock, LockState::Free);
    assert!(absent.critical.iter().all(|c| c.state == Presence::Missing));

    profile::small(&dir);
    let inv = p.inventory().unwrap();
    assert!(inv.exists && inv.is_complete());
    assert!(inv.size_bytes > 60_000 && inv.files >= 8, "{inv:?}");
    assert!(matches!(inv.critical[0].state, Presence::Present { bytes } if bytes > 40_000));
    // The lock link points at a name that does not exist: still seen.
    assert_eq!(
        inv.lock,
        LockState::Stale {
            target: "another-machine-4242".into(),
            why: StaleReason::OtherHost
        }
    );

    std::fs::remove_dir_all(dir.join("Default/Local Storage/leveldb")).unwrap();
    std::fs::create_dir_all(dir.join("Default/Local Storage/leveldb")).unwrap();
    std::fs::write(dir.join("Default/Local Storage/leveldb/LOCK"), b"").unwrap();
    let inv = p.inventory().unwrap();
    assert_eq!(inv.critical[1].state, Presence::Empty);
    assert!(!inv.is_complete());
    assert_eq!(
        inv.critical_missing(),
        vec!["Default/Local Storage".parse().unwrap()]
    );
}

#[test]
fn a_stale_lock_from_another_host_is_cleared_at_both_levels() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    profile::small(&dir);
    symlink("another-machine-4242", dir.join("Default/SingletonCookie")).unwrap();
    let claim = Profile::new(&dir, critical()).claim().unwrap();
    let cleared = claim.clear_stale_locks().unwrap();
    assert_eq!(cleared.removed.len(), 3, "{cleared:?}");
    for name in [
        "SingletonLock",
        "SingletonSocket",
        "Default/SingletonCookie",
    ] {
        assert!(
            std::fs::symlink_metadata(dir.join(name)).is_err(),
            "{name} left"
        );
    }
    assert_eq!(claim.inventory().unwrap().lock, LockState::Free);
    assert!(
        dir.join("Default/Preferences").exists(),
        "only locks are removed"
    );
}

#[test]
fn a_dead_browser_s_socket_folder_goes_with_its_lock_but_a_live_one_stays() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    profile::small(&dir);
    // What a kill -9 leaves: the socket link into a folder of its own in
    // the temp folder, where nobody listens any more.
    let dead = tempfile::Builder::new()
        .prefix("org.chromium.Chromium.")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
        .keep();
    std::fs::write(dead.join("SingletonSocket"), b"").unwrap();
    std::fs::remove_file(dir.join("SingletonSocket")).unwrap();
    symlink(dead.join("SingletonSocket"), dir.join("SingletonSocket")).unwrap();
    let claim = Profile::new(&dir, critical()).claim().unwrap();
    let cleared = claim.clear_stale_locks().unwrap();
    assert!(!dead.exists(), "the dead browser's folder is removed");
    assert!(cleared.removed.contains(&dead), "{cleared:?}");

    // A folder whose socket still answers belongs to a live browser.
    let live = tempfile::Builder::new()
        .prefix("org.chromium.Chromium.")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let _listener =
        std::os::unix::net::UnixListener::bind(live.path().join("SingletonSocket")).unwrap();
    symlink("another-machine-4242", dir.join("SingletonLock")).unwrap();
    symlink(
        live.path().join("SingletonSocket"),
        dir.join("SingletonSocket"),
    )
    .unwrap();
    claim.clear_stale_locks().unwrap();
    assert!(
        live.path().join("SingletonSocket").exists(),
        "a live socket stays"
    );
    assert!(std::fs::symlink_metadata(dir.join("SingletonSocket")).is_err());
}

#[test]
fn a_lock_held_by_a_live_local_process_is_refused_until_it_dies() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    profile::small(&dir);
    std::fs::remove_file(dir.join("SingletonLock")).unwrap();
    let browser = Live::start();
    let pid = browser.pid();
    symlink(format!("{}-{pid}", hostname()), dir.join("SingletonLock")).unwrap();

    let p = Profile::new(&dir, critical());
    assert_eq!(
        p.inventory().unwrap().lock,
        LockState::Held {
            host: hostname(),
            pid
        }
    );
    let claim = p.claim().unwrap();
    let err = claim.clear_stale_locks().unwrap_err();
    assert!(
        matches!(err, VolumeError::Held { pid: held, .. } if held == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&pid.to_string()));
    assert!(
        std::fs::symlink_metadata(dir.join("SingletonLock")).is_ok(),
        "a held lock stays"
    );

    browser.stop();
    assert!(matches!(
        p.inventory().unwrap().lock,
        LockState::Stale {
            why: StaleReason::DeadProcess,
            ..
        }
    ));
    claim.clear_stale_locks().unwrap();
    assert_eq!(p.inventory().unwrap().lock, LockState::Free);
}

#[test]
fn the_crashed_flag_is_reset_and_other_preferences_kept() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    profile::small(&dir);
    let claim = Profile::new(&dir, critical()).claim().unwrap();
    assert!(claim.reset_crash_exit_type().unwrap());
    let prefs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("Default/Preferences")).unwrap()).unwrap();
    assert_eq!(prefs["profile"]["exit_type"], "Normal");
    assert_eq!(prefs["profile"]["exited_cleanly"], true);
    assert_eq!(prefs["profile"]["name"], "Person 1");
    assert!(
        !claim.reset_crash_exit_type().unwrap(),
        "already clean: file untouched"
    );
}

#[test]
fn only_one_vigil_works_on_a_profile_at_a_time() {
    let root = tempfile::tempdir().unwrap();
    let p = Profile::new(root.path().join("main"), critical());
    let first = p.claim().unwrap();
    let err = p.claim().unwrap_err();
    assert!(matches!(err, VolumeError::Claimed { .. }), "{err}");
    let shared = first.clone();
    drop(first);
    assert!(p.claim().is_err(), "a clone keeps the claim");
    drop(shared);
    p.claim().unwrap();
}

#[test]
fn claiming_repairs_what_an_interrupted_restore_left() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    // Crash between "move the old profile aside" and "move the new one in".
    let aside = root.path().join(".main.vigil-old-0123456789ab");
    profile::small(&aside);
    let before = profile::snapshot(&aside);
    let half_written = root.path().join(".main.vigil-staging-ba9876543210");
    std::fs::create_dir_all(half_written.join("Default")).unwrap();
    std::fs::write(half_written.join("Default/partial"), b"x").unwrap();
    // Someone else's profile with a similar name is not touched.
    std::fs::create_dir_all(root.path().join(".mainly.vigil-staging-000000000000")).unwrap();

    let _claim = Profile::new(&dir, critical()).claim().unwrap();
    assert_eq!(
        profile::snapshot(&dir),
        before,
        "the old profile is back in place"
    );
    assert!(!aside.exists());
    assert!(!half_written.exists());
    assert!(
        root.path()
            .join(".mainly.vigil-staging-000000000000")
            .exists()
    );
}

#[test]
fn a_staged_tree_replaces_the_profile_and_the_old_one_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("main");
    profile::small(&dir);
    let claim = Profile::new(&dir, critical()).claim().unwrap();
    let staging = claim.stage().unwrap();
    std::fs::write(staging.path().join("new"), b"new").unwrap();
    claim.replace_with(staging).unwrap();
    assert_eq!(std::fs::read(dir.join("new")).unwrap(), b"new");
    assert!(!dir.join("Default").exists());
    let names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "profile and claim file only: {names:?}");

    // A staging folder dropped without being used disappears.
    let unused = claim.stage().unwrap();
    let path = unused.path().to_path_buf();
    drop(unused);
    assert!(!path.exists());
}
