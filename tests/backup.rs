//! Backups as an operator sees them, on a local folder and on a real S3
//! server: publish, list, restore byte for byte, fall back past a damaged
//! backup, refuse what cannot bring a login back, encrypt, prune, schedule.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::profile;
use common::storage::{Setup, StoreKind};
use vigil::archive::Progress;
use vigil::backup::{BackupError, HookFuture, NoQuiesce, Quiesce};
use vigil::id::SessionId;

on_both_stores!(
    a_deleted_profile_comes_back_byte_for_byte,
    a_damaged_newest_backup_is_skipped_and_marked,
    a_truncated_backup_is_caught_before_the_profile_is_touched,
    a_profile_without_its_login_is_never_published,
    a_complete_profile_is_replaced_only_when_forced,
    encrypted_backups_hide_the_login_and_restore_with_the_identity,
    retention_keeps_the_newest_good_backups_and_drops_leftovers,
);

async fn a_deleted_profile_comes_back_byte_for_byte(kind: StoreKind) {
    let s = Setup::new(kind, "");
    profile::generate(&s.profile_dir(), 3 << 20, 1);
    let before = profile::snapshot(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();

    let manifest = s.back_up(&backups, &claim).await.unwrap();
    assert_eq!(manifest.files as usize, before.len());
    assert_eq!(manifest.critical.len(), 2);

    let listed = backups.list(&s.session).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].is_good());
    assert_eq!(listed[0].manifest, manifest);

    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    let report = backups
        .restore_newest(&s.session, &claim, false, &Progress::default())
        .await
        .unwrap();
    assert_eq!(report.id, manifest.id);
    assert!(report.skipped.is_empty());
    assert_eq!(profile::snapshot(&s.profile_dir()), before);
    // Caches and locks were left out; nothing is left beside the profile.
    assert!(!s.profile_dir().join("Default/Cache").exists());
    assert!(std::fs::symlink_metadata(s.profile_dir().join("SingletonLock")).is_err());
    let beside: Vec<_> = std::fs::read_dir(s.profile_dir().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("vigil-staging") || n.contains("vigil-old"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

async fn a_damaged_newest_backup_is_skipped_and_marked(kind: StoreKind) {
    let s = Setup::new(kind, "");
    profile::generate(&s.profile_dir(), 1 << 20, 2);
    let older_state = profile::snapshot(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();
    let older = s.back_up(&backups, &claim).await.unwrap();
    std::fs::write(
        s.profile_dir().join(profile::ORIGIN_DB).join("000099.log"),
        b"newer",
    )
    .unwrap();
    let newer = s.back_up(&backups, &claim).await.unwrap();

    // One bit flipped in the middle of the newest archive.
    let raw = s.raw();
    let mut bytes = raw.read(&newer.archive).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    raw.write(&newer.archive, bytes).await;

    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    let report = backups
        .restore_newest(&s.session, &claim, false, &Progress::default())
        .await
        .unwrap();
    assert_eq!(report.id, older.id);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, newer.id);
    assert!(
        report.skipped[0].1.contains("checksum mismatch"),
        "{}",
        report.skipped[0].1
    );
    assert_eq!(profile::snapshot(&s.profile_dir()), older_state);

    // Every host now sees the damage; the restore policy gets the fact.
    let listed = backups.list(&s.session).await.unwrap();
    assert_eq!(listed[0].id(), &newer.id);
    assert!(!listed[0].is_good());
    assert!(listed[1].is_good());
    assert!(
        raw.names()
            .await
            .contains(&format!("{}.failed.json", newer.id))
    );
}

async fn a_truncated_backup_is_caught_before_the_profile_is_touched(kind: StoreKind) {
    let s = Setup::new(kind, "");
    profile::generate(&s.profile_dir(), 1 << 20, 3);
    let backups = s.backups();
    let claim = s.claim();
    let m = s.back_up(&backups, &claim).await.unwrap();
    let raw = s.raw();
    let bytes = raw.read(&m.archive).await;
    raw.write(&m.archive, bytes[..bytes.len() * 2 / 3].to_vec())
        .await;

    // The local profile was changed since: a failed restore must keep it.
    std::fs::write(
        s.profile_dir().join("Default/Preferences"),
        b"{\"local\":1}",
    )
    .unwrap();
    let before = profile::snapshot(&s.profile_dir());
    let err = backups
        .restore(&s.session, &m.id, &claim, true, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.is_damaged_backup(), "{err}");
    assert!(err.to_string().contains("mismatch"), "{err}");
    assert_eq!(profile::snapshot(&s.profile_dir()), before);

    let listed = backups.list(&s.session).await.unwrap();
    assert!(
        !listed[0].is_good(),
        "a truncated archive is listed as damaged"
    );
}

async fn a_profile_without_its_login_is_never_published(kind: StoreKind) {
    let s = Setup::new(kind, "");
    profile::small(&s.profile_dir());
    std::fs::remove_dir_all(s.profile_dir().join("Default/IndexedDB")).unwrap();
    let backups = s.backups();
    let claim = s.claim();
    let err = s.back_up(&backups, &claim).await.unwrap_err();
    assert!(matches!(err, BackupError::MissingCritical { .. }), "{err}");
    assert!(err.to_string().contains("Default/IndexedDB"), "{err}");
    assert!(backups.list(&s.session).await.unwrap().is_empty());
    assert!(s.raw().names().await.is_empty(), "nothing was uploaded");

    // An empty critical folder is no better than a missing one.
    std::fs::create_dir_all(s.profile_dir().join("Default/IndexedDB/empty.leveldb")).unwrap();
    let err = s.back_up(&backups, &claim).await.unwrap_err();
    assert!(matches!(err, BackupError::MissingCritical { .. }), "{err}");
}

async fn a_complete_profile_is_replaced_only_when_forced(kind: StoreKind) {
    let s = Setup::new(kind, "");
    profile::small(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();
    let m = s.back_up(&backups, &claim).await.unwrap();
    std::fs::write(
        s.profile_dir().join("Default/Preferences"),
        b"{\"mine\":true}",
    )
    .unwrap();
    let err = backups
        .restore(&s.session, &m.id, &claim, false, &Progress::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::WouldOverwrite { .. }), "{err}");
    assert_eq!(
        std::fs::read(s.profile_dir().join("Default/Preferences")).unwrap(),
        b"{\"mine\":true}"
    );

    backups
        .restore(&s.session, &m.id, &claim, true, &Progress::default())
        .await
        .unwrap();
    // Restored, and marked as cleanly exited so Chromium shows no bubble.
    let prefs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.profile_dir().join("Default/Preferences")).unwrap(),
    )
    .unwrap();
    assert_eq!(prefs["profile"]["exit_type"], "Normal");
    assert_eq!(prefs["profile"]["name"], "Person 1");
}

async fn encrypted_backups_hide_the_login_and_restore_with_the_identity(kind: StoreKind) {
    let identity = age::x25519::Identity::generate();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("backup.key");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &key_file,
            format!("{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
    }
    let s = Setup::new(
        kind,
        &format!(
            "encrypt_to = [\"{}\"]\nidentity = \"{}\"",
            identity.to_public(),
            key_file.display()
        ),
    );
    profile::generate(&s.profile_dir(), 1 << 20, 4);
    let secret = b"the-login-token-0123456789";
    std::fs::write(
        s.profile_dir()
            .join(profile::LOCAL_STORAGE)
            .join("000777.log"),
        secret,
    )
    .unwrap();
    let before = profile::snapshot(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();
    let m = s.back_up(&backups, &claim).await.unwrap();
    assert!(m.encrypted);
    assert!(m.archive.ends_with(".tar.gz.age"));
    let stored = s.raw().read(&m.archive).await;
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    assert!(!stored.windows(secret.len()).any(|w| w == secret));

    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    backups
        .restore_newest(&s.session, &claim, false, &Progress::default())
        .await
        .unwrap();
    assert_eq!(profile::snapshot(&s.profile_dir()), before);

    // Without the identity: verify still checks the checksum; restore says what is missing.
    let mut blind_cfg = s.config.backup.clone();
    blind_cfg.identity = None;
    let blind = vigil::backup::Backups::open_with_env(&blind_cfg, &s.env()).unwrap();
    let summary = blind.verify(&s.session, &m.id).await.unwrap();
    assert_eq!(summary.entries, None);
    let elsewhere = tempfile::tempdir().unwrap();
    let other = vigil::volume::Profile::new(
        elsewhere.path().join("main"),
        s.profile().critical().to_vec(),
    );
    let err = blind
        .restore(
            &s.session,
            &m.id,
            &other.claim().unwrap(),
            false,
            &Progress::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::NoIdentity { .. }), "{err}");
}

async fn retention_keeps_the_newest_good_backups_and_drops_leftovers(kind: StoreKind) {
    let s = Setup::new(kind, "orphan_grace_hours = 1");
    profile::small(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let m = s.back_up(&backups, &claim).await.unwrap();
        ids.push(m.id);
    }
    // The newest one is damaged: it must not count toward keep_last = 2.
    let newest = ids.last().unwrap().clone();
    backups
        .mark_failed(&s.session, &newest, "test damage")
        .await
        .unwrap();
    // An interrupted upload: an archive with no manifest.
    let raw = s.raw();
    raw.write("20000101T000000Z-deadbeef.tar.gz", vec![1, 2, 3])
        .await;

    // Today nothing is old enough to go; the leftover is within its grace.
    let report = backups.prune(chrono::Utc::now(), false).await.unwrap();
    assert!(report.sessions[0].deleted.is_empty());
    assert!(report.sessions[0].leftovers.is_empty());

    // Forty days on: only the two newest good backups remain.
    let later = chrono::Utc::now() + chrono::Duration::days(40);
    let dry = backups.prune(later, true).await.unwrap();
    assert_eq!(dry.sessions[0].deleted.len(), 2);
    assert_eq!(
        backups.list(&s.session).await.unwrap().len(),
        4,
        "a dry run deletes nothing"
    );
    let report = backups.prune(later, false).await.unwrap();
    let session = &report.sessions[0];
    assert_eq!(session.session, s.session);
    let mut deleted = session.deleted.clone();
    deleted.sort();
    let mut expected = vec![ids[0].clone(), newest.clone()];
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(session.leftovers.len(), 1);
    let left: Vec<_> = backups
        .list(&s.session)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.manifest.id)
        .collect();
    assert_eq!(left, vec![ids[2].clone(), ids[1].clone()]);
    let names = raw.names().await;
    assert_eq!(names.len(), 4, "two archives and two manifests: {names:?}");
}

/// Records what the hook was asked, and can refuse to pause.
struct Recorder {
    calls: Mutex<Vec<String>>,
    fail_pause: bool,
}

impl Quiesce for Recorder {
    fn pause<'a>(&'a self, session: &'a SessionId) -> HookFuture<'a> {
        self.calls.lock().unwrap().push(format!("pause {session}"));
        let fail = self.fail_pause;
        Box::pin(async move {
            if fail {
                Err("browser would not close".into())
            } else {
                Ok(())
            }
        })
    }
    fn resume<'a>(&'a self, session: &'a SessionId) -> HookFuture<'a> {
        self.calls.lock().unwrap().push(format!("resume {session}"));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn the_browser_is_resumed_after_every_pause_even_when_the_backup_fails() {
    let s = Setup::new(StoreKind::File, "");
    profile::small(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();

    let hook = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        fail_pause: false,
    });
    backups
        .backup(&s.session, &claim, hook.clone(), &Progress::default())
        .await
        .unwrap();
    assert_eq!(*hook.calls.lock().unwrap(), ["pause main", "resume main"]);

    // A backup refused half-way still resumes the browser.
    std::fs::remove_dir_all(s.profile_dir().join("Default/Local Storage")).unwrap();
    hook.calls.lock().unwrap().clear();
    let err = backups
        .backup(&s.session, &claim, hook.clone(), &Progress::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::MissingCritical { .. }));
    assert_eq!(*hook.calls.lock().unwrap(), ["pause main", "resume main"]);

    // A pause that fails is reported, and resume is still called.
    let stubborn = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        fail_pause: true,
    });
    let err = backups
        .backup(&s.session, &claim, stubborn.clone(), &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("would not close"), "{err}");
    assert_eq!(
        *stubborn.calls.lock().unwrap(),
        ["pause main", "resume main"]
    );
}

#[tokio::test]
async fn live_mode_never_calls_the_hook() {
    let s = Setup::new(StoreKind::File, "mode = \"live\"");
    profile::small(&s.profile_dir());
    let hook = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        fail_pause: true,
    });
    let m = s
        .backups()
        .backup(&s.session, &s.claim(), hook.clone(), &Progress::default())
        .await
        .unwrap();
    assert_eq!(m.mode, "live");
    assert!(hook.calls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_backs_up_and_prunes_on_its_ticks() {
    let s = Setup::new(StoreKind::File, "schedule = \"* * * * * *\"");
    profile::small(&s.profile_dir());
    let backups = Arc::new(s.backups());
    let target = vigil::schedule::BackupTarget {
        session: s.session.clone(),
        profile: s.claim(),
        quiesce: Arc::new(NoQuiesce),
    };
    let schedule = vigil::schedule::Schedule::start(
        "backup",
        &s.config.backup.schedule,
        vigil::schedule::backup_task(Arc::clone(&backups), vec![target]),
    )
    .await
    .unwrap();
    let mut listed = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = backups.list(&s.session).await.unwrap().len();
        if listed >= 2 {
            break;
        }
    }
    schedule.shutdown().await;
    assert!(
        listed >= 2,
        "two ticks should have made two backups, saw {listed}"
    );
    // Once stopped, no more backups appear.
    let after_stop = backups.list(&s.session).await.unwrap().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(backups.list(&s.session).await.unwrap().len(), after_stop);
}
