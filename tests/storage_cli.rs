//! The `vigil` storage commands as a new user types them: import a login,
//! back it up to S3 and to a folder, lose the profile, get it back byte for
//! byte, survive a corrupted backup. Plus what the commands say when
//! something is off.

mod common;

use std::process::{Command, Output};

use common::profile;
use common::storage::{Setup, StoreKind};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running vigil")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn import_back_up_to_s3_and_a_folder_lose_the_profile_and_survive_a_corrupted_backup() {
    let s = Setup::new(StoreKind::S3, "");
    // A second config: same profiles, backups in a local folder.
    let local = s.path("local.toml");
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let start = text.find("store = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let s3_table = text.find("[backup.s3]").unwrap();
    let session = text.find("[[session]]").unwrap();
    let local_text = format!(
        "{}store = \"file://local-backups\"{}{}",
        &text[..start],
        &text[end..s3_table],
        &text[session..]
    );
    std::fs::write(&local, local_text).unwrap();
    let vigil_local = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
        c.arg("--config").arg(&local);
        c
    };

    // The login a whatsapp-web.js bot kept so far.
    let wwebjs = s.path("bot/.wwebjs_auth/session-main");
    profile::generate(&wwebjs, 2 << 20, 21);
    let imported_state = profile::snapshot(&wwebjs);
    ok(s.vigil().args(["import", "main"]).arg(&wwebjs));
    assert_eq!(profile::snapshot(&s.profile_dir()), imported_state);
    assert!(std::fs::symlink_metadata(s.profile_dir().join("SingletonLock")).is_err());

    let to_s3 = ok(s.vigil().args(["backup", "main"]));
    let to_folder = ok(vigil_local().args(["backup", "main"]));
    assert_ne!(to_s3, to_folder);

    // The volume is lost; each store brings the profile back by itself.
    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    assert_eq!(ok(s.vigil().args(["restore", "main"])), to_s3);
    assert_eq!(profile::snapshot(&s.profile_dir()), imported_state);
    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    assert_eq!(ok(vigil_local().args(["restore", "main"])), to_folder);
    assert_eq!(profile::snapshot(&s.profile_dir()), imported_state);

    // A newer backup gets corrupted in the bucket.
    std::fs::write(
        s.profile_dir().join(profile::ORIGIN_DB).join("000900.log"),
        b"newer",
    )
    .unwrap();
    let newer = ok(s.vigil().args(["backup", "main"]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let raw = s.raw();
        let name = format!("{newer}.tar.gz");
        let mut bytes = raw.read(&name).await;
        let at = bytes.len() / 3;
        bytes[at] ^= 1;
        raw.write(&name, bytes).await;
    });
    let verify = run(s.vigil().args(["verify", "main", "--all"]));
    assert_eq!(code(&verify), 4, "{}", stderr(&verify));
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(report.contains(&format!("BAD  {newer}")), "{report}");
    assert!(report.contains(&format!("ok   {to_s3}")), "{report}");

    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    let restore = run(s.vigil().args(["restore", "main"]));
    assert!(restore.status.success(), "{}", stderr(&restore));
    assert_eq!(String::from_utf8_lossy(&restore.stdout).trim(), to_s3);
    assert_eq!(profile::snapshot(&s.profile_dir()), imported_state);

    let listed: serde_json::Value =
        serde_json::from_str(&ok(s.vigil().args(["backups", "main", "--json"]))).unwrap();
    assert_eq!(listed["session"], "main");
    let listed = &listed["backups"];
    assert_eq!(listed[0]["id"], newer.as_str());
    assert_eq!(listed[0]["verified"], false);
    assert!(listed[0]["size_bytes"].as_u64().unwrap() > 0);
    assert!(
        listed[0]["damaged"]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum")
    );
    assert_eq!(listed[1]["id"], to_s3.as_str());
    assert_eq!(listed[1]["verified"], true);
}

#[test]
fn archives_are_plain_tar_gz_that_tar_itself_can_restore() {
    let s = Setup::new(StoreKind::File, "");
    profile::generate(&s.profile_dir(), 3 << 20, 22);
    let before = profile::snapshot(&s.profile_dir());
    let id = ok(s.vigil().args(["backup", "main"]));
    let archive = s
        .local_store_dir()
        .join("main")
        .join(format!("{id}.tar.gz"));
    let by_hand = s.path("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&by_hand)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(profile::snapshot(&by_hand), before);
}

#[test]
fn imports_take_tar_gz_archives_at_top_level_or_in_one_folder() {
    for layout in ["top", "folder"] {
        let s = Setup::new(StoreKind::File, "");
        let src = s.path("seed/session-main");
        profile::generate(&src, 1 << 20, 23);
        let expected = profile::snapshot(&src);
        let archive = s.path("seed.tar.gz");
        let mut tar = Command::new("tar");
        tar.arg("-czf").arg(&archive).arg("-C");
        match layout {
            "top" => tar.arg(&src).arg("."),
            _ => tar.arg(s.path("seed")).arg("session-main"),
        };
        assert!(tar.status().unwrap().success());
        ok(s.vigil().args(["import", "main"]).arg(&archive));
        assert_eq!(profile::snapshot(&s.profile_dir()), expected, "{layout}");
        assert!(std::fs::symlink_metadata(s.profile_dir().join("SingletonLock")).is_err());
    }
}

#[test]
fn import_refuses_to_replace_a_login_or_bring_in_none() {
    let s = Setup::new(StoreKind::File, "");
    let src = s.path("other");
    profile::small(&src);
    profile::small(&s.profile_dir());
    let mine = profile::snapshot(&s.profile_dir());

    let out = run(s.vigil().args(["import", "main"]).arg(&src));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(profile::snapshot(&s.profile_dir()), mine);

    let empty = s.path("empty/Default");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(s
        .vigil()
        .args(["import", "main", "--force"])
        .arg(empty.parent().unwrap()));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Default/IndexedDB"),
        "{}",
        stderr(&out)
    );
    assert_eq!(profile::snapshot(&s.profile_dir()), mine);

    ok(s.vigil().args(["import", "main", "--force"]).arg(&src));
}

#[test]
fn restore_without_backups_or_over_a_login_says_why() {
    let s = Setup::new(StoreKind::File, "");
    let out = run(s.vigil().args(["restore", "main"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("no good backup"), "{}", stderr(&out));

    profile::small(&s.profile_dir());
    ok(s.vigil().args(["backup", "main"]));
    let out = run(s.vigil().args(["restore", "main"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"));

    // Each cause has its own exit code (README, "Exit codes").
    let out = run(s.vigil().args([
        "restore",
        "main",
        "--force",
        "--backup",
        "20000101T000000Z-00000000",
    ]));
    assert_eq!(code(&out), 6, "an unknown backup: {}", stderr(&out));
    assert!(stderr(&out).contains("no backup 20000101T000000Z-00000000"));
}

/// An encrypted backup restored by a config without the identity: exit
/// code 7 and the setting to fix, not a generic error.
#[test]
fn an_encrypted_restore_without_the_identity_says_so() {
    let identity = age::x25519::Identity::generate();
    let s = Setup::new(
        StoreKind::File,
        &format!("encrypt_to = [\"{}\"]", identity.to_public()),
    );
    profile::small(&s.profile_dir());
    ok(s.vigil().args(["backup", "main"]));
    let out = run(s.vigil().args(["restore", "main", "--force"]));
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[backup] identity"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn inspect_shows_the_profile_and_its_lock() {
    let s = Setup::new(StoreKind::File, "");
    profile::small(&s.profile_dir());
    let text = ok(s.vigil().args(["inspect", "main"]));
    assert!(text.contains("Default/IndexedDB"), "{text}");
    assert!(text.contains("stale (another-machine-4242"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(s.vigil().args(["inspect", "main", "--json"]))).unwrap();
    assert_eq!(json["exists"], true);
    assert_eq!(json["lock"]["lock"], "stale");
    assert_eq!(json["lock"]["why"], "other_host");
    assert_eq!(json["critical"][0]["state"]["state"], "present");
}

#[test]
fn config_mistakes_name_the_file_line_and_column() {
    let s = Setup::new(StoreKind::File, "");
    let bad = s.path("bad.toml");
    std::fs::write(&bad, "data_dir = \"data\"\n[backup]\nkeep_dayz = 3\n").unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--config")
        .arg(&bad)
        .args(["backups", "main"]));
    assert_eq!(code(&out), 1);
    let message = stderr(&out);
    assert!(
        message.contains(&format!("{}:3:1", bad.display())),
        "{message}"
    );
    assert!(message.contains("keep_dayz"), "{message}");

    // A missing file: named, with the OS's reason said once.
    let missing = s.path("missing.toml");
    let out = run(Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--config")
        .arg(&missing)
        .args(["backups", "main"]));
    assert_eq!(code(&out), 1);
    let message = stderr(&out);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert_eq!(
        message.matches("No such file or directory").count(),
        1,
        "{message}"
    );

    let out = run(s.vigil().args(["backup", "nobody"]));
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("session nobody is not in"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("known: main"), "{}", stderr(&out));
}

#[test]
fn prune_dry_run_lists_and_deletes_nothing() {
    let s = Setup::new(StoreKind::File, "keep_days = 0\nkeep_last = 1");
    profile::small(&s.profile_dir());
    let first = ok(s.vigil().args(["backup", "main"]));
    let second = ok(s.vigil().args(["backup", "main"]));
    let dry = ok(s.vigil().args(["prune", "--dry-run"]));
    assert!(
        dry.contains(&format!("would delete backup {first}")),
        "{dry}"
    );
    assert!(!dry.contains(&second), "{dry}");
    let listed = ok(s.vigil().args(["backups", "main"]));
    assert!(listed.contains(&first));
    let done = ok(s.vigil().args(["prune"]));
    assert!(done.contains(&format!("deleted backup {first}")), "{done}");
    let listed = ok(s.vigil().args(["backups", "main"]));
    assert!(
        !listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );
}
