//! A fleet of real `vigil run` processes for tests and the chaos bench:
//! the fixture app with an oracle sampling it (live connections per device,
//! pairings), hosts as process groups, a store (the run's moto, or one of a
//! test's own that it can pause), and waits on what the hosts' APIs show.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_fixture::{Fixture, FixtureOptions};

use super::api::free_port;
use super::{chromium, s3};

pub const TOKEN: &str = "fleet-test-token-0123456789abcdef";
pub const PROBE: &str = "document.body.dataset.state";

/// The fixture app every host's sessions use, and the oracle watching it.
pub struct App {
    pub fixture: Fixture,
    pub url: String,
    pub oracle: Arc<Mutex<Oracle>>,
    pub sampler: tokio::task::JoinHandle<()>,
}

#[derive(Default, Debug)]
pub struct Oracle {
    pub samples: u64,
    /// (device, connections) seen with more than one live connection.
    pub doubles: Vec<(String, usize)>,
    pub pairings: u64,
    /// Devices with a live connection at the latest sample.
    pub connected: usize,
}

impl App {
    pub async fn start() -> Self {
        let fixture = Fixture::start(FixtureOptions {
            auto_pair_after: Some(Duration::from_secs(1)),
            ..FixtureOptions::default()
        })
        .await
        .expect("the fixture starts");
        let url = fixture.url();
        let oracle = Arc::new(Mutex::new(Oracle::default()));
        let sampler = {
            let oracle = Arc::clone(&oracle);
            let http = reqwest::Client::new();
            let state = format!("{url}admin/state");
            tokio::spawn(async move {
                loop {
                    if let Ok(resp) = http.get(&state).send().await
                        && let Ok(report) = resp.json::<vigil_fixture::FixtureReport>().await
                    {
                        let mut o = oracle.lock().unwrap();
                        o.samples += 1;
                        o.pairings = report.pairings;
                        o.connected = report.devices.iter().filter(|d| d.connections > 0).count();
                        for d in &report.devices {
                            if d.connections > 1 {
                                o.doubles.push((d.id.clone(), d.connections));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Self {
            fixture,
            url,
            oracle,
            sampler,
        }
    }

    pub fn pairings(&self) -> u64 {
        self.oracle.lock().unwrap().pairings
    }

    pub fn connected_devices(&self) -> usize {
        self.oracle.lock().unwrap().connected
    }

    /// No double run was ever sampled.
    pub fn assert_no_double_run(&self) {
        let o = self.oracle.lock().unwrap();
        assert!(o.samples > 0, "the oracle sampled the fixture");
        assert!(
            o.doubles.is_empty(),
            "a device had two live connections (a session ran twice): {:?}",
            &o.doubles[..o.doubles.len().min(10)]
        );
    }

    pub async fn stop(self) {
        self.sampler.abort();
        self.fixture.shutdown().await;
    }
}

/// One `vigil run` process of the fleet, in its own process group (so that
/// a test can kill it with every process it started, as a machine dies).
pub struct Host {
    pub name: String,
    pub root: tempfile::TempDir,
    pub config: PathBuf,
    pub base: String,
    pub child: Option<Child>,
}

impl Host {
    pub fn new(name: &str, store: &Store) -> Self {
        let (bucket, endpoint) = (&store.bucket, &store.endpoint);
        let (lease, renew) = store.timing;
        let root = tempfile::Builder::new()
            .prefix(&format!("vigil-fleet-{name}-"))
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let chromium = chromium::settings().executable;
        std::fs::create_dir_all(root.path().join("policies")).unwrap();
        let text = format!(
            r#"data_dir = "{root}/data"

[backup]
store = "s3://{bucket}/vigil"
retry_timeout_secs = 5
max_retries = 2

[backup.s3]
endpoint = "{endpoint}"
path_style = true
allow_http = true

[policy]
dir = "{root}/policies"

[service]
probe_interval_secs = 0.5
connect_timeout_secs = 30
max_concurrent_launches = 2
shutdown_timeout_secs = 30

[browser]
executable = "{chromium}"

[api]
listen = "127.0.0.1:{port}"

[fleet]
host_id = "{name}"
lease_secs = {lease}
renew_secs = {renew}
"#,
            root = root.path().display(),
            chromium = chromium.display(),
        );
        let config = root.path().join("vigil.toml");
        std::fs::write(&config, text).unwrap();
        Self {
            name: name.to_string(),
            root,
            config,
            base: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("VIGIL_API_TOKEN", TOKEN)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info,chromiumoxide=error");
        for (k, v) in s3::CREDENTIALS {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("vigil.log")
    }

    /// Starts `vigil run`, its log in the host's folder.
    pub fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("vigil run starts");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal_group(&self, signal: i32) {
        // SAFETY: kill(2) has no memory effects; a negative pid names the
        // process group this test created.
        unsafe {
            libc::kill(-self.pid(), signal);
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: as above, one process of this test's.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to end; its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Option<Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// The sessions this host runs and their states.
    pub async fn sessions(&self) -> BTreeMap<String, String> {
        let Some(list) = self.get("/v1/sessions").await else {
            return BTreeMap::new();
        };
        list["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    s["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Runs `vigil ARGS` against this host's config; exit code and stderr.
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = self.command(args).output().expect("vigil runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal_group`.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGCONT);
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// Who runs which session, by host name, counting only connected ones.
pub async fn connected_by_host(hosts: &[&Host]) -> BTreeMap<String, Vec<String>> {
    let mut by = BTreeMap::new();
    for h in hosts {
        let connected: Vec<String> = h
            .sessions()
            .await
            .into_iter()
            .filter(|(_, state)| state == "connected")
            .map(|(id, _)| id)
            .collect();
        by.insert(h.name.clone(), connected);
    }
    by
}

/// Polls `check` every 250 ms until it yields; panics after `limit` with
/// `what`.
pub async fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every session on `hosts` has a backup: the after-login
/// backup that ends its first login (60 s at most).
pub async fn wait_for_first_backups(hosts: &[&Host]) {
    wait_for(Duration::from_secs(60), "after-login backups", async || {
        let mut all = true;
        for h in hosts {
            for s in h.get("/v1/sessions").await?["sessions"].as_array()? {
                all &= !s["last_backup"].is_null();
            }
        }
        all.then_some(())
    })
    .await;
}

/// Every session connected exactly once across `hosts`; the layout.
pub async fn all_connected(
    hosts: &[&Host],
    sessions: usize,
) -> Option<BTreeMap<String, Vec<String>>> {
    let by = connected_by_host(hosts).await;
    let total: usize = by.values().map(Vec::len).sum();
    let mut ids: Vec<&String> = by.values().flatten().collect();
    ids.sort();
    ids.dedup();
    (total == sessions && ids.len() == sessions).then_some(by)
}

pub fn dump_logs(hosts: &[&Host]) -> String {
    hosts
        .iter()
        .map(|h| {
            let log = h.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            format!(
                "---- {} ----\n{}",
                h.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the hosts keep their backups and fleet records, and their
/// lease and renewal period in seconds.
#[derive(Clone)]
pub struct Store {
    pub endpoint: String,
    pub bucket: String,
    pub timing: (u64, u64),
}

impl Store {
    /// A new bucket on the moto server of the test run; 6 s leases.
    pub fn shared() -> Self {
        Self {
            endpoint: s3::endpoint().to_string(),
            bucket: s3::bucket("fleet-run"),
            timing: (6, 2),
        }
    }
}

pub struct Fleet {
    pub app: App,
    pub store: Store,
    pub hosts: Vec<Host>,
}

impl Fleet {
    pub async fn start(names: &[&str]) -> Self {
        Self::start_on(names, Store::shared()).await
    }

    pub async fn start_on(names: &[&str], store: Store) -> Self {
        chromium::init_logging();
        let app = App::start().await;
        let mut hosts: Vec<Host> = names.iter().map(|n| Host::new(n, &store)).collect();
        for h in &mut hosts {
            h.start();
        }
        Self::wait_up(&hosts).await;
        Self { app, store, hosts }
    }

    /// Starts one more host and waits until every host sees it.
    pub async fn join(&mut self, name: &str) {
        let mut h = Host::new(name, &self.store);
        h.start();
        self.hosts.push(h);
        Self::wait_up_refs(&self.refs()).await;
    }

    pub async fn wait_up(hosts: &[Host]) {
        let refs: Vec<&Host> = hosts.iter().collect();
        Self::wait_up_refs(&refs).await;
    }

    pub async fn wait_up_refs(hosts: &[&Host]) {
        for h in hosts {
            wait_for(
                Duration::from_secs(30),
                &format!("{} answers", h.name),
                async || h.get("/v1/hosts").await,
            )
            .await;
        }
        // Every host sees every other one.
        for h in hosts {
            let n = hosts.len();
            wait_for(
                Duration::from_secs(20),
                "the hosts see each other",
                async || {
                    let v = h.get("/v1/hosts").await?;
                    let alive = v["hosts"]
                        .as_array()?
                        .iter()
                        .filter(|x| x["health"] == "alive")
                        .count();
                    (alive == n).then_some(())
                },
            )
            .await;
        }
    }

    pub fn refs(&self) -> Vec<&Host> {
        self.hosts.iter().filter(|h| h.child.is_some()).collect()
    }

    /// Adds sessions s1..sN through the CLI of the first host.
    pub fn add_sessions(&self, n: usize) {
        for i in 1..=n {
            let id = format!("s{i}");
            let (code, err) = self.hosts[0].cli(&[
                "session",
                "add",
                &id,
                "--url",
                &self.app.url,
                "--probe-script",
                PROBE,
            ]);
            assert_eq!(code, 0, "vigil session add {id}: {err}");
        }
    }

    pub async fn stop(mut self) {
        for h in &mut self.hosts {
            if h.child.is_some() {
                h.signal(libc::SIGTERM);
                if h.wait(Duration::from_secs(40)).is_none() {
                    h.signal_group(libc::SIGKILL);
                    h.wait(Duration::from_secs(5));
                }
            }
        }
        self.app.stop().await;
    }
}

pub fn spread(by: &BTreeMap<String, Vec<String>>) -> Vec<usize> {
    let mut counts: Vec<usize> = by.values().map(Vec::len).collect();
    counts.sort();
    counts
}

/// A moto server of this test's own (the shared one serves every test of
/// the run): it can be paused.
pub struct OwnMoto {
    pub child: Child,
    pub endpoint: String,
}

impl OwnMoto {
    pub async fn start() -> Self {
        let moto = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .map(|d| PathBuf::from(d).join("moto_server"))
            .find(|p| p.exists())
            .or_else(|| {
                let tools = std::env::var("VIGIL_TOOLS")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| {
                        PathBuf::from(std::env::var("HOME").unwrap_or_default())
                            .join(".cache/vigil")
                    });
                Some(tools.join("moto/bin/moto_server")).filter(|p| p.exists())
            })
            .expect("moto_server (scripts/install-deps.sh test)");
        let port = free_port();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_for(Duration::from_secs(60), "moto answers", async || {
            http.get(&endpoint).send().await.ok().map(|_| ())
        })
        .await;
        Self { child, endpoint }
    }

    pub fn bucket(&self, name: &str) {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT'))",
                &format!("{}/{name}", self.endpoint),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on this test's own moto process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
