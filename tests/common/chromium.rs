//! Real Chromium for tests: a process-wide limit on browsers running at
//! once (the machine has 2 cores), a fresh profile per test, and waits on
//! what the page shows.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use vigil::browser::{Browser, BrowserSettings, PageState, Probe, ProbeOutcome};
use vigil::id::SessionId;

/// At most this many browsers run at once in one test binary.
static SLOTS: Semaphore = Semaphore::const_new(2);

/// A turn to run browsers; hold it for the whole test.
pub async fn browser_slot() -> SemaphorePermit<'static> {
    SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// `VIGIL_TEST_LOG=debug cargo test ...` shows the library's logs.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("VIGIL_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A profile directory that lives as long as the test.
pub struct TestProfile {
    dir: tempfile::TempDir,
}

impl TestProfile {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("vigil-test-profile-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Chromium's `--user-data-dir` (Chromium creates it).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// The `Singleton*` links Chromium keeps while it runs.
    pub fn singleton_links(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path()) else {
            return Vec::new();
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("Singleton"))
            .collect();
        names.sort();
        names
    }

    /// `exit_type` from the profile's Preferences: "Normal" after a clean
    /// close, "Crashed" while running or after a kill.
    pub fn exit_type(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path().join("Default/Preferences")).ok()?;
        let prefs: serde_json::Value = serde_json::from_str(&text).ok()?;
        prefs["profile"]["exit_type"].as_str().map(str::to_owned)
    }
}

pub fn settings() -> BrowserSettings {
    BrowserSettings {
        executable: std::env::var_os("VIGIL_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("chromium")),
        ..BrowserSettings::default()
    }
}

pub fn session(name: &str) -> SessionId {
    SessionId::new(name).expect("valid session id")
}

pub async fn launch(name: &str, profile: &Path) -> Browser {
    init_logging();
    Browser::launch(session(name), profile, &settings())
        .await
        .unwrap_or_else(|e| panic!("launch failed: {e}"))
}

/// The fixture app's own state name, read the way an operator's script
/// probe would.
pub fn state_probe() -> Probe {
    Probe::Script("document.body.dataset.state".into())
}

/// Probes until the page shows `want` (a fixture state: `connected`,
/// `needs-login`, `disconnected`, `idle`), or panics after `timeout` with
/// the last thing it showed.
pub async fn wait_for_state(browser: &Browser, want: &str, timeout: Duration) -> ProbeOutcome {
    let probe = state_probe();
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = browser.probe(&probe).await.expect("probe");
        if outcome.detail == want {
            return outcome;
        }
        assert!(
            Instant::now() < deadline,
            "page did not reach {want} within {timeout:?}; it shows {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the page keeps showing `state` for `during`.
pub async fn assert_stays(browser: &Browser, state: PageState, detail: &str, during: Duration) {
    let probe = state_probe();
    let until = Instant::now() + during;
    while Instant::now() < until {
        let outcome = browser.probe(&probe).await.expect("probe");
        assert_eq!(
            (outcome.state, outcome.detail.as_str()),
            (state, detail),
            "the page changed state"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Live processes (zombies excluded) whose command line runs Chromium on
/// `profile`: the browser and its helpers, which all carry its
/// `--user-data-dir` (helpers with their arguments joined by spaces).
pub fn processes_on(profile: &Path) -> Vec<u32> {
    let flag = format!("--user-data-dir={}", profile.display());
    processes_with_arg(|arg| arg == flag.as_bytes())
}

/// Processes with an argument that `matches` (helpers' arguments joined by
/// spaces are split). A zombie's command line reads empty, so it has none.
pub fn processes_with_arg(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .flat_map(|arg| arg.split(|b| *b == b' '))
            .any(&matches)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x')),
        Err(_) => false,
    }
}

/// Starts Chromium on `profile` in the background and lets go of it, as
/// a killed Vigil leaves its browser: its parent is gone (the shell that
/// started it exits at once). `vigil_session` adds Vigil's marker for
/// that session. Returns once the browser holds the profile; dropping the
/// result kills whatever still runs on the profile.
pub async fn start_detached(profile: &Path, vigil_session: Option<&str>) -> Detached {
    std::fs::create_dir_all(profile).expect("profile folder");
    // SAFETY: geteuid(2) has no side effects.
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut args = vigil::browser::chromium_args(&settings(), profile, as_root);
    if let Some(name) = vigil_session {
        args.push(session(name).browser_marker());
    }
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("\"$0\" \"$@\" </dev/null >/dev/null 2>&1 &")
        .arg(&settings().executable)
        .args(&args)
        .status()
        .expect("sh starts");
    assert!(status.success(), "{status:?}");
    let lock = profile.join("SingletonLock");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_link(&lock)
            .ok()
            .and_then(|t| t.to_string_lossy().rsplit_once('-')?.1.parse::<u32>().ok())
            .filter(|pid| alive(*pid))
        {
            return Detached {
                pid,
                _cleanup: KillOnDrop(profile.to_owned()),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the detached Chromium did not take the profile's lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser started by [`start_detached`].
pub struct Detached {
    pub pid: u32,
    _cleanup: KillOnDrop,
}

/// Kills every process still running on a test's profile when dropped:
/// nothing a test started outlives it, whatever the test found.
pub struct KillOnDrop(pub PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in processes_on(&self.0) {
            // SAFETY: kill(2) on Chromium processes this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
