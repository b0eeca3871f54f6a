//! `vigil run` writing JSON logs, as a log collector reads them: every
//! line on stderr is one JSON object, from the first line to the last
//! words of a failed start. Set by `VIGIL_LOG_FORMAT=json` or by `[log]
//! format = "json"` in `vigil.toml`. No browser: the session's Chromium is
//! missing, so its launch fails (and is logged) without one.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::api::free_port;
use serde_json::Value;

/// A config with one session whose browser cannot be found, its API on a
/// free port of `ip`, and `extra`.
fn setup(ip: &str, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("vigil-logging-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let file = dir.path().join("vigil.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"data\"\n[backup]\nstore = \"file://backups\"\n[policy]\ndir = \"policies\"\n[browser]\nexecutable = \"/nonexistent/chromium\"\n[api]\nlisten = \"{ip}:{}\"\n{extra}\n[[session]]\nid = \"main\"\nurl = \"http://127.0.0.1:9/\"\n",
            free_port()
        ),
    )
    .unwrap();
    (dir, file)
}

fn vigil(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env_remove("VIGIL_API_TOKEN")
        .env_remove("VIGIL_LOG_FORMAT")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Every line of `stderr` as JSON, or a panic naming the line that is not.
fn json_lines(stderr: &str) -> Vec<Value> {
    assert!(!stderr.trim().is_empty(), "nothing was logged");
    stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("not a JSON line ({e}): {line:?}\nall of stderr:\n{stderr}")
            })
        })
        .collect()
}

#[test]
fn vigil_run_logs_one_json_object_per_line_when_the_environment_asks() {
    let (_dir, config) = setup("127.0.0.1", "");
    let mut child = vigil(&config)
        .env("VIGIL_LOG_FORMAT", "json")
        .spawn()
        .expect("spawn vigil run");
    let mut stderr = child.stderr.take().unwrap();
    // Read on a thread; stop the host once it serves.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let token_file = _dir.path().join("data/api-token");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "vigil run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for the session's launch to fail and be logged.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{text}");

    let lines = json_lines(&text);
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    // The event's fields sit beside the message, ready to filter on.
    let serving = lines
        .iter()
        .find(|l| l["message"] == "admin API serving")
        .unwrap_or_else(|| panic!("no 'admin API serving' line in {text}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{serving}"
    );
    // The session's failed launch: a state change, with the session, the
    // state and the reason as fields.
    let failed = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["session"] == "main")
        .unwrap_or_else(|| panic!("no warning about the session in {text}"));
    assert_eq!(failed["message"], "session main is degraded", "{failed}");
    assert_eq!(failed["state"], "degraded", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/chromium"),
        "{failed}"
    );
}

#[test]
fn the_config_can_ask_for_json_and_a_failed_start_says_so_in_json() {
    // A public address without a token: vigil run refuses to start.
    let (_dir, config) = setup("0.0.0.0", "[log]\nformat = \"json\"\n");
    let out = vigil(&config).output().expect("run vigil");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines = json_lines(&text);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not a loopback address")),
        "{last}"
    );

    // A bad VIGIL_LOG_FORMAT is refused before anything runs.
    let out = vigil(&config)
        .env("VIGIL_LOG_FORMAT", "yaml")
        .output()
        .expect("run vigil");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("VIGIL_LOG_FORMAT") && text.contains("yaml"),
        "{text}"
    );
}
