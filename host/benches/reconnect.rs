//! Time to reconnect after a drop, with the shipped defaults, printed, not
//! asserted (see docs/BENCHMARKS.md). One `vigil run` process, the shipped
//! `policies/` (their plugin paths pointed at the built plugins), the
//! default `[service]` timings (probes every 10 s), the fixture app:
//!
//! 1. `--drops N` (20): the app drops the page's connection at a random
//!    moment (0 to 40 s after the session is back, seeded), N times; for
//!    each, the time until the fixture sees the page connected again. Prints
//!    every time, the p50 and the max, and checks along the way that no
//!    restore happened and the device never paired again.
//! 2. `--app-down SECS` (600; 0 skips): the app is down that long, then
//!    back on its port with its devices; prints how long the session took
//!    to connect again after the app was back, what the watchdog did
//!    meanwhile, and whether anything was restored or paired again.
//!
//! `cargo bench -p vigil --bench reconnect [-- --drops 20 --app-down 600 --seed 7]`

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;
use vigil_fixture::{Fixture, FixtureOptions};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

struct Args {
    drops: usize,
    app_down: u64,
    seed: u64,
}

fn args() -> Args {
    let mut out = Args {
        drops: 20,
        app_down: 600,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--drops" => out.drops = value().unwrap_or(20) as usize,
            "--app-down" => out.app_down = value().unwrap_or(600),
            "--seed" => out.seed = value().unwrap_or(7),
            _ => {}
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = args();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// A small seeded generator: the same moments on every run of a seed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

struct Setup {
    root: tempfile::TempDir,
    fixture: Option<Fixture>,
    log: tokio::sync::watch::Receiver<String>,
    child: tokio::process::Child,
}

impl Setup {
    fn fixture(&self) -> &Fixture {
        self.fixture.as_ref().expect("the app is up")
    }

    fn live(&self) -> usize {
        self.fixture()
            .report()
            .devices
            .iter()
            .map(|d| d.connections)
            .sum()
    }

    fn pairings(&self) -> u64 {
        self.fixture().report().pairings
    }

    fn log_count(&self, needle: &str) -> usize {
        self.log.borrow().matches(needle).count()
    }

    async fn until_live(&self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while self.live() == 0 {
            if started.elapsed() > limit {
                bail!("not connected again within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    build_plugins()?;
    let root = tempfile::Builder::new()
        .prefix("vigil-reconnect-")
        .tempdir()?;
    let state_file = root.path().join("fixture-devices.json");
    let fixture = Fixture::start(FixtureOptions {
        auto_pair_after: Some(Duration::from_millis(500)),
        state_file: Some(state_file.clone()),
        ..FixtureOptions::default()
    })
    .await?;
    write_setup(root.path(), &fixture.url())?;
    let (child, log) = start_vigil(root.path())?;
    let mut setup = Setup {
        root,
        fixture: Some(fixture),
        log,
        child,
    };
    setup.until_live(Duration::from_secs(120)).await?;
    // The backup after the login, so a restore would have something to use.
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.log_count("backup saved") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pairings = setup.pairings();
    println!("connected; pairings {pairings}; shipped policies, probes every 10 s");

    if args.drops > 0 {
        drops(&setup, &args, pairings).await?;
    }
    if args.app_down > 0 {
        app_down(&mut setup, args.app_down, &state_file, pairings).await?;
    }

    // SAFETY: kill(2) on the child this bench started.
    unsafe { libc::kill(setup.child.id().unwrap_or(0) as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(60), setup.child.wait()).await;
    let _ = setup.root.path();
    Ok(())
}

async fn drops(setup: &Setup, args: &Args, pairings: u64) -> anyhow::Result<()> {
    let mut moments = Moments(args.seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let restores_before = setup.log_count("profile restored from backup");
    let mut times = Vec::new();
    println!("\n{} drops at random moments:", args.drops);
    for n in 1..=args.drops {
        let wait = moments.next_ms(40_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let dropped = setup.fixture().drop_connections(None);
        if dropped == 0 {
            bail!("drop {n}: nothing was connected");
        }
        let took = setup.until_live(Duration::from_secs(300)).await?;
        println!(
            "  drop {n:>2} at +{:>5.1} s: connected again after {:>5.1} s",
            wait as f64 / 1000.0,
            took.as_secs_f64()
        );
        times.push(took);
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times.last().copied().unwrap_or_default();
    println!(
        "time to reconnect over {} drops: p50 {:.1} s, max {:.1} s",
        times.len(),
        p50.as_secs_f64(),
        max.as_secs_f64()
    );
    println!(
        "restores: {}, browser restarts asked by the watchdog: {}, pairings: {} (before: {pairings})",
        setup.log_count("profile restored from backup") - restores_before,
        setup.log_count("watchdog: restarting the browser"),
        setup.pairings()
    );
    Ok(())
}

async fn app_down(
    setup: &mut Setup,
    secs: u64,
    state_file: &Path,
    pairings: u64,
) -> anyhow::Result<()> {
    let restores_before = setup.log_count("profile restored from backup");
    let restarts_before = setup.log_count("watchdog: restarting the browser");
    let reloads_before = setup.log_count("watchdog: reloading the page");
    let fixture = setup.fixture.take().expect("up");
    let addr = fixture.addr();
    fixture.shutdown().await;
    println!("\nthe app is down for {secs} s");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    setup.fixture = Some(
        Fixture::start(FixtureOptions {
            listen: addr,
            auto_pair_after: None,
            state_file: Some(state_file.to_path_buf()),
            ..FixtureOptions::default()
        })
        .await
        .context("the app comes back on its port")?,
    );
    let took = setup.until_live(Duration::from_secs(1200)).await?;
    println!(
        "the app is back: connected again after {:.1} s; meanwhile {} reloads and {} restarts by the watchdog, {} restores; pairings {} (before: {pairings})",
        took.as_secs_f64(),
        setup.log_count("watchdog: reloading the page") - reloads_before,
        setup.log_count("watchdog: restarting the browser") - restarts_before,
        setup.log_count("profile restored from backup") - restores_before,
        setup.pairings()
    );
    Ok(())
}

fn start_vigil(
    root: &Path,
) -> anyhow::Result<(tokio::process::Child, tokio::sync::watch::Receiver<String>)> {
    let mut child = tokio::process::Command::new(VIGIL)
        .args(["run", "--config"])
        .arg(root.join("vigil.toml"))
        .env("RUST_LOG", "info,chromiumoxide=error")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start vigil run")?;
    let stderr = child.stderr.take().expect("piped");
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
    Ok((child, rx))
}

/// The shipped policies and service defaults; only the paths and the
/// API's port (a free one) differ from `examples/vigil.toml`.
fn write_setup(root: &Path, url: &str) -> anyhow::Result<()> {
    let repo = repo();
    std::fs::create_dir_all(root.join("policies"))?;
    for (file, plugin) in [
        ("activity.toml", "activity"),
        ("heartbeat.toml", "heartbeat"),
        ("restore.toml", "restore-default"),
    ] {
        let shipped = std::fs::read_to_string(repo.join("policies").join(file))?;
        let built = repo.join("target/plugins").join(format!("{plugin}.wasm"));
        let text = shipped.replace(
            &format!("\"../target/plugins/{plugin}.wasm\""),
            &format!("{:?}", built.display().to_string()),
        );
        std::fs::write(root.join("policies").join(file), text)?;
    }
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::write(
        root.join("vigil.toml"),
        format!(
            r#"data_dir = "data"
[backup]
store = "file://backups"
[policy]
dir = "policies"
[api]
listen = "{api}"
[[session]]
id = "main"
url = "{url}"
probe = {{ script = "document.body.dataset.state" }}
"#
        ),
    )?;
    Ok(())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn build_plugins() -> anyhow::Result<()> {
    let status = std::process::Command::new("bash")
        .arg(repo().join("scripts/build-plugins.sh"))
        .current_dir(repo())
        .status()?;
    if !status.success() {
        bail!("building the plugins failed");
    }
    Ok(())
}
