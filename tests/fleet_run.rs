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
    fn new(name: &str, store: &Store) -> Self {
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

/// Where the hosts keep their backups and fleet records, and their
/// lease and renewal period in seconds.
#[derive(Clone)]
struct Store {
    endpoint: String,
    bucket: String,
    timing: (u64, u64),
}

impl Store {
    /// A new bucket on the moto server of the test run; 6 s leases.
    fn shared() -> Self {
        Self {
            endpoint: s3::endpoint().to_string(),
            bucket: s3::bucket("fleet-run"),
            timing: (6, 2),
        }
    }
}

struct Fleet {
    app: App,
    store: Store,
    hosts: Vec<Host>,
}

impl Fleet {
    async fn start(names: &[&str]) -> Self {
        Self::start_on(names, Store::shared()).await
    }

    async fn start_on(names: &[&str], store: Store) -> Self {
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
    async fn join(&mut self, name: &str) {
        let mut h = Host::new(name, &self.store);
        h.start();
        self.hosts.push(h);
        Self::wait_up_refs(&self.refs()).await;
    }

    async fn wait_up(hosts: &[Host]) {
        let refs: Vec<&Host> = hosts.iter().collect();
        Self::wait_up_refs(&refs).await;
    }

    async fn wait_up_refs(hosts: &[&Host]) {
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

/// Two hosts run three sessions (2 and 1); a third joins: the host above
/// its share hands one session over (backup, release, the newcomer
/// restores exactly that backup), 1/1/1, with no login lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_host_takes_its_share_by_handover() {
    let _turn = turn().await;
    let mut fleet = Fleet::start(&["j1", "j2"]).await;
    fleet.add_sessions(3);
    let (by, _) = wait_for(
        Duration::from_secs(120),
        "three sessions connected",
        async || all_connected(&fleet.refs(), 3).await,
    )
    .await;
    assert_eq!(spread(&by), vec![1, 2], "{by:?}");
    wait_for(Duration::from_secs(60), "after-login backups", async || {
        let mut all = true;
        for h in fleet.refs() {
            for s in h.get("/v1/sessions").await?["sessions"].as_array()? {
                all &= !s["last_backup"].is_null();
            }
        }
        all.then_some(())
    })
    .await;
    let pairings = fleet.app.pairings();
    assert_eq!(pairings, 3);

    fleet.join("j3").await;
    let (by, took) = wait_for(
        Duration::from_secs(90),
        "1/1/1 after j3 joined",
        async || {
            let by = all_connected(&fleet.refs(), 3).await?;
            (spread(&by) == vec![1, 1, 1]).then_some(by)
        },
    )
    .await;
    eprintln!("rebalanced in {took:?}: {by:?}");
    let logs = dump_logs(&fleet.refs());
    assert!(logs.contains("handed over by"), "{logs}");
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// A moto server of this test's own (the shared one serves every test of
/// the run): it can be paused.
struct OwnMoto {
    child: Child,
    endpoint: String,
}

impl OwnMoto {
    async fn start() -> Self {
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

    fn bucket(&self, name: &str) {
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

    fn signal(&self, signal: i32) {
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

/// The store stops answering (moto paused). For 10 s nothing stops; for
/// longer than the fence time every host fences and kills its browsers
/// (nobody can tell a dead host from a cut-off one); once the store is
/// back, every session is connected again within 60 s, from the disk
/// profiles of the same hosts, with no new login. Leases of 24 s here
/// (renewals every 4 s, fence at 18 s): an outage up to 13 s is absorbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_stops_nothing_when_short_and_fences_everyone_when_long() {
    let _turn = turn().await;
    let moto = OwnMoto::start().await;
    moto.bucket("fleet-outage");
    let store = Store {
        endpoint: moto.endpoint.clone(),
        bucket: "fleet-outage".into(),
        timing: (24, 4),
    };
    let fleet = Fleet::start_on(&["o1", "o2"], store).await;
    fleet.add_sessions(2);
    let hosts = fleet.refs();
    let (before, _) = wait_for(
        Duration::from_secs(120),
        "two sessions connected",
        async || all_connected(&hosts, 2).await,
    )
    .await;
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

    // 10 s: nothing stops, nothing moves.
    moto.signal(libc::SIGSTOP);
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            fleet.app.connected_devices(),
            2,
            "a short outage stopped a session"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    moto.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(all_connected(&hosts, 2).await, Some(before.clone()));
    for h in &hosts {
        assert!(!h.log().contains("fenced:"), "{}", h.log());
    }

    // 45 s: every host fences and its browsers stop.
    moto.signal(libc::SIGSTOP);
    wait_for(
        Duration::from_secs(40),
        "every browser stopped",
        async || (fleet.app.connected_devices() == 0).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    moto.signal(libc::SIGCONT);
    let back = Instant::now();
    let (after, took) = wait_for(
        Duration::from_secs(60),
        "connected again after the outage",
        async || all_connected(&hosts, 2).await,
    )
    .await;
    eprintln!(
        "connected again {:?} after the store came back: {after:?}",
        back.elapsed().min(took)
    );
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}
