//! The README's quick start, run as written: the commands of its "What
//! `make run` shows" section, in a copy of the repository's layout (the
//! example config, the shipped policies, the built plugins and binary), on
//! the example config's own ports. When the README and the program
//! disagree (a command fails, a claim in its comment does not hold, the log
//! does not tell the story it shows), this test fails.
//!
//! `make run` is `vigil run --config examples/vigil.toml` once built, and
//! Ctrl-C is SIGINT; everything else runs in bash exactly as printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::plugins::{plugin, repo_root};
use tokio::io::AsyncBufReadExt;

const SECTION: &str = "### What `make run` shows";
const FIXTURE: &str = "http://127.0.0.1:8600";

/// The section's fenced blocks: the log it shows, then the shell blocks.
struct Walkthrough {
    log: Vec<String>,
    shell: Vec<Vec<String>>,
}

impl Walkthrough {
    fn read() -> Self {
        let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
        let start = readme.find(SECTION).expect("the README has the section");
        let section = &readme[start + SECTION.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let mut log = Vec::new();
        let mut shell = Vec::new();
        let mut lines = section.lines();
        while let Some(line) = lines.next() {
            let Some(lang) = line.strip_prefix("```") else {
                continue;
            };
            let body: Vec<String> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .map(str::to_string)
                .collect();
            match lang.trim() {
                "" => log = body,
                "sh" => shell.push(commands(&body)),
                other => panic!("unexpected block language {other:?} in the walk-through"),
            }
        }
        assert!(
            !log.is_empty() && shell.len() == 2,
            "the section changed shape"
        );
        Walkthrough { log, shell }
    }
}

/// Shell lines joined at their `\` continuations, comments kept.
fn commands(body: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in body {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        if !pending.trim().is_empty() {
            out.push(std::mem::take(&mut pending));
        }
        pending.clear();
    }
    out
}

/// The command without its trailing comment.
fn without_comment(line: &str) -> &str {
    match line.find("  #") {
        Some(i) => line[..i].trim_end(),
        None => line.trim_end(),
    }
}

/// A copy of the repository's layout in a temporary folder.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vigil-readme-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("examples")).unwrap();
        std::fs::copy(
            repo_root().join("examples/vigil.toml"),
            root.join("examples/vigil.toml"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("policies")).unwrap();
        for entry in std::fs::read_dir(repo_root().join("policies")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                std::fs::copy(&path, root.join("policies").join(path.file_name().unwrap()))
                    .unwrap();
            }
        }
        let built = plugin("heartbeat");
        std::fs::create_dir_all(root.join("target/debug")).unwrap();
        std::os::unix::fs::symlink(built.parent().unwrap(), root.join("target/plugins")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vigil"), root.join("target/debug/vigil"))
            .unwrap();
        Checkout { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `make run`, built: `vigil run --config examples/vigil.toml`.
    fn make_run(&self) -> Running {
        let mut child = tokio::process::Command::new(self.root().join("target/debug/vigil"))
            .args(["run", "--config", "examples/vigil.toml"])
            .current_dir(self.root())
            .env("RUST_LOG", "info")
            .env_remove("VIGIL_CONFIG")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start vigil run");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(String::new());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tx.send_modify(|all| {
                    all.push_str(&line);
                    all.push('\n');
                });
            }
        });
        Running { child, log: rx }
    }

    /// One line of the README in bash, in the checkout; panics unless it
    /// exits 0. Returns its stdout.
    async fn sh(&self, env: &[(String, String)], line: &str) -> String {
        let out = tokio::process::Command::new("bash")
            .args(["-c", line])
            .current_dir(self.root())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run bash");
        assert!(
            out.status.success(),
            "the README's `{line}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

struct Running {
    child: tokio::process::Child,
    log: tokio::sync::watch::Receiver<String>,
}

impl Running {
    /// Ctrl-C: a graceful stop, exit 0.
    async fn ctrl_c(mut self) -> String {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: kill(2) with a pid this test started and still owns.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("vigil stops within 2 minutes of Ctrl-C")
            .unwrap();
        assert!(status.success(), "vigil run exited {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.log.borrow().clone()
    }
}

async fn fixture_state() -> serde_json::Value {
    reqwest::get(format!("{FIXTURE}/admin/state"))
        .await
        .expect("the fixture answers")
        .json()
        .await
        .unwrap()
}

/// Polls `vigil status` (the README's own command) until it shows `what`.
async fn status_until(checkout: &Checkout, env: &[(String, String)], status: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = checkout.sh(env, status).await;
        if out
            .lines()
            .any(|l| l.starts_with("main") && l.contains(what))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{status}` never showed {what}:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn backups_in(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("backups/main"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written() {
    let walk = Walkthrough::read();
    let checkout = Checkout::new();
    let root = checkout.root().to_path_buf();

    // `make run`, and the log tells the story the README shows.
    let running = checkout.make_run();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut status_line = None;
    let mut watched = Vec::new();
    for line in &walk.shell[0] {
        let command = without_comment(line);
        if let Some(assignment) = command.strip_prefix("export ") {
            let (k, v) = assignment.split_once('=').expect("export K=V");
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        if command.contains(" screenshot ") {
            // "in the first 5 s": as soon as a browser runs.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let out = tokio::process::Command::new("bash")
                    .args(["-c", command])
                    .current_dir(&root)
                    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .output()
                    .await
                    .unwrap();
                if out.status.success() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "`{command}` never worked: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let file = command.split_whitespace().last().unwrap();
            let png = std::fs::read(root.join(file)).expect("the screenshot file");
            assert!(png.starts_with(b"\x89PNG"), "{file} is a PNG");
        } else if command.contains(" login ") {
            // "draws the login QR code here; returns once main is
            // connected": exit 0, and the drawing reads as a phone would.
            let out = checkout.sh(&env, command).await;
            let codes = common::api::read_terminal_qr_codes(&out);
            assert!(!codes.is_empty(), "no QR code drawn:\n{out}");
            for code in &codes {
                assert!(out.contains(&format!("Code text: {code}")), "{out}");
            }
            assert_eq!(fixture_state().await["pairings"], 1, "main logged in");
        } else if command.ends_with(" events") {
            // "what happened: state changes, the login, backups".
            let out = checkout.sh(&env, command).await;
            for said in [
                "session.state_changed  main: ",
                "session.needs_login  main: needs a login; QR code: ",
                " -> connected (",
            ] {
                assert!(out.contains(said), "`{command}` lacks {said:?}:\n{out}");
            }
        } else if command.ends_with(" status") {
            // "main: needs-login, then connected".
            status_until(&checkout, &env, command, "connected").await;
            status_line = Some(command.to_string());
        } else if command.contains(" journal ") {
            // "every policy decision, one JSON line each".
            let out = checkout.sh(&env, command).await;
            let roles: Vec<String> = out
                .lines()
                .map(|l| {
                    let line: serde_json::Value =
                        serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                    line["role"].as_str().unwrap_or_default().to_string()
                })
                .collect();
            // Where the profile came from first; then, as they come, the
            // keepalive's and the watchdog's calls.
            assert_eq!(
                roles.first().map(String::as_str),
                Some("restore"),
                "{roles:?}"
            );
            assert!(
                roles
                    .iter()
                    .all(|r| ["restore", "keepalive", "watchdog"].contains(&r.as_str())),
                "{roles:?}"
            );
        } else if command.contains(" restart ") {
            let pairings = fixture_state().await["pairings"].clone();
            checkout.sh(&env, command).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            status_until(
                &checkout,
                &env,
                status_line.as_deref().unwrap(),
                "connected",
            )
            .await;
            assert_eq!(fixture_state().await["pairings"], pairings, "no new login");
        } else {
            // The metrics line: its grep must find the connected session
            // (a probe after the restart above may still be on its way).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let out = checkout.sh(&env, command).await;
                if out.contains("state=\"connected\"} 1") {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{out}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        watched.push(command.to_string());
    }
    assert_eq!(
        watched.len(),
        6,
        "every command of the block ran: {watched:?}"
    );
    assert_eq!(fixture_state().await["pairings"], 1);

    // The backup after the login, then Ctrl-C: a shutdown backup.
    let deadline = Instant::now() + Duration::from_secs(60);
    while backups_in(&root).is_empty() {
        assert!(Instant::now() < deadline, "no backup after the login");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before_stop = backups_in(&root).len();
    let log = running.ctrl_c().await;
    for shown in &walk.log {
        let stable = shown.split(" ...").next().unwrap();
        let stable = stable.split(" id=").next().unwrap();
        assert!(log.contains(stable), "the log lacks `{stable}`:\n{log}");
    }
    assert!(backups_in(&root).len() > before_stop, "a shutdown backup");

    // Start again: connected with no new login.
    let running = checkout.make_run();
    status_until(
        &checkout,
        &env,
        status_line.as_deref().unwrap(),
        "connected",
    )
    .await;
    assert_eq!(fixture_state().await["pairings"], 1);
    running.ctrl_c().await;

    // Lose the profiles, as written, and `make run`: back from the backups.
    let [lose, make_run] = walk.shell[1].as_slice() else {
        panic!("the second block is `rm ...` then `make run`");
    };
    assert_eq!(without_comment(make_run), "make run");
    checkout.sh(&env, without_comment(lose)).await;
    assert!(!root.join("data/profiles/main").exists());
    let running = checkout.make_run();
    status_until(
        &checkout,
        &env,
        status_line.as_deref().unwrap(),
        "connected",
    )
    .await;
    let log = running.ctrl_c().await;
    assert!(
        log.contains("profile restored from backup"),
        "restored from ./backups:\n{log}"
    );
    assert_eq!(fixture_state_after_stop(&root), 1, "no new login");
}

/// The fixture stops with `vigil run`; its device file keeps the count.
fn fixture_state_after_stop(root: &Path) -> usize {
    let text = std::fs::read_to_string(root.join("fixture-devices.json"))
        .expect("the fixture's device file, beside examples/");
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["pairings"].as_u64().expect("a pairing count") as usize
}
