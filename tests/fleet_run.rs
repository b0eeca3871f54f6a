//! A fleet of real `vigil run` processes on this machine, sharing one moto
//! S3 store and one fixture app, with short leases (6 s, renewals every
//! 2 s). An oracle samples the fixture all along: at no moment may a
//! device have two live connections (a session run twice), and pairings
//! must not grow after the first logins (a login lost).
//!
//! Run under `scripts/with-s3.sh`. Each test runs several Chromiums on a
//! 2-core machine, so they take turns (one test at a time in this binary).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::free_port;
use common::{chromium, s3};
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};
use vigil_fixture::{Fixture, FixtureOptions};

const TOKEN: &str = "fleet-test-token-0123456789abcdef";
const PROBE: &str = "document.body.dataset.state";

/// One test at a time in this binary: each runs up to six browsers.
static TURN: Semaphore = Semaphore::const_new(1);

async fn turn() -> SemaphorePermit<'static> {
    TURN.acquire().await.expect("never closed")
}

/// The fixture app every host's sessions use, and the oracle watching it.
struct App {
    fixture: Fixture,
    url: String,
    oracle: Arc<Mutex<Oracle>>,
    sampler: tokio::task::JoinHandle<()>,
}

#[derive(Default, Debug)]
struct Oracle {
    samples: u64,
    /// (device, connections) seen with more than one live connection.
    doubles: Vec<(String, usize)>,
    pairings: u64,
    /// Devices with a live connection at the latest sample.
    connected: usize,
}

impl App {
    async fn start() -> Self {
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

    fn pairings(&self) -> u64 {
        self.oracle.lock().unwrap().pairings
    }

    fn connected_devices(&self) -> usize {
        self.oracle.lock().unwrap().connected
    }

    /// No double run was ever sampled.
    fn assert_no_double_run(&self) {
        let o = self.oracle.lock().unwrap();
        assert!(o.samples > 0, "the oracle sampled the fixture");
        assert!(
            o.doubles.is_empty(),
            "a device had two live connections (a session ran twice): {:?}",
            &o.doubles[..o.doubles.len().min(10)]
        );
    }

    async fn stop(self) {
        self.sampler.abort();
        self.fixture.shutdown().await;
    }
}

/// One `vigil run` process of the fleet, in its own process group (so that
/// a test can kill it with every process it started, as a machine dies).
struct Host {
    name: String,
    root: tempfile::TempDir,
    config: PathBuf,
    base: String,
    child: Option<Child>,
}

impl Host {
    fn new(name: &str, bucket: &str, endpoint: &str) -> Self {
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
lease_secs = 6
renew_secs = 2
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

    fn command(&self, args: &[&str]) -> Command {
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

    fn log_path(&self) -> PathBuf {
        self.root.path().join("vigil.log")
    }

    /// Starts `vigil run`, its log in the host's folder.
    fn start(&mut self) {
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

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal_group(&self, signal: i32) {
        // SAFETY: kill(2) has no memory effects; a negative pid names the
        // process group this test created.
        unsafe {
            libc::kill(-self.pid(), signal);
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: as above, one process of this test's.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to end; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<Value> {
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
    async fn sessions(&self) -> BTreeMap<String, String> {
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
    fn cli(&self, args: &[&str]) -> (i32, String) {
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
async fn connected_by_host(hosts: &[&Host]) -> BTreeMap<String, Vec<String>> {
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
/// `what` and the last value seen by `describe`.
async fn wait_for<T>(
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

/// Every session connected exactly once across `hosts`; the layout.
async fn all_connected(hosts: &[&Host], sessions: usize) -> Option<BTreeMap<String, Vec<String>>> {
    let by = connected_by_host(hosts).await;
    let total: usize = by.values().map(Vec::len).sum();
    let mut ids: Vec<&String> = by.values().flatten().collect();
    ids.sort();
    ids.dedup();
    (total == sessions && ids.len() == sessions).then_some(by)
}

fn dump_logs(hosts: &[&Host]) -> String {
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

struct Fleet {
    app: App,
    hosts: Vec<Host>,
}

impl Fleet {
    async fn start(names: &[&str]) -> Self {
        chromium::init_logging();
        let app = App::start().await;
        let endpoint = s3::endpoint();
        let bucket = s3::bucket("fleet-run");
        let mut hosts: Vec<Host> = names
            .iter()
            .map(|n| Host::new(n, &bucket, endpoint))
            .collect();
        for h in &mut hosts {
            h.start();
        }
        for h in &hosts {
            wait_for(
                Duration::from_secs(30),
                &format!("{} answers", h.name),
                async || h.get("/v1/hosts").await,
            )
            .await;
        }
        // Every host sees every other one.
        for h in &hosts {
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
        Self { app, hosts }
    }

    fn refs(&self) -> Vec<&Host> {
        self.hosts.iter().filter(|h| h.child.is_some()).collect()
    }

    /// Adds sessions s1..sN through the CLI of the first host.
    fn add_sessions(&self, n: usize) {
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

    async fn stop(mut self) {
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

fn spread(by: &BTreeMap<String, Vec<String>>) -> Vec<usize> {
    let mut counts: Vec<usize> = by.values().map(Vec::len).collect();
    counts.sort();
    counts
}

/// Three hosts, six sessions added at runtime through the CLI: they
/// spread 2/2/2 and log in once each. Then one host dies with all its
/// processes (`kill -9` of its process group): its sessions are connected
/// on the others within 60 s, from their backups, with no new pairing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_sessions_spread_over_three_hosts_and_move_when_one_dies() {
    let _turn = turn().await;
    let fleet = Fleet::start(&["h1", "h2", "h3"]).await;
    fleet.add_sessions(6);
    let hosts = fleet.refs();
    let (by, took) = wait_for(
        Duration::from_secs(150),
        "six sessions connected",
        async || all_connected(&hosts, 6).await,
    )
    .await;
    eprintln!("six sessions connected after {took:?}: {by:?}");
    assert_eq!(spread(&by), vec![2, 2, 2], "{by:?}\n{}", dump_logs(&hosts));
    // The first logins are done once every session has connected and
    // taken its after-login backup.
    wait_for(Duration::from_secs(60), "after-login backups", async || {
        let mut all = true;
        for h in &hosts {
            let list = h.get("/v1/sessions").await?;
            for s in list["sessions"].as_array()? {
                all &= !s["last_backup"].is_null();
            }
        }
        all.then_some(())
    })
    .await;
    let pairings = fleet.app.pairings();
    assert_eq!(pairings, 6, "one login per session");

    // h3 dies with every process it started.
    let victim = fleet.hosts.iter().find(|h| h.name == "h3").unwrap();
    let moved: Vec<String> = by["h3"].clone();
    victim.signal_group(libc::SIGKILL);
    let killed = Instant::now();
    let survivors: Vec<&Host> = fleet.hosts.iter().filter(|h| h.name != "h3").collect();
    let (by, _) = wait_for(
        Duration::from_secs(60),
        "h3's sessions connected elsewhere",
        async || all_connected(&survivors, 6).await,
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover of {moved:?}: {takeover:?}; now {by:?}");
    assert_eq!(spread(&by), vec![3, 3], "{by:?}");
    assert_eq!(
        fleet.app.pairings(),
        pairings,
        "no new login after the move"
    );
    let logs = dump_logs(&survivors);
    assert!(
        logs.contains("taken over from h3"),
        "the log says why: {logs}"
    );
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// A host paused (SIGSTOP) for twice the lease finds itself fenced when it
/// resumes: its sessions run elsewhere meanwhile, it never drives its old
/// browsers again, the oracle never sees two connections for a device,
/// and no login is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_host_fences_itself_and_never_runs_a_session_twice() {
    let _turn = turn().await;
    let fleet = Fleet::start(&["p1", "p2"]).await;
    fleet.add_sessions(2);
    let hosts = fleet.refs();
    let (by, _) = wait_for(
        Duration::from_secs(120),
        "two sessions connected",
        async || all_connected(&hosts, 2).await,
    )
    .await;
    assert_eq!(spread(&by), vec![1, 1], "{by:?}");
    wait_for(Duration::from_secs(60), "after-login backups", async || {
        let mut all = true;
        for h in &hosts {
            for s in h.get("/v1/sessions").await?["sessions"].as_array()? {
                all &= !s["last_backup"].is_null();
            }
        }
        all.then_some(())
    })
    .await;
    let pairings = fleet.app.pairings();

    // Pause p2 alone (its Chromium keeps running, as with a VM freeze of
    // Vigil only), for twice the lease.
    let paused = fleet.hosts.iter().find(|h| h.name == "p2").unwrap();
    paused.signal(libc::SIGSTOP);
    let p1 = fleet.hosts.iter().find(|h| h.name == "p1").unwrap();
    wait_for(
        Duration::from_secs(60),
        "p1 runs both sessions",
        async || {
            let s = p1.sessions().await;
            (s.len() == 2 && s.values().all(|v| v == "connected")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    paused.signal(libc::SIGCONT);
    // It fences, kills its old browser at once, rejoins as a new run.
    wait_for(
        Duration::from_secs(30),
        "p2 says it was fenced",
        async || paused.log().contains("fenced").then_some(()),
    )
    .await;
    // Some time for it to (wrongly) drive its browser again, then: still
    // one connection per device, and every session connected.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let both = fleet.refs();
    wait_for(
        Duration::from_secs(60),
        "both sessions connected once",
        async || all_connected(&both, 2).await,
    )
    .await;
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// Rolling restart: each host in turn is stopped with SIGTERM (drained:
/// its sessions backed up and released) and started again; every session
/// is down at most 15 s each time, and no login is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_sessions_by_drain_within_15_s() {
    let _turn = turn().await;
    let mut fleet = Fleet::start(&["r1", "r2"]).await;
    fleet.add_sessions(2);
    {
        let hosts = fleet.refs();
        wait_for(
            Duration::from_secs(120),
            "two sessions connected",
            async || all_connected(&hosts, 2).await,
        )
        .await;
    }
    let pairings = fleet.app.pairings();
    for i in 0..fleet.hosts.len() {
        let name = fleet.hosts[i].name.clone();
        fleet.hosts[i].signal(libc::SIGTERM);
        let stopped = Instant::now();
        let others: Vec<&Host> = fleet.hosts.iter().filter(|h| h.name != name).collect();
        // While it drains, watch how long the fixture has fewer than two
        // devices connected.
        let mut down_since: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        loop {
            let connected = fleet.app.connected_devices();
            match (connected < 2, down_since) {
                (true, None) => down_since = Some(Instant::now()),
                (false, Some(since)) => {
                    longest = longest.max(since.elapsed());
                    down_since = None;
                }
                _ => {}
            }
            if all_connected(&others, 2).await.is_some() && connected == 2 {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(60),
                "{name}'s sessions did not move by drain\n{}",
                dump_logs(&others)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let code = fleet.hosts[i].wait(Duration::from_secs(40));
        assert_eq!(code, Some(0), "{name} stops cleanly");
        assert!(
            longest <= Duration::from_secs(15),
            "a session was down {longest:?} while {name} drained"
        );
        eprintln!("{name} drained; longest outage {longest:?}");
        fleet.hosts[i].start();
        let h = &fleet.hosts[i];
        wait_for(Duration::from_secs(30), "the host is back", async || {
            h.get("/v1/hosts").await
        })
        .await;
    }
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}
