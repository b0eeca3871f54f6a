//! What goes wrong in production, done on purpose: processes killed
//! mid-upload and mid-extract, hostile archives, archives without the
//! login, a full disk, an unreachable store. In every case the profile and
//! the previous backup survive, and the error says what happened.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::profile;
use common::storage::{RawStore, Setup, StoreKind};
use sha2::Digest;
use vigil::archive::{Progress, Sha256};
use vigil::backup::{BackupError, BackupId, MANIFEST_FORMAT, Manifest};

on_both_stores!(kill_9_during_upload_leaves_the_previous_backup_newest);

/// Runs `vigil` and kills it with SIGKILL as soon as a stderr line contains
/// `marker` and `ready()` holds. Returns its exit status.
fn kill_when(mut cmd: Command, marker: &str, ready: impl Fn() -> bool) -> std::process::ExitStatus {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let hit = line.contains(marker);
        seen.push(line);
        if hit {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !ready() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            child.kill().unwrap();
            return child.wait().unwrap();
        }
    }
    let status = child.wait().unwrap();
    panic!(
        "vigil ended ({status}) before {marker:?} appeared:\n{}",
        seen.join("\n")
    );
}

async fn kill_9_during_upload_leaves_the_previous_backup_newest(kind: StoreKind) {
    let s = Setup::new(kind, "orphan_grace_hours = 0");
    profile::small(&s.profile_dir());
    let backups = s.backups();
    let first = {
        let claim = s.claim();
        // A restore marks the exit clean; start from that for a byte-for-byte match.
        claim.reset_crash_exit_type().unwrap();
        s.back_up(&backups, &claim).await.unwrap()
    };
    let first_state = profile::snapshot(&s.profile_dir());
    // Enough incompressible data that the upload takes many parts.
    profile::generate(
        &s.profile_dir().join("Default/IndexedDB/big.blob"),
        40 << 20,
        9,
    );

    let mut cmd = s.vigil();
    cmd.args(["backup", "main"])
        .env("RUST_LOG", "vigil::backup=trace");
    let status = tokio::task::spawn_blocking(move || {
        kill_when(cmd, "archive bytes handed to the upload", || true)
    })
    .await
    .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed mid-upload, not finished: {status}"
    );

    let listed = backups.list(&s.session).await.unwrap();
    assert_eq!(listed.len(), 1, "the partial archive is never listed");
    assert_eq!(listed[0].manifest, first);

    // Restorable, with the state of the first backup.
    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    let claim = s.claim();
    let report = backups
        .restore_newest(&s.session, &claim, false, &Progress::default())
        .await
        .unwrap();
    assert_eq!(report.id, first.id);
    assert_eq!(profile::snapshot(&s.profile_dir()), first_state);

    // Pruning removes what the killed upload left (grace of 0 hours).
    let report = backups
        .prune(chrono::Utc::now() + chrono::Duration::seconds(5), false)
        .await
        .unwrap();
    if kind == StoreKind::File {
        assert!(
            report.sessions[0].leftovers.iter().any(|k| k.contains('#')),
            "the staged upload file is swept: {report:?}"
        );
        let left: Vec<_> = std::fs::read_dir(s.local_store_dir().join("main"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "only the first backup remains: {left:?}");
    }
    assert_eq!(backups.list(&s.session).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_extract_leaves_the_old_profile_whole() {
    let s = Setup::new(StoreKind::File, "");
    profile::generate(&s.profile_dir(), 40 << 20, 11);
    let backups = s.backups();
    {
        let claim = s.claim();
        s.back_up(&backups, &claim).await.unwrap();
    }
    // The current profile differs from the backup: it must survive whole.
    std::fs::write(
        s.profile_dir().join("Default/Preferences"),
        b"{\"current\":true}",
    )
    .unwrap();
    std::fs::remove_dir_all(s.profile_dir().join("Default/Service Worker")).unwrap();
    let current = profile::snapshot(&s.profile_dir());

    let parent = s.profile_dir().parent().unwrap().to_path_buf();
    let staged_files = move || {
        staging_dirs(&parent)
            .iter()
            .map(|d| profile::all_paths(d).len())
            .sum::<usize>()
            > 50
    };
    let mut cmd = s.vigil();
    cmd.args(["restore", "main", "--force"])
        .env("RUST_LOG", "vigil=info");
    let status = tokio::task::spawn_blocking(move || {
        kill_when(
            cmd,
            "extracting the backup beside the profile",
            staged_files,
        )
    })
    .await
    .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed mid-extract, not finished: {status}"
    );
    let parent = s.profile_dir().parent().unwrap().to_path_buf();
    assert!(
        !staging_dirs(&parent).is_empty(),
        "the kill left a half-written staging folder"
    );
    assert_eq!(profile::snapshot(&s.profile_dir()), current);

    // The next start cleans up and nothing of the current profile is lost.
    drop(s.claim());
    assert!(staging_dirs(&parent).is_empty());
    assert_eq!(profile::snapshot(&s.profile_dir()), current);
}

fn staging_dirs(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("vigil-staging"))
        .collect()
}

// ---------------------------------------------------------- crafted archives

/// A tar entry written byte by byte, so that names no honest tar writer
/// produces (`../x`, `/x`) can be made.
struct Raw<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: b'0',
        link: "",
        data,
    }
}

fn tar_gz(entries: &[Raw]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", e.data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(e.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Publishes `archive` as a committed backup, with a correct checksum: only
/// its content is hostile.
async fn publish(raw: &RawStore, s: &Setup, archive: Vec<u8>, tag: &str) -> BackupId {
    let created = chrono::Utc::now();
    let id: BackupId = format!("{}-{tag}", created.format("%Y%m%dT%H%M%SZ"))
        .parse()
        .unwrap();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        session: s.session.clone(),
        id: id.clone(),
        created,
        archive: format!("{id}.tar.gz"),
        size: archive.len() as u64,
        sha256: Sha256(sha2::Sha256::digest(&archive).into()),
        files: 1,
        profile_bytes: 1,
        host: "elsewhere".into(),
        vigil_version: "0".into(),
        critical: s.profile().critical().to_vec(),
        encrypted: false,
        mode: "quiesce".into(),
        excludes: vec![],
        epoch: None,
    };
    raw.write(&manifest.archive, archive).await;
    raw.write(
        &format!("{id}.manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await;
    id
}

const LOGIN: [(&str, &[u8]); 2] = [
    ("Default/IndexedDB/a.leveldb/000003.log", b"login"),
    ("Default/Local Storage/leveldb/000003.log", b"login"),
];

#[tokio::test]
async fn hostile_archives_write_nothing_outside_their_target() {
    let s = Setup::new(StoreKind::File, "");
    profile::small(&s.profile_dir());
    let raw = s.raw();
    let backups = s.backups();
    let claim = s.claim();
    let abs_target = format!("/tmp/vigil-evil-abs-{}", std::process::id());
    let cases: Vec<(&str, Vec<Raw>, &str)> = vec![
        ("dotdot", vec![file("../vigil-evil-dotdot", b"x")], ".."),
        ("absolute", vec![file(&abs_target, b"x")], "absolute"),
        (
            "linkout",
            vec![
                Raw {
                    name: "escape",
                    kind: b'2',
                    link: "../../..",
                    data: b"",
                },
                file("escape/vigil-evil-link", b"x"),
            ],
            "outside",
        ),
        (
            "linkabs",
            vec![Raw {
                name: "etc",
                kind: b'2',
                link: "/etc",
                data: b"",
            }],
            "outside",
        ),
        (
            "hardlink",
            vec![Raw {
                name: "passwd",
                kind: b'1',
                link: "/etc/passwd",
                data: b"",
            }],
            "hard link",
        ),
        (
            "device",
            vec![Raw {
                name: "null",
                kind: b'3',
                link: "",
                data: b"",
            }],
            "not accepted",
        ),
    ];
    let before = profile::snapshot(&s.profile_dir());
    let data_before = profile::all_paths(&s.path("data"));
    for (tag, hostile, why) in cases {
        let mut entries: Vec<Raw> = LOGIN.iter().map(|(n, d)| file(n, d)).collect();
        entries.extend(hostile);
        let id = publish(&raw, &s, tar_gz(&entries), tag).await;
        let err = backups
            .restore(&s.session, &id, &claim, true, &Progress::default())
            .await
            .unwrap_err();
        assert!(err.is_damaged_backup(), "{tag}: {err}");
        assert!(err.to_string().contains(why), "{tag}: {err}");
        assert_eq!(
            profile::snapshot(&s.profile_dir()),
            before,
            "{tag}: profile changed"
        );
        assert_eq!(
            profile::all_paths(&s.path("data")),
            data_before,
            "{tag}: data dir changed"
        );
    }
    for escaped in [
        s.path("data/vigil-evil-dotdot"),
        s.path("data/profiles/vigil-evil-dotdot"),
        PathBuf::from(&abs_target),
        s.path("vigil-evil-link"),
        s.path("data/vigil-evil-link"),
    ] {
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
    // Every one of them is now marked, and never offered again.
    assert!(
        backups
            .list(&s.session)
            .await
            .unwrap()
            .iter()
            .all(|e| !e.is_good())
    );
}

#[tokio::test]
async fn an_archive_without_the_login_is_refused_and_marked() {
    let s = Setup::new(StoreKind::File, "");
    profile::small(&s.profile_dir());
    let before = profile::snapshot(&s.profile_dir());
    let raw = s.raw();
    let backups = s.backups();
    let claim = s.claim();
    let id = publish(
        &raw,
        &s,
        tar_gz(&[file("Local State", b"{}"), file(LOGIN[0].0, b"x")]),
        "nologin",
    )
    .await;
    let err = backups
        .restore(&s.session, &id, &claim, true, &Progress::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackupError::ArchiveLacksCritical { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Default/Local Storage"), "{err}");
    assert_eq!(profile::snapshot(&s.profile_dir()), before);
    let verify = backups.verify(&s.session, &id).await.unwrap_err();
    assert!(verify.is_damaged_backup(), "{verify}");
    assert!(!backups.list(&s.session).await.unwrap()[0].is_good());
}

// ------------------------------------------------------------------- ENOSPC

/// A small tmpfs, so the disk fills up for real. Needs root (CI runs as
/// root); anything else fails the test rather than skipping it.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs at {} to fill a disk for real, which needs root \
             (CI runs as root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_disk_fails_the_backup_and_keeps_the_previous_one() {
    let root = tempfile::tempdir().unwrap();
    let _disk = Tmpfs::mount(&root.path().join("store"), "6m");
    let s = Setup::in_dir(root, StoreKind::File, "", "data", "store");
    profile::small(&s.profile_dir());
    let backups = s.backups();
    let claim = s.claim();
    claim.reset_crash_exit_type().unwrap();
    let first_state = profile::snapshot(&s.profile_dir());
    let first = s.back_up(&backups, &claim).await.unwrap();
    std::fs::write(
        s.profile_dir().join(profile::ORIGIN_DB).join("000100.ldb"),
        profile::Noise::new(5).random(12 << 20),
    )
    .unwrap();
    let err = s.back_up(&backups, &claim).await.unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let listed = backups.list(&s.session).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].manifest, first);

    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    backups
        .restore_newest(&s.session, &claim, false, &Progress::default())
        .await
        .unwrap();
    assert_eq!(profile::snapshot(&s.profile_dir()), first_state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_fails_the_restore_and_keeps_the_profile() {
    // Big files are streamed by the reading thread, small ones go to
    // writer threads: the disk fills up on one path, then on the other.
    for (big, small, failing) in [(6 << 20, 0, "000100.ldb"), (2 << 20, 50, "blobs")] {
        full_data_disk(big, small, failing).await;
    }
}

async fn full_data_disk(big: usize, small_files: usize, failing: &str) {
    let root = tempfile::tempdir().unwrap();
    let _disk = Tmpfs::mount(&root.path().join("data"), "10m");
    let s = Setup::in_dir(root, StoreKind::File, "", "data", "backups");
    profile::small(&s.profile_dir());
    let mut noise = profile::Noise::new(6);
    std::fs::write(
        s.profile_dir().join(profile::ORIGIN_DB).join("000100.ldb"),
        noise.random(big),
    )
    .unwrap();
    for i in 0..small_files {
        // Sorted before the database: written first on restore.
        let blob = s
            .profile_dir()
            .join(format!("Default/IndexedDB/blobs/{i:03}"));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(blob, noise.random(100 << 10)).unwrap();
    }
    let backups = s.backups();
    let claim = s.claim();
    let m = s.back_up(&backups, &claim).await.unwrap();
    let before = profile::snapshot(&s.profile_dir());

    // The profile (6-7 MiB) and its staged copy do not fit in 10 MiB.
    let err = backups
        .restore(&s.session, &m.id, &claim, true, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(err.to_string().contains(failing), "names the file: {err}");
    assert!(
        !err.is_damaged_backup(),
        "a full disk is not the backup's fault"
    );
    assert_eq!(profile::snapshot(&s.profile_dir()), before);
    assert!(staging_dirs(s.profile_dir().parent().unwrap()).is_empty());
    assert!(
        backups.list(&s.session).await.unwrap()[0].is_good(),
        "not marked damaged"
    );
}

// ------------------------------------------------------ unreachable store

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_gives_a_clear_error_after_retries_and_loses_nothing() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = Setup::new(StoreKind::File, "");
    profile::small(&s.profile_dir());
    let config = s.path("unreachable.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"
[backup]
store = "s3://nowhere/vigil"
retry_timeout_secs = 3
max_retries = 2
[backup.s3]
endpoint = "http://{dead}"
path_style = true
allow_http = true
[[session]]
id = "main"
url = "https://app.example.test"
"#
        ),
    )
    .unwrap();
    let before = profile::snapshot(&s.profile_dir());

    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.arg("--config")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "info");
        cmd.envs(s.env());
        cmd.output().unwrap()
    };
    let started = Instant::now();
    let out = run(&["backup", "main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("s3://nowhere/vigil"),
        "names the store: {stderr}"
    );
    assert!(stderr.contains("retries"), "says it retried: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(out.stdout.is_empty(), "no backup id printed");
    assert_eq!(profile::snapshot(&s.profile_dir()), before);

    let out = run(&["restore", "main", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("s3://nowhere/vigil"), "{stderr}");
    assert_eq!(profile::snapshot(&s.profile_dir()), before);

    // The local store still works, and the profile was never touched.
    let out = s.vigil().args(["backup", "main"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
