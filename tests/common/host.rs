//! A whole Vigil host for end-to-end tests: a temp folder with its config,
//! policies, profiles and a `file://` backup store, the fixture app as the
//! web app, and the supervisor started and stopped in-process like
//! `vigil run` does. The fixture outlives host restarts, on the same port,
//! so a restarted browser finds its login where it left it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil::config::Config;
use vigil::fixture::{Fixture, FixtureOptions};
use vigil::id::SessionId;
use vigil::session::{SessionClient, SessionState, SessionStatus};
use vigil::supervisor::Supervisor;

use super::fixture::FixtureClient;
use super::plugins;

/// The session every end-to-end test runs.
pub const SESSION: &str = "main";

/// Policies for a test, written as policy files. Intervals are short so a
/// test sees several calls in seconds.
#[derive(Clone, Debug)]
pub struct Policies {
    /// `None`: no keepalive file (built-in defaults).
    pub keepalive_interval: Option<&'static str>,
    pub watchdog_interval: &'static str,
    pub watchdog_backoff_ms: u64,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            keepalive_interval: Some("1s"),
            watchdog_interval: "1s",
            watchdog_backoff_ms: 1000,
        }
    }
}

pub struct TestHost {
    pub root: tempfile::TempDir,
    pub fixture: Fixture,
    pub web: FixtureClient,
    pub config_path: PathBuf,
    supervisor: Option<Supervisor>,
}

impl TestHost {
    /// Writes the config and policies and starts the fixture app; the host
    /// itself starts with [`TestHost::start`].
    pub async fn new(policies: Policies, idle_after: Option<Duration>) -> Self {
        let root = tempfile::Builder::new()
            .prefix("vigil-e2e-")
            .tempdir()
            .expect("temp dir");
        let fixture = Fixture::start(FixtureOptions {
            idle_after,
            state_file: Some(root.path().join("fixture-devices.json")),
            ..FixtureOptions::default()
        })
        .await
        .expect("fixture starts");
        let web = FixtureClient::new(&fixture.url());
        let config_path = root.path().join("vigil.toml");
        std::fs::write(&config_path, config_text(&fixture.url())).expect("write vigil.toml");
        let host = Self {
            root,
            fixture,
            web,
            config_path,
            supervisor: None,
        };
        host.write_policies(&policies);
        host
    }

    /// Adds tables to `vigil.toml` (before [`TestHost::start`]).
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config_path).expect("read vigil.toml");
        config.push('\n');
        config.push_str(text);
        std::fs::write(&self.config_path, config).expect("write vigil.toml");
    }

    /// Takes the web app down (its port stays reserved for
    /// [`TestHost::bring_app_back`]).
    pub async fn take_app_down(&mut self) -> std::net::SocketAddr {
        let addr = self.fixture.addr();
        let stand_in = Fixture::start(FixtureOptions::default())
            .await
            .expect("fixture starts");
        std::mem::replace(&mut self.fixture, stand_in)
            .shutdown()
            .await;
        addr
    }

    /// Serves the web app again on `addr`, with the devices it had paired.
    pub async fn bring_app_back(&mut self, addr: std::net::SocketAddr) {
        let fixture = Fixture::start(FixtureOptions {
            listen: addr,
            state_file: Some(self.root.path().join("fixture-devices.json")),
            ..FixtureOptions::default()
        })
        .await
        .expect("fixture starts again on its port");
        std::mem::replace(&mut self.fixture, fixture)
            .shutdown()
            .await;
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.root.path().join("policies")
    }

    pub fn profile_dir(&self) -> PathBuf {
        self.root.path().join("data/profiles").join(SESSION)
    }

    /// The folder of the session's backups in the `file://` store.
    pub fn backup_dir(&self) -> PathBuf {
        self.root.path().join("backups").join(SESSION)
    }

    /// Replaces the test's policies with the shipped ones (`policies/`),
    /// their plugin paths pointed at the built plugins: what a new user
    /// runs.
    pub fn use_shipped_policies(&self) {
        let dir = self.policy_dir();
        std::fs::create_dir_all(&dir).expect("policy dir");
        for (file, plugin) in [
            ("activity.toml", "activity"),
            ("heartbeat.toml", "heartbeat"),
            ("restore.toml", "restore-default"),
        ] {
            let shipped = std::fs::read_to_string(plugins::repo_root().join("policies").join(file))
                .expect("read a shipped policy");
            let wasm = format!("../target/plugins/{plugin}.wasm");
            assert!(shipped.contains(&wasm), "{file} names {wasm}");
            let text = shipped.replace(
                &format!("{wasm:?}"),
                &format!("{:?}", plugins::plugin(plugin).display().to_string()),
            );
            for old in ["keepalive.toml", "watchdog.toml"] {
                let _ = std::fs::remove_file(dir.join(old));
            }
            write_atomically(&dir.join(file), &text);
        }
    }

    /// (Re)writes every policy file of the test.
    pub fn write_policies(&self, p: &Policies) {
        let dir = self.policy_dir();
        std::fs::create_dir_all(&dir).expect("policy dir");
        match p.keepalive_interval {
            Some(interval) => self.write_keepalive(interval),
            None => {
                let _ = std::fs::remove_file(dir.join("keepalive.toml"));
            }
        }
        write_atomically(
            &dir.join("watchdog.toml"),
            &format!(
                "role = \"watchdog\"\nplugin = {:?}\ninterval = {:?}\n[config]\nrestart_after_ms = {}\nbackoff_ms = {}\nbackoff_max_ms = {}\nreload_every_ms = {}\nrestore_after_restarts = 5\n",
                plugins::plugin("heartbeat").display().to_string(),
                p.watchdog_interval,
                p.watchdog_backoff_ms,
                p.watchdog_backoff_ms,
                p.watchdog_backoff_ms * 4,
                p.watchdog_backoff_ms * 2,
            ),
        );
        write_atomically(
            &dir.join("restore.toml"),
            &format!(
                "role = \"restore\"\nplugin = {:?}\n[config]\nrequired = [\"Default/IndexedDB\", \"Default/Local Storage\"]\nwait_ms = 500\n",
                plugins::plugin("restore-default").display().to_string(),
            ),
        );
    }

    /// The activity policy (mouse move, Shift, wake lock) every `interval`.
    pub fn write_keepalive(&self, interval: &str) {
        write_atomically(
            &self.policy_dir().join("keepalive.toml"),
            &format!(
                "role = \"keepalive\"\nplugin = {:?}\ninterval = {interval:?}\n",
                plugins::plugin("activity").display().to_string(),
            ),
        );
    }

    /// Starts the host on the config, like `vigil run`.
    pub async fn start(&mut self) {
        assert!(self.supervisor.is_none(), "the host is already running");
        let config = Config::load(&self.config_path).expect("the test config loads");
        self.supervisor = Some(Supervisor::start(&config).await.expect("the host starts"));
    }

    /// Stops the host as SIGTERM does: graceful close, shutdown backup.
    pub async fn stop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.shutdown(Duration::from_secs(60)).await;
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        self.supervisor.as_ref().expect("the host is running")
    }

    pub fn session(&self) -> SessionClient {
        self.supervisor()
            .session(&SessionId::new(SESSION).unwrap())
            .expect("the test session is configured")
            .clone()
    }

    pub fn status(&self) -> SessionStatus {
        self.session().status()
    }

    /// Waits until the session is in `state`; panics with its history when
    /// it does not get there in `timeout`.
    pub async fn wait_state(&self, state: SessionState, timeout: Duration) -> SessionStatus {
        let mut watch = self.session().watch();
        let reached = tokio::time::timeout(timeout, watch.wait_for(|s| s.state == state)).await;
        match reached {
            Ok(Ok(status)) => status.clone(),
            _ => panic!(
                "session did not reach {state} within {timeout:?}; now {}: {}\nhistory:\n{}",
                self.status().state,
                self.status().reason,
                history(&self.status())
            ),
        }
    }

    /// Waits for `check` on the session's status.
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&SessionStatus) -> bool,
    ) -> SessionStatus {
        let mut watch = self.session().watch();
        match tokio::time::timeout(timeout, watch.wait_for(|s| check(s))).await {
            Ok(Ok(status)) => status.clone(),
            _ => panic!(
                "timed out after {timeout:?} waiting for {what}; now {}: {}\nhistory:\n{}",
                self.status().state,
                self.status().reason,
                history(&self.status())
            ),
        }
    }

    /// First start of a new session: the login screen, a pairing (as a
    /// phone scanning the code), connected, and the backup a new login
    /// gets at once. Returns the paired device.
    pub async fn pair_and_connect(&mut self) -> String {
        self.start().await;
        self.wait_state(SessionState::NeedsLogin, Duration::from_secs(60))
            .await;
        let device = self.web.pair_shown_code().await;
        self.wait_state(SessionState::Connected, Duration::from_secs(30))
            .await;
        self.wait_status("the backup after the login", Duration::from_secs(60), |s| {
            s.last_backup.is_some() && s.state == SessionState::Connected
        })
        .await;
        // localStorage written seconds before a hard kill can be lost
        // (FACTS.md); the login is in IndexedDB too, but give it time.
        tokio::time::sleep(Duration::from_secs(1)).await;
        device
    }
}

/// The transitions, one per line, for failure messages.
pub fn history(status: &SessionStatus) -> String {
    status
        .history
        .iter()
        .map(|t| format!("  {} -> {}: {}", t.from, t.to, t.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

fn config_text(url: &str) -> String {
    format!(
        r#"data_dir = "data"

[backup]
store = "file://backups"
schedule = "0 0 2 * * *"
keep_last = 5

[policy]
dir = "policies"
cache_dir = {cache:?}

[service]
probe_interval_secs = 0.5
connect_timeout_secs = 20
shutdown_timeout_secs = 60

[[session]]
id = "{SESSION}"
url = "{url}"
probe = {{ script = "document.body.dataset.state" }}
"#,
        cache = plugins::compile_cache().display().to_string(),
    )
}

/// Policy files are replaced by rename, as editors do, so the watcher
/// never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write policy");
    std::fs::rename(&tmp, path).expect("rename policy");
}
