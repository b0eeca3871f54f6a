//! Policies in Python and JavaScript beside Rust, first-class: the same
//! decisions on every shipped scenario, `vigil policy test` and `vigil
//! policy check` on them, a scaffold of each language that builds and
//! passes, their limits, and hot reload of a big component while every
//! other policy keeps answering.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::languages::{LANGUAGES, example};
use common::plugins::{compile_cache, plugin, repo_root};
use vigil::id::SessionId;
use vigil::policy::scenario::{self, Scenario, StepInput};
use vigil::policy::{
    CompileSource, Facts, FakeClock, FallbackCause, PolicyRuntime, PolicySource, ReloadEvent, Role,
    RuntimeOptions, ServedBy, SessionState,
};

/// The shipped scenarios, with the policy file and the plugin of each.
const SHIPPED: [(&str, &str); 3] = [
    ("activity", "activity"),
    ("heartbeat", "heartbeat"),
    ("restore", "restore-default"),
];

fn vigil(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(dir)
        .env("VIGIL_POLICY_CACHE", compile_cache())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vigil")
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The shipped policy file `policies/<name>.toml`, bound to `wasm`, in `dir`.
fn shipped_policy_for(dir: &Path, name: &str, wasm: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join(format!("policies/{name}.toml"))).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("plugin = ") {
                format!("plugin = {:?}\n", wasm.display().to_string())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

fn runtime_for(file: &Path, clock: Arc<FakeClock>) -> PolicyRuntime {
    let runtime = PolicyRuntime::new(
        RuntimeOptions::new(PolicySource::File(file.to_path_buf()))
            .cache_dir(compile_cache())
            .clock(clock),
    )
    .expect("runtime starts");
    assert!(
        runtime.status().rejected.is_empty(),
        "{:?}",
        runtime.status().rejected
    );
    runtime
}

#[test]
fn rust_python_and_javascript_make_the_same_decisions_on_every_shipped_scenario() {
    plugin("activity");
    let dir = tempfile::tempdir().unwrap();
    for (name, plugin_name) in SHIPPED {
        let scenario =
            Scenario::load(&repo_root().join(format!("policies/scenarios/{name}.toml"))).unwrap();
        let clock = Arc::new(FakeClock::new(scenario.start_ms));
        let mut runtimes = vec![(
            "rust",
            runtime_for(
                &repo_root().join(format!("policies/{name}.toml")),
                clock.clone(),
            ),
        )];
        for language in LANGUAGES {
            let folder = dir.path().join(language);
            std::fs::create_dir_all(&folder).unwrap();
            let file = shipped_policy_for(&folder, name, &example(language, plugin_name));
            runtimes.push((language, runtime_for(&file, clock.clone())));
        }

        for (i, step) in scenario.steps.iter().enumerate() {
            clock.set_ms(scenario.start_ms + step.at.as_millis() as u64);
            let answers: Vec<(&str, String)> = runtimes
                .iter()
                .map(|(language, runtime)| {
                    let (value, served_by) = match &step.input {
                        StepInput::Facts(f) if scenario.role == Role::Keepalive => {
                            let d = runtime.keepalive_blocking(f);
                            (format!("{:?}", d.value), d.served_by)
                        }
                        StepInput::Facts(f) => {
                            let d = runtime.watchdog_blocking(f);
                            (format!("{:?}", d.value), d.served_by)
                        }
                        StepInput::Restore { inventory, backups } => {
                            let d = runtime.restore_blocking(&scenario.session, inventory, backups);
                            (format!("{:?}", d.value), d.served_by)
                        }
                    };
                    assert!(
                        matches!(served_by, ServedBy::Policy(_)),
                        "{name} step {} in {language}: {served_by}",
                        i + 1
                    );
                    (*language, value)
                })
                .collect();
            for (language, value) in &answers[1..] {
                assert_eq!(
                    value,
                    &answers[0].1,
                    "{name} step {} (line {}): {language} differs from rust",
                    i + 1,
                    step.line
                );
            }
        }
        // And each passes the scenario on its own, from a clean memory.
        for (language, runtime) in &runtimes {
            let report = scenario::run(runtime, &clock, &scenario).unwrap();
            assert!(report.passed, "{language}: {}", report.render());
        }
    }
}

#[test]
fn the_examples_pass_the_shipped_scenarios_through_vigil_policy_test() {
    for language in LANGUAGES {
        for (name, plugin_name) in SHIPPED {
            let wasm = example(language, plugin_name);
            let scenario = format!("policies/scenarios/{name}.toml");
            let run = vigil(
                &[
                    "policy",
                    "test",
                    wasm.to_str().unwrap(),
                    "--scenario",
                    &scenario,
                ],
                repo_root(),
            );
            assert_eq!(
                run.status.code(),
                Some(0),
                "{language} {name}: {}",
                shown(&run)
            );
            let out = String::from_utf8_lossy(&run.stdout);
            assert!(out.contains(" passed, 0 failed"), "{out}");
            assert!(!out.contains("FAIL"), "{out}");
        }
    }
}

/// `vigil policy new` for each language (each a different role), then the
/// two commands it printed, as an operator would run them.
#[test]
fn a_new_policy_in_each_language_builds_with_the_printed_command_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    for (language, role, name) in [
        ("rust", "restore", "my-restore"),
        ("python", "watchdog", "my-watchdog"),
        ("js", "keepalive", "my-keepalive"),
    ] {
        let new = vigil(
            &["policy", "new", name, "--role", role, "--lang", language],
            dir.path(),
        );
        assert_eq!(new.status.code(), Some(0), "{}", shown(&new));
        let out = String::from_utf8_lossy(&new.stdout).into_owned();
        let command_after = |heading: &str| -> Vec<String> {
            let mut lines = out.lines().skip_while(|l| *l != heading);
            lines.next();
            let line = lines.next().unwrap_or_else(|| panic!("{heading} in {out}"));
            line.split_whitespace().map(str::to_owned).collect()
        };
        let build = command_after("build it:");
        let test = command_after("test it:");
        assert_eq!(build, [format!("{name}/build.sh")], "{out}");
        assert_eq!(test[..3], ["vigil", "policy", "test"], "{out}");

        let mut build_command = Command::new(dir.path().join(&build[0]));
        build_command.current_dir(dir.path());
        // Rust scaffolds share one target dir across runs: wit-bindgen
        // compiles once, not at every test run.
        build_command.env(
            "CARGO_TARGET_DIR",
            repo_root().join("target/scaffold-build"),
        );
        let built = build_command.output().expect("run the build command");
        assert!(built.status.success(), "{language}: {}", shown(&built));
        assert!(dir.path().join(name).join(format!("{name}.wasm")).is_file());

        let args: Vec<&str> = test[1..].iter().map(String::as_str).collect();
        let run = vigil(&args, dir.path());
        assert_eq!(run.status.code(), Some(0), "{language}: {}", shown(&run));
        let report = String::from_utf8_lossy(&run.stdout);
        assert!(report.contains(" passed, 0 failed"), "{report}");

        let again = vigil(
            &["policy", "new", name, "--role", role, "--lang", language],
            dir.path(),
        );
        assert_eq!(again.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already exists"),
            "{}",
            shown(&again)
        );
    }
    let bad = vigil(
        &[
            "policy", "new", "Bad_Name", "--role", "watchdog", "--lang", "js",
        ],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a valid policy name"),
        "{}",
        shown(&bad)
    );
    assert!(!dir.path().join("Bad_Name").exists());
}

fn connected(id: &str) -> Facts {
    Facts::new(SessionId::new(id).unwrap(), SessionState::Connected)
}

#[test]
fn a_python_policy_that_allocates_past_its_cap_falls_back_like_a_rust_one() {
    let hog = example("python", "hog");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hog.toml");
    let write = |mib: u32| {
        let text = format!(
            "role = \"keepalive\"\nplugin = {:?}\n[limits]\nmemory = \"32MiB\"\n[config]\nallocate_mib = {mib}\n",
            hog.display().to_string()
        );
        let tmp = dir.path().join(".hog.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(1);
    let runtime = runtime_for(&file, Arc::new(FakeClock::new(0)));
    let mut degraded = connected("main");
    degraded.state = SessionState::Degraded;
    let small = runtime.keepalive_blocking(&degraded);
    assert!(
        matches!(small.served_by, ServedBy::Policy(_)),
        "{}",
        small.served_by
    );

    // Switched by config: 64 MiB per call, past the 32 MiB cap.
    write(64);
    let events = runtime.reload_now();
    assert!(
        matches!(events[..], [ReloadEvent::Accepted { .. }]),
        "{events:?}"
    );
    let hit = runtime.keepalive_blocking(&degraded);
    assert!(
        matches!(
            hit.served_by,
            ServedBy::Fallback {
                cause: FallbackCause::MemoryLimit { limit_bytes },
                ..
            } if limit_bytes == 32 << 20
        ),
        "{}",
        hit.served_by
    );
    assert!(hit.value.is_empty(), "the keepalive fallback does nothing");
    // The host is fine, and so is the next call.
    let next = runtime.keepalive_blocking(&connected("main"));
    assert!(
        matches!(next.served_by, ServedBy::Policy(_)),
        "{}",
        next.served_by
    );
    let counters = runtime.metrics();
    let counters = counters.get("hog.wasm", Role::Keepalive).unwrap();
    assert_eq!(
        (counters.memory_limit_hits, counters.fallbacks),
        (1, 1),
        "{counters:?}"
    );
}

#[test]
fn check_explains_which_limit_a_language_needs_raised() {
    let wasm = example("python", "heartbeat");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tight.toml");
    std::fs::write(
        &file,
        format!(
            "role = \"watchdog\"\nplugin = {:?}\n[limits]\nmemory = \"8MiB\"\n",
            wasm.display().to_string()
        ),
    )
    .unwrap();
    let check = vigil(&["policy", "check", file.to_str().unwrap()], repo_root());
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{}", shown(&check));
    assert!(out.contains("memory cap of 8 MiB"), "{out}");
    assert!(
        out.contains("of linear memory at start; the policy's memory limit is 8.0 MiB: set [limits] memory = \""),
        "{out}"
    );

    // With the default limits, check shows the margin.
    std::fs::write(
        &file,
        format!(
            "role = \"watchdog\"\nplugin = {:?}\n",
            wasm.display().to_string()
        ),
    )
    .unwrap();
    let ok = vigil(&["policy", "check", file.to_str().unwrap()], repo_root());
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{}", shown(&ok));
    assert!(out.contains("a fresh instance takes"), "{out}");
    assert!(out.contains("MiB of linear memory ("), "{out}");
}

/// One stream of calls: when each was answered, by whom, how long it took.
struct Answered {
    at: Instant,
    took: Duration,
    served_by: ServedBy,
}

/// Calls `call` every few milliseconds until `stop`, recording each answer.
fn stream(
    stop: Arc<AtomicBool>,
    call: impl Fn() -> (Duration, ServedBy) + Send + 'static,
) -> std::thread::JoinHandle<Vec<Answered>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let (took, served_by) = call();
            seen.push(Answered {
                at: Instant::now(),
                took,
                served_by,
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

/// The longest time without an answer between `from` and `to`.
fn longest_silence(answers: &[Answered], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for a in answers.iter().filter(|a| a.at > from && a.at < to) {
        longest = longest.max(a.at - last);
        last = a.at;
    }
    longest.max(to.saturating_duration_since(last))
}

/// While a 12-18 MB component compiles (seconds), the other policies and
/// the old version of the one being replaced keep answering within their
/// limits, and the status (the admin API and /metrics read it) answers too.
#[test]
fn a_big_component_compiling_keeps_every_other_policy_and_the_old_version_answering() {
    let (old, new) = (example("js", "activity"), example("python", "activity"));
    let heartbeat = plugin("heartbeat");
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path();
    std::fs::write(
        policies.join("heartbeat.toml"),
        format!(
            "role = \"watchdog\"\nplugin = {:?}\n",
            heartbeat.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        policies.join("activity.toml"),
        format!(
            "role = \"keepalive\"\nplugin = {:?}\nsessions = [\"rust-*\"]\n",
            plugin("activity").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        policies.join("big.toml"),
        "role = \"keepalive\"\nplugin = \"big.wasm\"\nsessions = [\"big\"]\n",
    )
    .unwrap();
    std::fs::copy(&old, policies.join("big.wasm")).unwrap();
    // No compile cache: the new component really compiles.
    let runtime = PolicyRuntime::new(RuntimeOptions::new(PolicySource::Directory(
        policies.to_path_buf(),
    )))
    .unwrap();
    assert!(
        runtime.status().rejected.is_empty(),
        "{:?}",
        runtime.status().rejected
    );
    let sha = |d: &ServedBy| match d {
        ServedBy::Policy(p) => p.sha256.clone(),
        other => panic!("not served by a policy: {other}"),
    };
    let old_sha = sha(&runtime.keepalive_blocking(&connected("big")).served_by);

    let tokio = tokio::runtime::Runtime::new().unwrap();
    let _enter = tokio.enter();
    let watcher = runtime.watch().unwrap();
    let mut events = runtime.subscribe();
    std::thread::sleep(Duration::from_millis(300));

    let stop = Arc::new(AtomicBool::new(false));
    let decide = |session: &'static str, role: Role| {
        let runtime = runtime.clone();
        let handle = tokio.handle().clone();
        move || {
            let facts = connected(session);
            // The async API, as the sessions call it.
            handle.block_on(async {
                match role {
                    Role::Watchdog => {
                        let d = runtime.watchdog(&facts).await;
                        (d.took, d.served_by)
                    }
                    _ => {
                        let d = runtime.keepalive(&facts).await;
                        (d.took, d.served_by)
                    }
                }
            })
        }
    };
    let streams = [
        (
            "heartbeat (rust)",
            stream(stop.clone(), decide("main", Role::Watchdog)),
        ),
        (
            "activity (rust)",
            stream(stop.clone(), decide("rust-1", Role::Keepalive)),
        ),
        (
            "big, old version",
            stream(stop.clone(), decide("big", Role::Keepalive)),
        ),
    ];
    let status = {
        let (runtime, stop) = (runtime.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let _ = runtime.status();
                let _ = runtime.metrics();
                seen.push(Answered {
                    at: Instant::now(),
                    took: started.elapsed(),
                    served_by: ServedBy::BuiltIn,
                });
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let changed = Instant::now();
    let tmp = policies.join(".big.wasm.tmp");
    std::fs::copy(&new, &tmp).unwrap();
    std::fs::rename(&tmp, policies.join("big.wasm")).unwrap();
    let accepted = tokio.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                match events.recv().await.unwrap() {
                    ReloadEvent::Accepted {
                        file,
                        compiled_from,
                        ..
                    } if file.ends_with("big.toml") => break compiled_from,
                    ReloadEvent::Rejected { reason, .. } => panic!("refused: {reason}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the new version is accepted")
    });
    let swapped = Instant::now();
    assert_eq!(accepted, CompileSource::Compiled);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let new_sha = sha(&runtime.keepalive_blocking(&connected("big")).served_by);
    assert_ne!(new_sha, old_sha);

    let reload = swapped - changed;
    println!("the swap took {} ms (compile included)", reload.as_millis());
    for (name, handle) in streams {
        let answers = handle.join().unwrap();
        let during: Vec<&Answered> = answers
            .iter()
            .filter(|a| a.at > changed && a.at < swapped)
            .collect();
        let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
        let silence = longest_silence(&answers, changed, swapped);
        println!(
            "{name}: {} answers during the swap, slowest call {} ms, longest silence {} ms",
            during.len(),
            slowest.as_millis(),
            silence.as_millis()
        );
        for a in &answers {
            assert!(!a.served_by.is_fallback(), "{name}: {}", a.served_by);
        }
        assert!(during.len() >= 10, "{name}: {} answers", during.len());
        // Compared with the swap itself, so a slow machine does not fail
        // it: a call blocked by the compile would be silent for most of it.
        assert!(
            silence < reload / 4,
            "{name}: silent for {silence:?} of {reload:?}"
        );
        if name.starts_with("big") {
            assert!(
                during
                    .iter()
                    .filter(|a| a.at + Duration::from_millis(100) < swapped)
                    .all(|a| sha(&a.served_by) == old_sha),
                "the old version serves until the swap"
            );
        }
    }
    let status = status.join().unwrap();
    let slowest_status = status.iter().map(|a| a.took).max().unwrap_or_default();
    println!("status: slowest {} ms", slowest_status.as_millis());
    assert!(
        longest_silence(&status, changed, swapped) < reload / 4,
        "status was blocked during the compile"
    );
    for plugin in runtime.metrics().plugins {
        let c = &plugin.counters;
        assert_eq!(
            (c.timeouts, c.fallbacks),
            (0, 0),
            "{} {}: {c:?}",
            plugin.plugin,
            plugin.role
        );
    }
    tokio.block_on(watcher.stop());
}
