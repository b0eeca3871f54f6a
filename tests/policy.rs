//! The policy runtime with real wasm components built from `plugins/` and
//! `tests/plugins/`, run by wasmtime: scenarios, limits, fallbacks,
//! permissions, memory, and hot reload.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::plugins::{compile_cache, plugin, repo_root, test_plugin};
use vigil::id::SessionId;
use vigil::policy::scenario::{self, Scenario, StepInput};
use vigil::policy::{
    Action, CompileSource, Facts, FakeClock, FallbackCause, PolicyRuntime, PolicySource,
    ReloadEvent, Role, RuntimeOptions, ServedBy, SessionState,
};

/// A policy folder of its own for one test.
struct Policies {
    dir: tempfile::TempDir,
}

impl Policies {
    fn new() -> Self {
        Policies {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` atomically (like an editor that saves by rename).
    fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write temp");
        std::fs::rename(&tmp, self.path(name)).expect("rename into place");
    }

    /// Copies a built plugin into the folder, atomically.
    fn install_plugin(&self, from: &Path, name: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::copy(from, &tmp).expect("copy plugin");
        std::fs::rename(&tmp, self.path(name)).expect("rename plugin into place");
    }

    fn keepalive(&self, name: &str, plugin: &str, extra: &str) {
        self.write(
            name,
            &format!("role = \"keepalive\"\nplugin = \"{plugin}\"\n{extra}\n"),
        );
    }

    fn runtime(&self) -> PolicyRuntime {
        PolicyRuntime::new(
            RuntimeOptions::new(PolicySource::Directory(self.dir.path().to_path_buf()))
                .cache_dir(compile_cache()),
        )
        .expect("runtime starts")
    }
}

fn session(id: &str) -> SessionId {
    SessionId::new(id).expect("valid session id")
}

fn connected(id: &str) -> Facts {
    Facts::new(session(id), SessionState::Connected)
}

fn key_presses(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::KeyPress { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

fn runtime_for_file(file: &Path, clock: Arc<FakeClock>) -> PolicyRuntime {
    PolicyRuntime::new(
        RuntimeOptions::new(PolicySource::File(file.to_path_buf()))
            .cache_dir(compile_cache())
            .clock(clock),
    )
    .expect("runtime starts")
}

#[test]
fn default_plugins_pass_their_shipped_scenarios() {
    plugin("activity");
    for name in ["activity", "heartbeat", "restore"] {
        let scenario =
            Scenario::load(&repo_root().join(format!("policies/scenarios/{name}.toml"))).unwrap();
        let clock = Arc::new(FakeClock::new(scenario.start_ms));
        let runtime = runtime_for_file(
            &repo_root().join(format!("policies/{name}.toml")),
            clock.clone(),
        );
        assert!(
            runtime.status().rejected.is_empty(),
            "{:?}",
            runtime.status().rejected
        );
        let report = scenario::run(&runtime, &clock, &scenario).unwrap();
        assert!(report.passed, "{}", report.render());
        assert!(report.steps.len() >= 4);
    }
}

#[test]
fn built_in_defaults_decide_like_the_default_plugins() {
    plugin("activity");
    let empty = tempfile::tempdir().unwrap();
    for name in ["activity", "heartbeat", "restore"] {
        let scenario =
            Scenario::load(&repo_root().join(format!("policies/scenarios/{name}.toml"))).unwrap();
        let clock = Arc::new(FakeClock::new(scenario.start_ms));
        let wasm = runtime_for_file(
            &repo_root().join(format!("policies/{name}.toml")),
            clock.clone(),
        );
        let native = PolicyRuntime::new(
            RuntimeOptions::new(PolicySource::Directory(empty.path().to_path_buf()))
                .clock(clock.clone()),
        )
        .unwrap();
        for (i, step) in scenario.steps.iter().enumerate() {
            clock.set_ms(scenario.start_ms + step.at.as_millis() as u64);
            let (a, b) = match &step.input {
                StepInput::Facts(f) if scenario.role == Role::Keepalive => {
                    let n = native.keepalive_blocking(f);
                    assert_eq!(n.served_by, ServedBy::BuiltIn);
                    (
                        format!("{:?}", wasm.keepalive_blocking(f).value),
                        format!("{:?}", n.value),
                    )
                }
                StepInput::Facts(f) => (
                    format!("{:?}", wasm.watchdog_blocking(f).value),
                    format!("{:?}", native.watchdog_blocking(f).value),
                ),
                StepInput::Restore { inventory, backups } => (
                    format!(
                        "{:?}",
                        wasm.restore_blocking(&scenario.session, inventory, backups)
                            .value
                    ),
                    format!(
                        "{:?}",
                        native
                            .restore_blocking(&scenario.session, inventory, backups)
                            .value
                    ),
                ),
            };
            assert_eq!(a, b, "{name} step {}", i + 1);
        }
    }
}

#[test]
fn a_plugin_that_loops_forever_is_stopped_within_its_bound_and_the_fallback_answers() {
    let p = Policies::new();
    p.keepalive(
        "spin.toml",
        &test_plugin("misbehave").display().to_string(),
        "[limits]\ntimeout = \"50ms\"\n[config]\nmode = \"spin\"",
    );
    let runtime = p.runtime();
    assert!(
        runtime.status().rejected.is_empty(),
        "{:?}",
        runtime.status().rejected
    );

    let started = Instant::now();
    let decision = runtime.keepalive_blocking(&connected("bad-spinner"));
    let elapsed = started.elapsed();

    assert!(
        decision.value.is_empty(),
        "keepalive fallback is to do nothing"
    );
    assert!(
        matches!(
            decision.served_by,
            ServedBy::Fallback {
                cause: FallbackCause::Timeout { .. },
                ..
            }
        ),
        "{:?}",
        decision.served_by
    );
    assert!(
        elapsed >= Duration::from_millis(50),
        "stopped before its bound: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "not stopped: {elapsed:?}");
    let counters = runtime.metrics();
    let c = counters.get("misbehave.wasm", Role::Keepalive).unwrap();
    assert_eq!((c.timeouts, c.fallbacks), (1, 1));

    // The host is fine: the next (well-behaved) call is served by the plugin.
    let next = runtime.keepalive_blocking(&connected("main"));
    assert!(matches!(next.served_by, ServedBy::Policy(_)));
}

#[test]
fn a_plugin_that_allocates_past_its_cap_is_stopped() {
    let p = Policies::new();
    p.keepalive(
        "hog.toml",
        &test_plugin("misbehave").display().to_string(),
        "[limits]\nmemory = \"16MiB\"\ntimeout = \"5s\"\n[config]\nmode = \"hog\"",
    );
    let runtime = p.runtime();
    let decision = runtime.keepalive_blocking(&connected("bad-hog"));
    assert!(
        matches!(
            decision.served_by,
            ServedBy::Fallback {
                cause: FallbackCause::MemoryLimit {
                    limit_bytes: 16_777_216
                },
                ..
            }
        ),
        "{:?}",
        decision.served_by
    );
    let counters = runtime.metrics();
    let c = counters.get("misbehave.wasm", Role::Keepalive).unwrap();
    assert_eq!((c.memory_limit_hits, c.fallbacks), (1, 1));
}

#[test]
fn a_panic_and_a_garbage_answer_fall_back_and_are_counted() {
    let p = Policies::new();
    let wasm = test_plugin("misbehave").display().to_string();
    p.keepalive(
        "panic.toml",
        &wasm,
        "sessions = [\"bad-panic\"]\n[config]\nmode = \"panic\"",
    );
    p.keepalive(
        "garbage.toml",
        &wasm,
        "sessions = [\"bad-garbage\"]\n[config]\nmode = \"garbage\"",
    );
    let runtime = p.runtime();

    let panicked = runtime.keepalive_blocking(&connected("bad-panic"));
    assert!(
        matches!(&panicked.served_by, ServedBy::Fallback { cause: FallbackCause::Trap { .. }, policy } if policy.file.ends_with("panic.toml")),
        "{:?}",
        panicked.served_by
    );
    let garbage = runtime.keepalive_blocking(&connected("bad-garbage"));
    assert!(
        matches!(&garbage.served_by, ServedBy::Fallback { cause: FallbackCause::InvalidAnswer { reason }, .. } if reason.contains("key-press")),
        "{:?}",
        garbage.served_by
    );
    let counters = runtime.metrics();
    let c = counters.get("misbehave.wasm", Role::Keepalive).unwrap();
    assert_eq!((c.traps, c.invalid_answers, c.fallbacks), (1, 1, 2));
}

/// What an operator reads in the log, the status and the webhooks when a
/// plugin fails: what happened, in a few words, never the whole of what
/// a policy chose to answer.
#[test]
fn a_failed_call_says_what_happened_and_quotes_a_huge_answer_in_200_characters() {
    let p = Policies::new();
    let wasm = test_plugin("misbehave").display().to_string();
    for mode in ["panic", "recurse", "hog", "long-key"] {
        p.keepalive(
            &format!("{mode}.toml"),
            &wasm,
            &format!(
                "sessions = [\"bad-{mode}\"]\n[limits]\ntimeout = \"5s\"\nmemory = \"16MiB\"\n[config]\nmode = \"{mode}\""
            ),
        );
    }
    let runtime = p.runtime();
    let cause = |session: &str| match runtime.keepalive_blocking(&connected(session)).served_by {
        ServedBy::Fallback { cause, .. } => cause,
        other => panic!("{session}: the plugin answered: {other:?}"),
    };

    let FallbackCause::Trap { message } = cause("bad-panic") else {
        panic!("a panic is a trap")
    };
    assert!(
        message.starts_with("panicked at ") && message.ends_with("misbehave was asked to panic"),
        "{message}"
    );
    assert!(!message.contains("backtrace"), "{message}");

    assert_eq!(
        cause("bad-recurse"),
        FallbackCause::Trap {
            message: "stack overflow".into()
        }
    );

    let hog = cause("bad-hog");
    assert_eq!(hog.to_string(), "memory cap of 16 MiB");

    let long = cause("bad-long-key");
    let FallbackCause::InvalidAnswer { reason } = &long else {
        panic!("an 8 MiB key name is an invalid answer: {long:?}")
    };
    assert!(reason.len() < 300, "{} bytes: {reason:.400}", reason.len());
    assert!(reason.ends_with("(8388608 bytes in all)"), "{reason}");
    // The status and the webhooks show the served-by text: short too.
    let shown = ServedBy::Fallback {
        policy: runtime
            .binding(&session("bad-long-key"), Role::Keepalive)
            .policy
            .unwrap(),
        cause: long.clone(),
    }
    .to_string();
    assert!(shown.len() < 500, "{} bytes", shown.len());

    let c = runtime.metrics();
    let c = c.get("misbehave.wasm", Role::Keepalive).unwrap();
    assert_eq!(
        (c.traps, c.memory_limit_hits, c.invalid_answers, c.fallbacks),
        (2, 1, 1, 4)
    );
}

#[test]
fn random_bytes_as_a_plugin_are_refused_with_a_clear_error_and_the_host_keeps_going() {
    let p = Policies::new();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(p.path("noise.wasm"), noise).unwrap();
    p.keepalive("noise.toml", "noise.wasm", "");
    let runtime = p.runtime();

    let status = runtime.status();
    assert_eq!(status.rejected.len(), 1);
    let reason = &status.rejected[0].reason;
    assert!(
        reason.contains("noise.toml") && reason.contains("noise.wasm"),
        "{reason}"
    );
    assert!(
        reason.contains("not a valid WebAssembly component"),
        "{reason}"
    );
    let decision = runtime.keepalive_blocking(&connected("main"));
    assert_eq!(decision.served_by, ServedBy::BuiltIn);
    assert!(!decision.value.is_empty(), "the built-in keepalive acts");
}

#[test]
fn a_plugin_for_another_role_or_failing_its_self_check_is_refused_at_load() {
    let p = Policies::new();
    p.write(
        "wrong.toml",
        &format!(
            "role = \"watchdog\"\nplugin = \"{}\"\n",
            plugin("activity").display()
        ),
    );
    p.keepalive(
        "always-panics.toml",
        &test_plugin("misbehave").display().to_string(),
        "[config]\nmode = \"panic\"\nalways = true",
    );
    let runtime = p.runtime();
    let status = runtime.status();
    let reason = |file: &str| {
        status
            .rejected
            .iter()
            .find(|r| r.file.ends_with(file))
            .map(|r| r.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("wrong.toml").contains("does not fit the watchdog world"),
        "{}",
        reason("wrong.toml")
    );
    assert!(
        reason("always-panics.toml").contains("self-check"),
        "{}",
        reason("always-panics.toml")
    );
    assert!(status.policies.is_empty());
}

#[test]
fn a_broken_policy_file_at_start_is_reported_with_its_line_and_the_others_serve() {
    let p = Policies::new();
    p.keepalive("good.toml", &plugin("activity").display().to_string(), "");
    p.write("broken.toml", "role = \"watchdog\"\nplugin = 42\n");
    let runtime = p.runtime();
    let status = runtime.status();
    assert_eq!(status.policies.len(), 1);
    assert!(
        status.rejected[0]
            .reason
            .ends_with("broken.toml:2:10: invalid type: integer `42`, expected a string"),
        "{}",
        status.rejected[0].reason
    );
    assert!(matches!(
        runtime.keepalive_blocking(&connected("main")).served_by,
        ServedBy::Policy(_)
    ));
    assert_eq!(
        runtime.watchdog_blocking(&connected("main")).served_by,
        ServedBy::BuiltIn
    );
}

#[test]
fn run_script_reaches_the_caller_only_with_the_grant_and_refusals_are_counted() {
    let p = Policies::new();
    let wasm = test_plugin("misbehave").display().to_string();
    p.keepalive(
        "no-grant.toml",
        &wasm,
        "sessions = [\"bad-1\"]\n[config]\nmode = \"script\"",
    );
    p.keepalive(
        "granted.toml",
        &wasm,
        "sessions = [\"bad-2\"]\n[permissions]\nrun_script = true\n[config]\nmode = \"script\"",
    );
    let runtime = p.runtime();

    let refused = runtime.keepalive_blocking(&connected("bad-1"));
    assert_eq!(refused.value, vec![Action::Focus]);
    assert!(matches!(refused.refused[..], [Action::RunScript { .. }]));
    assert!(
        matches!(refused.served_by, ServedBy::Policy(_)),
        "a refusal is not a failure"
    );
    let granted = runtime.keepalive_blocking(&connected("bad-2"));
    assert!(matches!(granted.value[0], Action::RunScript { .. }));
    assert_eq!(
        runtime
            .metrics()
            .get("misbehave.wasm", Role::Keepalive)
            .unwrap()
            .refused_actions,
        1
    );
    assert!(
        !runtime
            .binding(&session("bad-1"), Role::Keepalive)
            .permissions
            .run_script
    );
    assert!(
        runtime
            .binding(&session("bad-2"), Role::Keepalive)
            .permissions
            .run_script
    );
}

#[test]
fn a_policy_sees_its_config_and_keeps_its_memory_across_calls_and_a_reload() {
    let p = Policies::new();
    let wasm = test_plugin("misbehave").display().to_string();
    p.keepalive("echo.toml", &wasm, "[config]\nlabel = \"one\"");
    let runtime = p.runtime();
    let ask = |id: &str| key_presses(&runtime.keepalive_blocking(&connected(id)).value);
    assert_eq!(ask("main"), ["one#1"]);
    assert_eq!(ask("main"), ["one#2"]);
    assert_eq!(ask("other"), ["one#1"], "memory is per session");

    p.keepalive("echo.toml", &wasm, "[config]\nlabel = \"two\"");
    let events = runtime.reload_now();
    assert!(
        matches!(&events[..], [ReloadEvent::Accepted { .. }]),
        "{events:?}"
    );
    assert_eq!(ask("main"), ["two#3"]);

    // A call that traps leaves the memory as it was: the count the
    // panicking call wrote is dropped.
    p.keepalive(
        "echo.toml",
        &wasm,
        "[config]\nlabel = \"two\"\nmode = \"panic\"",
    );
    runtime.reload_now();
    assert!(
        runtime
            .keepalive_blocking(&connected("bad-x"))
            .served_by
            .is_fallback()
    );
    p.keepalive("echo.toml", &wasm, "[config]\nlabel = \"two\"");
    runtime.reload_now();
    assert_eq!(ask("bad-x"), ["two#1"]);
    assert_eq!(ask("main"), ["two#4"]);

    // The status keeps each reload that changed something, newest first:
    // the first load and the three edits.
    let status = runtime.status();
    let history = &status.reload_history;
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(Some(&history[0]), status.last_reload.as_ref());
    assert!(
        history.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
        "{history:?}"
    );
}

#[test]
fn overlapping_policies_resolve_by_priority_then_file_name() {
    let p = Policies::new();
    let wasm = test_plugin("misbehave").display().to_string();
    p.keepalive("b-all.toml", &wasm, "[config]\nlabel = \"b\"");
    p.keepalive("a-all.toml", &wasm, "[config]\nlabel = \"a\"");
    p.keepalive(
        "z-vip.toml",
        &wasm,
        "sessions = [\"vip-*\"]\npriority = 10\n[config]\nlabel = \"z\"",
    );
    let runtime = p.runtime();
    let bound = |id: &str| {
        runtime
            .binding(&session(id), Role::Keepalive)
            .policy
            .map(|p| p.file.file_name().unwrap().to_string_lossy().into_owned())
    };
    assert_eq!(bound("main").as_deref(), Some("a-all.toml"));
    assert_eq!(bound("vip-1").as_deref(), Some("z-vip.toml"));
    assert_eq!(
        key_presses(&runtime.keepalive_blocking(&connected("vip-1")).value),
        ["z#1"]
    );
    assert_eq!(
        runtime.binding(&session("main"), Role::Watchdog).policy,
        None
    );
}

#[test]
fn the_compile_cache_serves_a_second_start() {
    let p = Policies::new();
    p.keepalive(
        "activity.toml",
        &plugin("activity").display().to_string(),
        "",
    );
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        PolicyRuntime::new(
            RuntimeOptions::new(PolicySource::Directory(p.dir.path().to_path_buf()))
                .cache_dir(cache.path()),
        )
        .unwrap()
    };
    let first = start().status().last_reload.unwrap().events;
    let second = start().status().last_reload.unwrap().events;
    assert!(matches!(
        first[0],
        ReloadEvent::Accepted {
            compiled_from: CompileSource::Compiled,
            ..
        }
    ));
    assert!(matches!(
        second[0],
        ReloadEvent::Accepted {
            compiled_from: CompileSource::Cache,
            ..
        }
    ));
    let entries = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(entries, 1, "one artifact, no temp files left");
}

/// Polls `check` every 20 ms for up to `limit`.
async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Compiles plugins into the shared compile cache, so that a timed reload
/// measures the reload and not a debug build of Cranelift compiling.
fn warm_compile_cache(plugins: &[PathBuf]) {
    let p = Policies::new();
    for (i, wasm) in plugins.iter().enumerate() {
        p.keepalive(&format!("warm-{i}.toml"), &wasm.display().to_string(), "");
    }
    assert!(p.runtime().status().rejected.is_empty());
}

/// Long enough for a reload (compile from cache, footprint, self-check)
/// on a loaded 2-core CI machine while the other tests in this binary run.
const RELOAD_BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_runtime_picks_up_a_changed_plugin_and_refuses_a_broken_one() {
    warm_compile_cache(&[plugin("activity"), test_plugin("misbehave")]);
    let p = Policies::new();
    p.install_plugin(&plugin("activity"), "plugin.wasm");
    p.keepalive("keep.toml", "plugin.wasm", "[config]\nlabel = \"new\"");
    let runtime = p.runtime();
    let watcher = runtime.watch().unwrap();
    let mut events = runtime.subscribe();
    let first = runtime.keepalive(&connected("main")).await;
    assert!(
        matches!(first.value[0], Action::MouseMove { .. }),
        "{first:?}"
    );
    let ServedBy::Policy(old) = first.served_by else {
        panic!("{:?}", first.served_by)
    };

    // A changed plugin: serving soon, with no call to reload. (How soon
    // is a benchmark's business; the bound only keeps a hang from passing.)
    p.install_plugin(&test_plugin("misbehave"), "plugin.wasm");
    let mut latest = Vec::new();
    let swapped = within(RELOAD_BOUND, || {
        latest = runtime.keepalive_blocking(&connected("main")).value;
        key_presses(&latest).iter().any(|k| k.starts_with("new#"))
    })
    .await;
    assert!(swapped, "still answering {latest:?}");
    let accepted = events.recv().await.unwrap();
    assert!(
        matches!(accepted, ReloadEvent::Accepted { ref file, .. } if file.ends_with("keep.toml")),
        "{accepted:?}"
    );

    // A broken replacement: refused, the previous version keeps serving,
    // and the status says which file and why.
    let serving = runtime
        .binding(&session("main"), Role::Keepalive)
        .policy
        .unwrap();
    assert_ne!(serving.sha256, old.sha256);
    std::fs::write(p.path("plugin.wasm"), b"\0asm broken on purpose").unwrap();
    let rejected = tokio::time::timeout(RELOAD_BOUND, events.recv())
        .await
        .unwrap()
        .unwrap();
    match &rejected {
        ReloadEvent::Rejected {
            file,
            reason,
            still_serving,
        } => {
            assert!(file.ends_with("keep.toml"));
            assert!(reason.contains("plugin.wasm"), "{reason}");
            assert_eq!(still_serving.as_deref(), Some(serving.sha256.as_str()));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let during = runtime.keepalive(&connected("main")).await;
    assert_eq!(during.served_by, ServedBy::Policy(serving.clone()));
    assert!(
        runtime.status().rejected[0]
            .reason
            .contains("not a valid WebAssembly component")
    );

    // Fixed again: the rejection clears.
    p.install_plugin(&plugin("activity"), "plugin.wasm");
    assert!(within(RELOAD_BOUND, || runtime.status().rejected.is_empty()).await);

    // Deleting the policy file reverts its sessions to the built-in defaults.
    std::fs::remove_file(p.path("keep.toml")).unwrap();
    assert!(
        within(RELOAD_BOUND, || runtime
            .binding(&session("main"), Role::Keepalive)
            .policy
            .is_none())
        .await
    );
    assert_eq!(
        runtime.keepalive(&connected("main")).await.served_by,
        ServedBy::BuiltIn
    );
    watcher.stop().await;
}
