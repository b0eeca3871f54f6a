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
