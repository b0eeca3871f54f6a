//! Policy benchmark (not a test): prints decision latency with a fresh
//! Store per call, the same decisions with each one written to a decision
//! journal (as a session does), the same decisions made natively, and the
//! time from a file change to the new version serving, with and without
//! the compile cache. Run with `cargo bench -p vigil --bench policy`; the
//! figures go to docs/BENCHMARKS.md. `cargo bench -p vigil --bench policy
//! -- languages` prints only the comparison of Rust, Python and JavaScript
//! policies: component size, first load (compile) and cached load, call
//! times.

#[path = "../../tests/common/plugins.rs"]
#[allow(dead_code)]
mod plugins;

#[path = "../../tests/common/languages.rs"]
#[allow(dead_code)]
mod languages;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil::id::SessionId;
use vigil::journal::{Journal, JournalConfig};
use vigil::policy::{
    BackupFacts, CriticalFile, Facts, FakeClock, Inventory, LockState, PolicyRuntime, PolicySource,
    Role, RuntimeOptions, ServedBy, SessionState,
};

const CALLS: usize = 20_000;

/// One decision of one role, made by whichever runtime it is given.
type Decide<'a> = &'a dyn Fn(&PolicyRuntime);
const RELOADS: usize = 10;

fn main() {
    if std::env::args().any(|a| a == "languages") {
        compare_languages();
        return;
    }
    let policies = plugins::repo_root().join("policies");
    plugins::plugin("activity");
    let clock = Arc::new(FakeClock::new(1_767_225_600_000));
    let wasm = PolicyRuntime::new(
        RuntimeOptions::new(PolicySource::Directory(policies)).clock(clock.clone()),
    )
    .expect("runtime");
    assert!(
        wasm.status().rejected.is_empty(),
        "{:?}",
        wasm.status().rejected
    );
    let empty = tempfile::tempdir().unwrap();
    let native = PolicyRuntime::new(
        RuntimeOptions::new(PolicySource::Directory(empty.path().to_path_buf()))
            .clock(clock.clone()),
    )
    .unwrap();

    let main = SessionId::new("main").unwrap();
    let mut degraded = Facts::new(main.clone(), SessionState::Degraded);
    degraded.consecutive_probe_failures = 1;
    degraded.last_probe_detail = "timeout".into();
    let connected = Facts::new(main.clone(), SessionState::Connected);
    let inventory = Inventory {
        exists: true,
        critical_files: vec![
            CriticalFile {
                path: "Default/IndexedDB".into(),
                present: true,
                non_empty: true,
            },
            CriticalFile {
                path: "Default/Local Storage".into(),
                present: true,
                non_empty: false,
            },
        ],
        size_bytes: 50 << 20,
        lock: LockState::Stale,
    };
    let backups: Vec<BackupFacts> = (0..5)
        .map(|i| BackupFacts {
            id: format!("main-{i}"),
            age: Duration::from_secs(3600 * i),
            size_bytes: 40 << 20,
            verified: i != 0,
            restore_failed: i == 1,
        })
        .collect();

    // The journal a session writes to: the real writer thread, files in a
    // temporary folder, the default cap (so it rotates during the run).
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_dir.path(), &JournalConfig::default()).unwrap();
    let question = vigil::policy::RestoreQuestion {
        session: main.clone(),
        inventory: inventory.clone(),
        backups: backups.clone(),
    };

    println!("decision latency, {CALLS} calls each (fresh Store + instantiate + call + checks):");
    println!("{:<34} {:>9} {:>9} {:>9}", "", "p50", "p99", "mean");
    let rows: [(&str, Decide, Decide); 3] = [
        (
            "keepalive (activity)",
            &|r| {
                assert!(!r.keepalive_blocking(&connected).value.is_empty());
            },
            &|r| {
                let d = r.keepalive_blocking(&connected);
                journal.record(&main, Role::Keepalive, &connected, &d);
            },
        ),
        (
            "watchdog (heartbeat)",
            &|r| {
                std::hint::black_box(r.watchdog_blocking(&degraded));
            },
            &|r| {
                let d = r.watchdog_blocking(&degraded);
                journal.record(&main, Role::Watchdog, &degraded, &d);
            },
        ),
        (
            "restore (restore-default)",
            &|r| {
                std::hint::black_box(r.restore_blocking(&main, &inventory, &backups));
            },
            &|r| {
                let d = r.restore_blocking(&main, &inventory, &backups);
                journal.record(&main, Role::Restore, &question, &d);
            },
        ),
    ];
    for (name, decide, journaled) in rows {
        let w = measure(|| decide(&wasm));
        let j = measure(|| journaled(&wasm));
        let n = measure(|| decide(&native));
        println!("{:<34} {}", format!("{name}, wasm"), w);
        println!("{:<34} {}", format!("{name}, wasm + journal"), j);
        println!("{:<34} {}", format!("{name}, native built-in"), n);
        println!(
            "{:<34} {:>8.0}x",
            "  ratio wasm/native at p50",
            w.p50.as_secs_f64() / n.p50.as_secs_f64().max(1e-9)
        );
    }

    journal.close();
    let stats = journal.stats();
    println!(
        "journal: {} lines written, {} dropped (writer behind), {} failed",
        stats.written, stats.dropped, stats.failed
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let through_tokio = rt.block_on(async {
        for _ in 0..1000 {
            wasm.keepalive(&connected).await;
        }
        let mut samples = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            std::hint::black_box(wasm.keepalive(&connected).await);
            samples.push(t.elapsed());
        }
        Stats::of(samples)
    });
    println!(
        "{:<34} {}",
        "keepalive via async API (tokio)", through_tokio
    );

    println!();
    println!("reload: file change -> new version serving ({RELOADS} swaps each, watcher running):");
    let cache = tempfile::tempdir().unwrap();
    let cold = rt.block_on(reloads(None));
    println!("{:<34} {}", "without compile cache", cold);
    let _ = rt.block_on(reloads(Some(cache.path())));
    let warm = rt.block_on(reloads(Some(cache.path())));
    println!("{:<34} {}", "with compile cache (warm)", warm);
    println!("of which reconcile alone (parse, compile or load, link, self-check, swap):");
    println!("{:<34} {}", "  without compile cache", direct_reloads(None));
    println!(
        "{:<34} {}",
        "  with compile cache (warm)",
        direct_reloads(Some(cache.path()))
    );
}

/// A policy folder whose keepalive policy serves `plugin.wasm`, installed
/// from the first of two plugin builds to swap between, and a runtime on it.
fn swap_setup(cache: Option<&Path>) -> (tempfile::TempDir, [PathBuf; 2], PolicyRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let variants = [
        plugins::plugin("activity"),
        plugins::test_plugin("misbehave"),
    ];
    install(&variants[0], &dir.path().join("plugin.wasm"));
    std::fs::write(
        dir.path().join("keep.toml"),
        "role = \"keepalive\"\nplugin = \"plugin.wasm\"\n",
    )
    .unwrap();
    let mut options = RuntimeOptions::new(PolicySource::Directory(dir.path().to_path_buf()));
    options.cache_dir = cache.map(Path::to_path_buf);
    let runtime = PolicyRuntime::new(options).unwrap();
    (dir, variants, runtime)
}

/// The same swaps with no watcher: `reload_now` right after the rename.
fn direct_reloads(cache: Option<&Path>) -> Stats {
    let (dir, variants, runtime) = swap_setup(cache);
    let samples = (1..=RELOADS)
        .map(|i| {
            install(&variants[i % 2], &dir.path().join("plugin.wasm"));
            let started = Instant::now();
            let events = runtime.reload_now();
            assert_eq!(events.len(), 1, "{events:?}");
            started.elapsed()
        })
        .collect();
    Stats::of(samples)
}

/// Swaps the plugin behind a policy between two builds, and times each
/// swap from the rename to the first call served by the new sha256.
async fn reloads(cache: Option<&Path>) -> Stats {
    let (dir, variants, runtime) = swap_setup(cache);
    let watcher = runtime.watch().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let facts = Facts::new(SessionId::new("main").unwrap(), SessionState::Connected);
    let sha = |r: &PolicyRuntime| match r.keepalive_blocking(&facts).served_by {
        ServedBy::Policy(p) => p.sha256,
        other => panic!("{other:?}"),
    };
    let mut samples = Vec::new();
    for i in 1..=RELOADS {
        let before = sha(&runtime);
        let started = Instant::now();
        install(&variants[i % 2], &dir.path().join("plugin.wasm"));
        loop {
            if sha(&runtime) != before {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reload never happened"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.stop().await;
    Stats::of(samples)
}

fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn measure(mut f: impl FnMut()) -> Stats {
    for _ in 0..1000 {
        f();
    }
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    Stats::of(samples)
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        Stats {
            p50: at(0.5),
            p99: at(0.99),
            mean,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9} {:>9} {:>9}",
            fmt(self.p50),
            fmt(self.p99),
            fmt(self.mean)
        )
    }
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// Calls per language in the comparison (a Python call is a millisecond).
const LANGUAGE_CALLS: usize = 1_000;

/// The same policies in Rust, Python and JavaScript: size, load time with
/// and without the compile cache, and the time of a call (a fresh instance
/// each time, as in production).
fn compare_languages() {
    let connected = Facts::new(SessionId::new("main").unwrap(), SessionState::Connected);
    let mut degraded = connected.clone();
    degraded.state = SessionState::Degraded;
    degraded.consecutive_probe_failures = 1;
    degraded.last_probe_detail = "timeout".into();
    println!(
        "{:<24} {:>9} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "policy", "size", "cold load", "cached load", "instantiate", "call p50", "call p99"
    );
    for (name, role) in [
        ("activity", vigil::policy::Role::Keepalive),
        ("heartbeat", vigil::policy::Role::Watchdog),
    ] {
        for language in ["rust", "python", "js"] {
            let wasm = match language {
                "rust" => plugins::plugin(name),
                other => languages::example(other, name),
            };
            let dir = tempfile::tempdir().unwrap();
            let cache = dir.path().join("cache");
            let file = dir.path().join("policy.toml");
            std::fs::write(
                &file,
                format!(
                    "role = \"{role}\"\nplugin = {:?}\n",
                    wasm.display().to_string()
                ),
            )
            .unwrap();
            let load = || {
                let started = Instant::now();
                let runtime = PolicyRuntime::new(
                    RuntimeOptions::new(PolicySource::File(file.clone())).cache_dir(&cache),
                )
                .unwrap();
                assert!(
                    runtime.status().rejected.is_empty(),
                    "{:?}",
                    runtime.status().rejected
                );
                (runtime, started.elapsed())
            };
            let (_, cold) = load();
            let (runtime, cached) = load();
            let footprint = runtime.status().policies[0].footprint;
            let mut fallbacks = Vec::new();
            let calls = measure_n(LANGUAGE_CALLS, || {
                let served_by = match role {
                    vigil::policy::Role::Keepalive => {
                        runtime.keepalive_blocking(&connected).served_by
                    }
                    _ => runtime.watchdog_blocking(&degraded).served_by,
                };
                if served_by.is_fallback() {
                    fallbacks.push(served_by.to_string());
                }
            });
            println!(
                "{:<24} {:>9} {:>11} {:>11} {:>11} {:>9} {:>9}",
                format!("{name} ({language})"),
                format!("{:.1} MB", footprint.size_bytes as f64 / 1e6),
                fmt(cold),
                fmt(cached),
                fmt(Duration::from_micros(footprint.instantiate_us)),
                fmt(calls.p50),
                fmt(calls.p99),
            );
            println!(
                "{:<24} start memory {:.1} MiB; {} fallbacks{}",
                "",
                footprint.start_memory_bytes as f64 / (1u64 << 20) as f64,
                fallbacks.len(),
                fallbacks
                    .first()
                    .map(|f| format!(" (first: {f})"))
                    .unwrap_or_default()
            );
        }
    }
}

fn measure_n(n: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..n / 10 {
        f();
    }
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    Stats::of(samples)
}
