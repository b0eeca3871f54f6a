//! Browser measurements, printed, not asserted (see docs/BENCHMARKS.md):
//!
//! 1. start-up: a bare `chromium <url>` until the fixture page is connected
//!    (as the fixture server sees it), beside Vigil's launch + open + probe
//!    until connected, on the same paired profile, alternating, same run;
//! 2. memory: PSS and RSS summed over Chromium's processes for one session
//!    on the connected fixture page, with Vigil's base flags and with each
//!    memory-cutting flag set, after checking the app still works with it.
//!
//! `cargo bench -p vigil --bench browser [-- --rounds N] [-- --only startup|memory]`

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use vigil::browser::{
    Action, Browser, BrowserSettings, PageState, Probe, process_tree, process_tree_memory,
};
use vigil::id::SessionId;
use vigil_fixture::{Fixture, FixtureOptions};

const MIB: f64 = 1024.0 * 1024.0;

struct Options {
    rounds: usize,
    only: Option<String>,
    /// Measure only the flag sets whose name contains this.
    matching: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 5,
        only: None,
        matching: None,
    };
    let mut args = std::env::args().skip(1);
    // cargo passes `--bench`; anything unknown is ignored.
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => o.rounds = args.next().and_then(|n| n.parse().ok()).unwrap_or(5),
            "--only" => o.only = args.next(),
            "--match" => o.matching = args.next(),
            _ => {}
        }
    }
    o
}

fn probe() -> Probe {
    Probe::Script("document.body.dataset.state".into())
}

fn session() -> SessionId {
    SessionId::new("bench").unwrap()
}

fn main() -> anyhow::Result<()> {
    let options = options();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let fixture = Fixture::start(FixtureOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let profile = dir.path().join("profile");
    let device = pair(&fixture, &profile).await?;
    println!(
        "chromium: {}",
        String::from_utf8_lossy(
            &std::process::Command::new("chromium")
                .arg("--version")
                .stderr(Stdio::null())
                .output()?
                .stdout
        )
        .trim()
    );
    println!(
        "fixture page: {}  (paired device {device})\n",
        fixture.url()
    );
    if options.only.as_deref() != Some("memory") {
        startup(&fixture, &profile, &device, options.rounds).await?;
    }
    if options.only.as_deref() != Some("startup") {
        memory(&fixture, &profile, &device, options.matching.as_deref()).await?;
    }
    fixture.shutdown().await;
    Ok(())
}

/// A profile whose page is paired, so later launches connect directly.
async fn pair(fixture: &Fixture, profile: &Path) -> anyhow::Result<String> {
    let browser = Browser::launch(session(), profile, &BrowserSettings::default()).await?;
    browser.open(&fixture.url()).await?;
    let first = browser
        .wait_settled(&probe(), Duration::from_secs(20))
        .await?;
    anyhow::ensure!(
        first.state == PageState::NeedsLogin,
        "fresh profile: {first:?}"
    );
    let device = fixture.pair(None)?;
    wait_connected(&browser).await?;
    browser.close().await;
    Ok(device)
}

async fn wait_connected(browser: &Browser) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = browser.probe(&probe()).await?;
        if outcome.state == PageState::Connected {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not connected: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn connects(fixture: &Fixture, device: &str) -> u64 {
    fixture.report().device(device).map_or(0, |d| d.connects)
}

/// `chromium` with only what a headless server run needs, the page as its
/// argument; done when the fixture sees the page's connection.
async fn bare_start(fixture: &Fixture, profile: &Path, device: &str) -> anyhow::Result<Duration> {
    let before = connects(fixture, device);
    let started = Instant::now();
    let mut args = vec![
        "--headless".to_owned(),
        "--disable-gpu".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if unsafe { libc::geteuid() } == 0 {
        args.push("--no-sandbox".into());
    }
    args.push(fixture.url());
    let mut child = tokio::process::Command::new("chromium")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let deadline = started + Duration::from_secs(20);
    let took = loop {
        if connects(fixture, device) > before {
            break started.elapsed();
        }
        anyhow::ensure!(Instant::now() < deadline, "bare chromium never connected");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // SIGTERM is Chromium's own clean shutdown on Linux.
    let pid = child.id().unwrap_or_default() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        child.wait().await?;
    }
    clear_stale_locks(profile);
    Ok(took)
}

/// A bench-only tidy-up between runs (the process is gone): Vigil's volume
/// layer does this properly before a launch.
fn clear_stale_locks(profile: &Path) {
    for name in ["SingletonLock", "SingletonCookie", "SingletonSocket"] {
        let _ = std::fs::remove_file(profile.join(name));
    }
}

struct VigilStart {
    total: Duration,
    launch: Duration,
    open: Duration,
}

async fn vigil_start(fixture: &Fixture, profile: &Path) -> anyhow::Result<VigilStart> {
    let started = Instant::now();
    let browser = Browser::launch(session(), profile, &BrowserSettings::default()).await?;
    let launch = started.elapsed();
    browser.open(&fixture.url()).await?;
    let open = started.elapsed() - launch;
    wait_connected(&browser).await?;
    let total = started.elapsed();
    browser.close().await;
    Ok(VigilStart {
        total,
        launch,
        open,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "median {:7.0} ms   min {:7.0}   max {:7.0}",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

async fn startup(
    fixture: &Fixture,
    profile: &Path,
    device: &str,
    rounds: usize,
) -> anyhow::Result<()> {
    println!("== start-up to connected, paired profile on disk, {rounds} rounds ==");
    let (mut bare, mut vigil, mut launch, mut open) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        // Alternate who goes first: the second run meets warmer caches.
        if round % 2 == 0 {
            bare.push(ms(bare_start(fixture, profile, device).await?));
        }
        let v = vigil_start(fixture, profile).await?;
        vigil.push(ms(v.total));
        launch.push(ms(v.launch));
        open.push(ms(v.open));
        if round % 2 == 1 {
            bare.push(ms(bare_start(fixture, profile, device).await?));
        }
    }
    println!("bare chromium <url> -> page connected : {}", summary(bare));
    println!("vigil launch+open+probe -> connected  : {}", summary(vigil));
    println!(
        "  of which Browser::launch            : {}",
        summary(launch)
    );
    println!("  of which Browser::open (page load)  : {}", summary(open));
    println!();
    Ok(())
}

struct FlagSet {
    name: &'static str,
    lean: bool,
    extra: &'static [&'static str],
    /// Another browser binary than `chromium`.
    executable: Option<&'static str>,
}

const fn set(name: &'static str, lean: bool, extra: &'static [&'static str]) -> FlagSet {
    FlagSet {
        name,
        lean,
        extra,
        executable: None,
    }
}

const FLAG_SETS: &[FlagSet] = &[
    set("base flags only (lean = false)", false, &[]),
    set(
        "+ --renderer-process-limit=1",
        false,
        &["--renderer-process-limit=1"],
    ),
    set("+ --in-process-gpu", false, &["--in-process-gpu"]),
    set(
        "+ NetworkServiceInProcess",
        false,
        &["--enable-features=NetworkServiceInProcess"],
    ),
    set(
        "+ no SpareRendererForSitePerProcess",
        false,
        &["--disable-features=SpareRendererForSitePerProcess"],
    ),
    set(
        "+ --disable-site-isolation-trials",
        false,
        &["--disable-site-isolation-trials"],
    ),
    set(
        "+ --enable-low-end-device-mode",
        false,
        &["--enable-low-end-device-mode"],
    ),
    set(
        "+ --js-flags=--lite-mode",
        false,
        &["--js-flags=--lite-mode"],
    ),
    set(
        "+ --no-zygote (needs --no-sandbox)",
        false,
        &["--no-zygote"],
    ),
    set("+ --single-process (risky)", false, &["--single-process"]),
    set("lean = true (Vigil's default)", true, &[]),
    set(
        "lean + --enable-low-end-device-mode",
        true,
        &["--enable-low-end-device-mode"],
    ),
    set(
        "lean + low-end + no site isolation",
        true,
        &[
            "--enable-low-end-device-mode",
            "--disable-site-isolation-trials",
        ],
    ),
    FlagSet {
        name: "chromium-headless-shell, lean",
        lean: true,
        extra: &[],
        executable: Some("chromium-headless-shell"),
    },
];

async fn memory(
    fixture: &Fixture,
    profile: &Path,
    device: &str,
    matching: Option<&str>,
) -> anyhow::Result<()> {
    println!("== memory of one session on the connected fixture page ==");
    println!(
        "{:<42} {:>5} {:>9} {:>9} {:>9}  app",
        "flags", "procs", "PSS MiB", "anon MiB", "RSS MiB"
    );
    for set in FLAG_SETS
        .iter()
        .filter(|s| matching.is_none_or(|m| s.name.contains(m)))
    {
        let mut settings = BrowserSettings {
            lean: set.lean,
            extra_args: set.extra.iter().map(|s| s.to_string()).collect(),
            ..BrowserSettings::default()
        };
        if let Some(exe) = set.executable {
            if std::process::Command::new(exe)
                .arg("--version")
                .output()
                .is_err()
            {
                println!("{:<42} skipped: {exe} is not installed", set.name);
                continue;
            }
            settings.executable = exe.into();
        }
        match measure(fixture, profile, device, &settings).await {
            Ok((m, roles)) => {
                println!(
                    "{:<42} {:>5} {:>9.1} {:>9.1} {:>9.1}  works",
                    set.name,
                    m.processes,
                    m.pss_bytes as f64 / MIB,
                    m.pss_anon_bytes as f64 / MIB,
                    m.rss_bytes as f64 / MIB
                );
                println!("{:<42} {roles}", "");
            }
            Err(e) => println!("{:<42} FAILED: {e:#}", set.name),
        }
        clear_stale_locks(profile);
    }
    if matching.is_some() {
        return Ok(());
    }
    println!();
    for count in [2, 4] {
        several(fixture, count).await?;
    }
    println!(
        "\nbench process itself (fixture server + tokio): {:.1} MiB PSS",
        process_tree_memory(std::process::id())
            .map(|m| m.pss_bytes as f64 / MIB)
            .unwrap_or(0.0)
    );
    Ok(())
}

/// Launches with `settings`, checks the app works (connected, trusted input
/// reaches the server, a screenshot), lets it settle, then takes the median
/// of three PSS samples.
async fn measure(
    fixture: &Fixture,
    profile: &Path,
    device: &str,
    settings: &BrowserSettings,
) -> anyhow::Result<(vigil::browser::MemoryUsage, String)> {
    let browser = Browser::launch(session(), profile, settings).await?;
    let checked = async {
        browser.open(&fixture.url()).await?;
        wait_connected(&browser).await?;
        let reports = |f: &Fixture| f.report().device(device).map_or(0, |d| d.activity_reports);
        let before = reports(fixture);
        browser.act(&Action::MouseMove { x: 200, y: 200 }).await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while reports(fixture) == before {
            anyhow::ensure!(Instant::now() < deadline, "input did not reach the app");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(browser.screenshot().await?.len() > 1000, "empty screenshot");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut samples = Vec::new();
        for _ in 0..3 {
            samples.push(browser.memory().await?);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples.sort_by_key(|m| m.pss_bytes);
        let pid = browser.pid();
        let mut roles: Vec<(String, u64)> = tokio::task::spawn_blocking(move || process_tree(pid))
            .await??
            .into_iter()
            .map(|p| (p.role, p.pss_bytes))
            .collect();
        roles.sort_by_key(|r| std::cmp::Reverse(r.1));
        let roles = roles
            .iter()
            .map(|(r, pss)| format!("{r} {:.0}", *pss as f64 / MIB))
            .collect::<Vec<_>>()
            .join(", ");
        anyhow::Ok((samples[1], roles))
    }
    .await;
    let closed = browser.close().await;
    let (m, roles) = checked?;
    anyhow::ensure!(closed.graceful, "did not close cleanly: {closed:?}");
    Ok((m, roles))
}

/// Several sessions at once with the default settings: file pages (the
/// Chromium binary) are shared, so each session's PSS share shrinks.
async fn several(fixture: &Fixture, count: usize) -> anyhow::Result<()> {
    let dirs: Vec<_> = (0..count)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut browsers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let profile = dir.path().join("profile");
        pair(fixture, &profile).await?;
        let id = SessionId::new(format!("bench-{i}"))?;
        let browser = Browser::launch(id, &profile, &BrowserSettings::default()).await?;
        browser.open(&fixture.url()).await?;
        wait_connected(&browser).await?;
        browsers.push(browser);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut pss, mut anon, mut procs) = (0u64, 0u64, 0usize);
    for b in &browsers {
        let m = b.memory().await?;
        pss += m.pss_bytes;
        anon += m.pss_anon_bytes;
        procs += m.processes;
    }
    println!(
        "{count} sessions at once (default settings): {procs} processes, {:.1} MiB PSS in all, {:.1} MiB PSS per session ({:.1} MiB anon)",
        pss as f64 / MIB,
        pss as f64 / MIB / count as f64,
        anon as f64 / MIB / count as f64
    );
    for b in browsers {
        b.close().await;
    }
    Ok(())
}
