//! `vigil policy check` and `vigil policy test`, run as an operator would:
//! the real binary, the shipped policies and scenarios, exit codes and
//! output.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::plugins::{compile_cache, plugin, repo_root, test_plugin};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .arg("--cache-dir")
        .arg(compile_cache())
        .current_dir(repo_root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vigil")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_shipped_scenario_passes_and_a_wrong_one_fails_with_a_readable_diff() {
    plugin("heartbeat");
    let ok = vigil(&[
        "policy",
        "test",
        "policies/heartbeat.toml",
        "--scenario",
        "policies/scenarios/heartbeat.toml",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}{}",
        stdout(&ok),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout(&ok).contains("21 passed, 0 failed"),
        "{}",
        stdout(&ok)
    );

    let wrong = vigil(&[
        "policy",
        "test",
        "target/plugins/heartbeat.wasm",
        "--scenario",
        "tests/scenarios/heartbeat-expects-wrong.toml",
    ]);
    let out = stdout(&wrong);
    assert_eq!(wrong.status.code(), Some(1), "{out}");
    assert!(out.contains("ok   step 1"), "{out}");
    assert!(out.contains("FAIL step 2 at 1m (line 11)"), "{out}");
    assert!(out.contains("- expected: give-up"), "{out}");
    assert!(
        out.contains("+ actual:   reload-page (not connected: timeout)"),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn json_reports_each_step() {
    plugin("restore-default");
    let run = vigil(&[
        "policy",
        "test",
        "policies/restore.toml",
        "--scenario",
        "policies/scenarios/restore.toml",
        "--json",
    ]);
    assert_eq!(run.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["passed"], true);
    assert_eq!(
        report["steps"][1]["actual"][0]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("restore-backup(main-2026-01-01T03)")
    );
    assert_eq!(report["steps"][1]["served_by"]["kind"], "policy");
}

#[test]
fn check_accepts_the_shipped_policies_and_points_at_errors() {
    plugin("activity");
    let ok = vigil(&[
        "policy",
        "check",
        "policies/activity.toml",
        "policies/heartbeat.toml",
        "policies/restore.toml",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert_eq!(stdout(&ok).matches(": ok: ").count(), 3, "{}", stdout(&ok));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "role = \"keepalive\"\nplugin = \"x.wasm\"\n\n[limits]\nmemory = \"lots\"\n",
    )
    .unwrap();
    let out = vigil(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "{}:5:10: \"lots\" is not a size like \"16MiB\"",
            bad.display()
        )
    );

    let noise = dir.path().join("noise.wasm");
    std::fs::write(&noise, [0x42u8; 512]).unwrap();
    let file = dir.path().join("noise.toml");
    std::fs::write(&file, "role = \"keepalive\"\nplugin = \"noise.wasm\"\n").unwrap();
    let out = vigil(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("noise.wasm: not a valid WebAssembly component"),
        "{}",
        stdout(&out)
    );

    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "role = \"keepalive\"\nplugin = \"gone.wasm\"\n").unwrap();
    let out = vigil(&["policy", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("missing.toml:2:10: cannot read plugin"),
        "{}",
        stdout(&out)
    );
}

/// Lines the child prints on stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_report(rx: &mpsc::Receiver<String>) -> serde_json::Value {
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a report within 10 s");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Editors and build tools replace files by rename; so do these tests, so a
/// reload never sees a half-written file.
fn write_atomically(to: &Path, text: &str) {
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn copy_atomically(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn watch_reruns_the_scenario_on_each_change_and_keeps_the_old_version_on_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("heartbeat.toml");
    let wasm = dir.path().join("heartbeat.wasm");
    copy_atomically(&plugin("heartbeat"), &wasm);
    write_atomically(
        &policy,
        "role = \"watchdog\"\nplugin = \"heartbeat.wasm\"\n",
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["policy", "test"])
        .arg(&policy)
        .arg("--scenario")
        .arg(repo_root().join("policies/scenarios/heartbeat.toml"))
        .args(["--watch", "--json", "--cache-dir"])
        .arg(compile_cache())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vigil policy test --watch");
    let reports = lines_of(&mut child);
    assert_eq!(next_report(&reports)["passed"], true);

    // A changed decision (restart at once after the reload) fails step 3.
    write_atomically(
        &policy,
        "role = \"watchdog\"\nplugin = \"heartbeat.wasm\"\n[config]\nrestart_after_ms = 0\n",
    );
    let changed = next_report(&reports);
    assert_eq!(changed["passed"], false);
    assert_eq!(
        changed["steps"][2]["actual"][0]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("restart-browser")
    );

    // A broken plugin is refused; the scenario re-runs on the version that
    // keeps serving (still the changed one).
    copy_atomically(&test_plugin("misbehave"), &wasm);
    let after_broken = next_report(&reports);
    assert_eq!(
        after_broken["steps"][2]["actual"][0]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("restart-browser")
    );

    // Back to the shipped behaviour.
    write_atomically(
        &policy,
        "role = \"watchdog\"\nplugin = \"heartbeat.wasm\"\n",
    );
    copy_atomically(&plugin("heartbeat"), &wasm);
    let mut fixed = next_report(&reports);
    while fixed["passed"] != true {
        fixed = next_report(&reports);
    }
    let _ = child.kill();
    let _ = child.wait();
}
