//! `vigil run` measured as an operator sees it, printed, not asserted (see
//! docs/BENCHMARKS.md):
//!
//! 1. start-up to connected: a bare `chromium <url>` on a logged-in copy
//!    of the profile, beside `vigil run` with the profile on disk, and
//!    `vigil run` with the profile lost and restored from a backup holding
//!    50 MB more of incompressible data; all against the fixture app, until
//!    the app sees the page connected, alternating, in the same run;
//! 2. memory of one connected session: PSS summed over Chromium's
//!    processes, and the `vigil` process's own PSS and RSS.
//!
//! `cargo bench -p vigil --bench session [-- --rounds N]`

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vigil::browser::process_tree_memory;
use vigil_fixture::{Fixture, FixtureOptions};

const MIB: f64 = 1024.0 * 1024.0;
const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn main() -> anyhow::Result<()> {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(rounds))
}

struct Bench {
    root: tempfile::TempDir,
    fixture: Fixture,
}

impl Bench {
    fn config(&self) -> PathBuf {
        self.root.path().join("vigil.toml")
    }
    fn profile(&self) -> PathBuf {
        self.root.path().join("data/profiles/main")
    }
    fn connections(&self) -> u64 {
        self.fixture
            .report()
            .devices
            .iter()
            .map(|d| d.connects)
            .sum()
    }

    /// Waits until the fixture has seen more page connections than `before`.
    async fn connected_after(&self, before: u64, started: Instant) -> anyhow::Result<Duration> {
        while self.connections() <= before {
            if started.elapsed() > Duration::from_secs(120) {
                bail!("no connection within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }
}

async fn run(rounds: usize) -> anyhow::Result<()> {
    build_plugins()?;
    let fixture = Fixture::start(FixtureOptions {
        auto_pair_after: Some(Duration::from_millis(300)),
        ..FixtureOptions::default()
    })
    .await?;
    let bench = Bench {
        root: tempfile::Builder::new().prefix("vigil-bench-").tempdir()?,
        fixture,
    };
    write_setup(&bench)?;

    // A logged-in profile: the first run pairs (automatically) and is
    // stopped once connected.
    let mut first = VigilRun::start(&bench)?;
    bench.connected_after(0, Instant::now()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    first.stop().await?;
    let profile_bytes = dir_size(&bench.profile());
    // 50 MB the app never reads, incompressible, inside the profile.
    write_random(
        &bench.profile().join("Default/vigil-bench-50MB.bin"),
        50 << 20,
    )?;
    let status = std::process::Command::new(VIGIL)
        .args(["backup", "main", "--config"])
        .arg(bench.config())
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("vigil backup failed: {status}");
    }
    println!(
        "profile: {:.1} MiB logged in, plus 50 MiB of random data; backup made",
        profile_bytes as f64 / MIB
    );

    let mut bare = Vec::new();
    let mut disk = Vec::new();
    let mut backup = Vec::new();
    let mut memory = None;
    for round in 1..=rounds {
        // Bare Chromium on a copy, so it cannot disturb the real profile.
        let copy = bench.root.path().join("bare-copy");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&bench.profile(), &copy)?;
        let before = bench.connections();
        let started = Instant::now();
        let mut chromium = tokio::process::Command::new("chromium")
            .args(bare_flags(&copy))
            .arg(bench.fixture.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        bare.push(bench.connected_after(before, started).await?);
        chromium.kill().await?;
        let _ = chromium.wait().await;

        let before = bench.connections();
        let started = Instant::now();
        let mut vigil = VigilRun::start(&bench)?;
        disk.push(bench.connected_after(before, started).await?);
        if round == rounds {
            tokio::time::sleep(Duration::from_secs(5)).await;
            memory = Some(vigil.memory()?);
        }
        vigil.stop().await?;

        std::fs::remove_dir_all(bench.profile())?;
        let before = bench.connections();
        let started = Instant::now();
        let mut vigil = VigilRun::start(&bench)?;
        backup.push(bench.connected_after(before, started).await?);
        vigil.stop().await?;
        println!(
            "round {round}: bare {} ms, vigil from disk {} ms, vigil from backup {} ms",
            bare[round - 1].as_millis(),
            disk[round - 1].as_millis(),
            backup[round - 1].as_millis()
        );
    }
    println!("\nmedian of {rounds} rounds, spawn to the app seeing the page connected:");
    println!(
        "  bare chromium:           {:>6} ms",
        median(&bare).as_millis()
    );
    println!(
        "  vigil run, from disk:    {:>6} ms  ({:+} ms)",
        median(&disk).as_millis(),
        median(&disk).as_millis() as i64 - median(&bare).as_millis() as i64
    );
    println!(
        "  vigil run, from backup:  {:>6} ms  ({:+} ms)",
        median(&backup).as_millis(),
        median(&backup).as_millis() as i64 - median(&bare).as_millis() as i64
    );
    if let Some(m) = memory {
        println!("\none connected session (lean flags, the default):");
        println!(
            "  chromium: {} processes, PSS {:.0} MiB (anon {:.0} MiB), RSS {:.0} MiB",
            m.chromium.processes,
            m.chromium.pss_bytes as f64 / MIB,
            m.chromium.pss_anon_bytes as f64 / MIB,
            m.chromium.rss_bytes as f64 / MIB
        );
        println!(
            "  vigil:    PSS {:.0} MiB, RSS {:.0} MiB",
            m.vigil_pss as f64 / MIB,
            m.vigil_rss as f64 / MIB
        );
        println!(
            "  together: PSS {:.0} MiB per session",
            (m.chromium.pss_bytes + m.vigil_pss) as f64 / MIB
        );
    }
    Ok(())
}

/// The flags Vigil itself uses that matter for a fair start-up race.
fn bare_flags(profile: &Path) -> Vec<String> {
    let mut flags: Vec<String> = vigil::browser::chromium_args(
        &vigil::browser::BrowserSettings::default(),
        profile,
        unsafe { libc::geteuid() } == 0,
    );
    // Vigil opens its own tab over DevTools; the bare run opens the URL.
    flags.retain(|f| f != "--no-startup-window" && !f.starts_with("--remote-debugging"));
    flags
}

struct Memory {
    chromium: vigil::browser::MemoryUsage,
    vigil_pss: u64,
    vigil_rss: u64,
}

struct VigilRun {
    child: tokio::process::Child,
}

impl VigilRun {
    fn start(bench: &Bench) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(bench.config())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start vigil run")?;
        Ok(Self { child })
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.child.id().context("vigil is running")?;
        let tree = vigil::browser::process_tree(pid)?;
        let own = tree.iter().find(|p| p.pid == pid).context("vigil itself")?;
        let all = process_tree_memory(pid)?;
        Ok(Memory {
            chromium: vigil::browser::MemoryUsage {
                processes: all.processes - 1,
                pss_bytes: all.pss_bytes - own.pss_bytes,
                pss_anon_bytes: all.pss_anon_bytes - own.pss_anon_bytes,
                rss_bytes: all.rss_bytes - own.rss_bytes,
            },
            vigil_pss: own.pss_bytes,
            vigil_rss: own.rss_bytes,
        })
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("vigil is running")?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(90), self.child.wait()).await??;
        if !status.success() {
            bail!("vigil run exited with {status}");
        }
        Ok(())
    }
}

fn write_setup(bench: &Bench) -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let policies = bench.root.path().join("policies");
    std::fs::create_dir_all(&policies)?;
    for file in ["activity.toml", "heartbeat.toml", "restore.toml"] {
        let text = std::fs::read_to_string(repo.join("policies").join(file))?;
        let plugins = repo.join("target/plugins");
        std::fs::write(
            policies.join(file),
            text.replace("../target/plugins", &plugins.display().to_string()),
        )?;
    }
    std::fs::write(
        bench.config(),
        format!(
            r#"data_dir = "data"
[backup]
store = "file://backups"
# Measured separately: the new-login backup would close the browser.
after_login = false
on_shutdown = false
[policy]
dir = "policies"
[service]
probe_interval_secs = 1
[[session]]
id = "main"
url = "{}"
probe = {{ script = "document.body.dataset.state" }}
"#,
            bench.fixture.url()
        ),
    )?;
    Ok(())
}

fn build_plugins() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = std::process::Command::new("bash")
        .arg(repo.join("scripts/build-plugins.sh"))
        .current_dir(repo)
        .status()?;
    if !status.success() {
        bail!("building the plugins failed");
    }
    Ok(())
}

fn write_random(path: &Path, bytes: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..bytes / 8 {
        // xorshift: incompressible enough for gzip.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.write_all(&state.to_le_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("cp -a failed");
    }
    for name in ["SingletonLock", "SingletonCookie", "SingletonSocket"] {
        let _ = std::fs::remove_file(to.join(name));
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}
