//! The decision journal: what a line holds, its size cap and rotation,
//! replaying it against the policy that made it and against a changed
//! one, and a slice of it as a scenario. Real plugins, a fake clock, no
//! browser.

mod common;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::journal::{START_MS, activity_policy, heartbeat_policy, record_outage};
use common::plugins::{compile_cache, plugin};
use serde_json::Value;
use sha2::{Digest, Sha256};
use vigil::id::SessionId;
use vigil::journal::{self, Journal, JournalConfig, ReplayOptions, Since, Slice};
use vigil::policy::scenario::{self, Scenario};
use vigil::policy::{
    Facts, FakeClock, PolicyRuntime, PolicySource, Role, RuntimeOptions, SessionState,
};

fn runtime_for(file: &Path) -> PolicyRuntime {
    runtime_on(file, Arc::new(FakeClock::new(START_MS)))
}

/// A runtime for one policy file, on `clock`.
fn runtime_on(file: &Path, clock: Arc<FakeClock>) -> PolicyRuntime {
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

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read the journal")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_call_is_one_line_with_what_it_saw_what_it_answered_and_who_answered() {
    let policies = tempfile::tempdir().unwrap();
    let watchdog = heartbeat_policy(policies.path(), "watchdog.toml", 20_000);
    activity_policy(policies.path());
    let out = tempfile::tempdir().unwrap();
    let file = record_outage(policies.path(), out.path());
    let all = lines(&file);
    assert_eq!(all.len(), 10, "a watchdog and a keepalive call, 5 times");

    // The first failed probe: the watchdog reloads and starts its outage
    // in its memory.
    let reload = &all[2];
    assert_eq!(reload["role"], "watchdog");
    assert_eq!(reload["session"], "main");
    assert_eq!(reload["at"], "2026-01-01T00:00:10.000Z");
    assert_eq!(reload["clock_ms"], START_MS + 10_000);
    assert_eq!(reload["input"]["state"], "degraded");
    assert_eq!(reload["input"]["consecutive_probe_failures"], 1);
    assert_eq!(reload["config"]["restart_after_ms"], 20_000);
    assert_eq!(reload["memory_before"], serde_json::json!({}));
    let since = (START_MS + 10_000).to_le_bytes();
    let encoded = base64_of(&since);
    assert_eq!(reload["memory_after"]["outage-since-ms"], encoded);
    assert_eq!(reload["memory_after"]["last-reload-ms"], encoded);
    assert_eq!(reload["answer"]["kind"], "reload-page");
    assert_eq!(reload["served_by"]["kind"], "policy");
    assert_eq!(reload["served_by"]["file"], watchdog.display().to_string());
    let wasm = std::fs::read(plugin("heartbeat")).unwrap();
    assert_eq!(reload["plugin_sha256"], sha256_hex(&wasm));
    let text = std::fs::read(&watchdog).unwrap();
    assert_eq!(reload["file_sha256"], sha256_hex(&text));
    assert!(reload["took_us"].is_u64());

    // A call that left the memory as it was records no memory_after.
    let waiting = &all[4];
    assert_eq!(waiting["answer"]["kind"], "degraded");
    assert_eq!(waiting["memory_before"], reload["memory_after"]);
    assert!(waiting.get("memory_after").is_none(), "{waiting}");

    // The keepalive's answer, with the point its config asked for.
    let keepalive = &all[1];
    assert_eq!(keepalive["role"], "keepalive");
    assert_eq!(
        keepalive["answer"][0],
        serde_json::json!({ "kind": "mouse-move", "x": 321, "y": 123 })
    );
    assert_eq!(keepalive["config"]["mouse_x"], 321);
}

fn base64_of(bytes: &[u8]) -> String {
    // The journal's own encoding, read back through its memory type.
    let mut memory = vigil::policy::memory::KvMemory::default();
    memory.set("k", bytes.to_vec()).unwrap();
    serde_json::to_value(&memory).unwrap()["k"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn replaying_against_the_same_policy_finds_nothing_and_a_changed_config_exactly_what_it_changes() {
    let policies = tempfile::tempdir().unwrap();
    heartbeat_policy(policies.path(), "watchdog.toml", 20_000);
    activity_policy(policies.path());
    let out = tempfile::tempdir().unwrap();
    let file = record_outage(policies.path(), out.path());
    let text = std::fs::read_to_string(&file).unwrap();
    let journals = [(file.clone(), text)];

    let same = journal::replay(
        &runtime_for(&policies.path().join("watchdog.toml")),
        &journals,
        ReplayOptions::default(),
    )
    .unwrap();
    assert_eq!(same.role, Role::Watchdog);
    assert_eq!(same.replayed, 5);
    assert_eq!(same.other_roles, 5, "the keepalive calls are not replayed");
    assert!(same.differences.is_empty(), "{}", same.render());
    assert!(same.config_changes.is_empty());

    // The first restart 5 s after the reload instead of 20 s: only the
    // call at 20 s decides otherwise (each call replays with the memory it
    // recorded, so the later ones are judged as they were).
    let other = tempfile::tempdir().unwrap();
    let quicker = heartbeat_policy(other.path(), "quicker.toml", 5_000);
    let changed =
        journal::replay(&runtime_for(&quicker), &journals, ReplayOptions::default()).unwrap();
    assert_eq!(changed.replayed, 5);
    assert_eq!(
        changed.config_changes,
        vec!["restart_after_ms: 20000 -> 5000".to_string()]
    );
    let [difference] = &changed.differences[..] else {
        panic!("{}", changed.render())
    };
    assert_eq!(difference.at, "2026-01-01T00:00:20.000Z");
    assert_eq!(difference.line, 5);
    assert_eq!(difference.recorded["kind"], "degraded");
    assert_eq!(difference.replayed["kind"], "restart-browser");
    assert_eq!(
        difference.replayed_text,
        "restart-browser (not connected for 10 s: restart 1 (the next in 30 s if needed): timeout)"
    );
    let shown = changed.render();
    assert!(
        shown.contains(
            "  - recorded: degraded (not connected for 10 s; next restart in 10 s: timeout)"
        ),
        "{shown}"
    );
    assert!(shown.contains(": 1 differ"), "{shown}");

    // With the recorded config, the same plugin decides as recorded.
    let recorded = journal::replay(
        &runtime_for(&quicker),
        &journals,
        ReplayOptions {
            recorded_config: true,
        },
    )
    .unwrap();
    assert!(recorded.differences.is_empty(), "{}", recorded.render());
}

#[test]
fn a_slice_of_a_journal_becomes_a_scenario_the_policy_passes() {
    let policies = tempfile::tempdir().unwrap();
    let watchdog = heartbeat_policy(policies.path(), "watchdog.toml", 20_000);
    activity_policy(policies.path());
    let out = tempfile::tempdir().unwrap();
    let file = record_outage(policies.path(), out.path());
    let journals = [(file.clone(), std::fs::read_to_string(&file).unwrap())];

    assert!(
        journal::to_scenario(&journals, &Slice::default())
            .unwrap_err()
            .to_string()
            .contains("keepalive, watchdog calls: pick one role with --role")
    );
    // From 20 s on: the outage is under way, so the scenario starts with
    // the memory the watchdog had then.
    let text = journal::to_scenario(
        &journals,
        &Slice {
            role: Some(Role::Watchdog),
            from_ms: Some(START_MS + 20_000),
            ..Slice::default()
        },
    )
    .unwrap();
    assert!(text.contains("[memory]"), "{text}");
    assert_eq!(text.matches("[[step]]").count(), 3, "{text}");
    let scenario = Scenario::parse(&out.path().join("slice.toml"), &text).unwrap();
    assert_eq!(scenario.role, Role::Watchdog);
    assert_eq!(scenario.start_ms, START_MS + 20_000);
    let clock = Arc::new(FakeClock::new(scenario.start_ms));
    let runtime = runtime_on(&watchdog, clock.clone());
    let report = scenario::run(&runtime, &clock, &scenario).unwrap();
    assert!(report.passed, "{}\n{text}", report.render());
    assert_eq!(
        report
            .steps
            .iter()
            .map(|s| s.actual.join(","))
            .collect::<Vec<_>>()[1],
        "restart-browser (not connected for 20 s: restart 1 (the next in 30 s if needed): timeout)"
    );

    // Against the quicker policy the first step already decides otherwise
    // (and, its memory going its own way, the later ones follow).
    let other = tempfile::tempdir().unwrap();
    let quicker = heartbeat_policy(other.path(), "quicker.toml", 5_000);
    let runtime = runtime_on(&quicker, clock.clone());
    let report = scenario::run(&runtime, &clock, &scenario).unwrap();
    assert!(!report.passed);
    assert!(
        report.steps[0].actual[0].starts_with("restart-browser"),
        "{}",
        report.render()
    );
}

#[test]
fn a_journal_keeps_its_newest_lines_within_its_cap_across_rotated_files() {
    let empty = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(START_MS));
    // No policy file: the built-in defaults answer, journaled the same way.
    let runtime = PolicyRuntime::new(
        RuntimeOptions::new(PolicySource::Directory(empty.path().to_path_buf()))
            .clock(clock.clone()),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_bytes: 64 << 10,
        files: NonZeroU32::new(2).unwrap(),
        ..JournalConfig::default()
    };
    let journal = Journal::open(dir.path(), &config).unwrap();
    let session = SessionId::new("main").unwrap();
    let calls = 400;
    for i in 0..calls {
        clock.set_ms(START_MS + i * 1000);
        let facts = Facts::new(session.clone(), SessionState::Connected);
        let decision = runtime.keepalive_blocking(&facts);
        journal.record(&session, Role::Keepalive, &facts, &decision);
    }
    journal.close();
    assert_eq!(journal.stats().written, calls);
    assert_eq!(journal.stats().dropped, 0);

    let current = journal::path(dir.path(), &session);
    let older = dir.path().join("main.jsonl.1");
    let sizes: Vec<u64> = [&current, &older]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(sizes.iter().all(|s| *s <= 32 << 10), "{sizes:?}");
    assert!(!dir.path().join("main.jsonl.2").exists());

    let read = journal.lines(&session, Since::Start).unwrap();
    let clocks: Vec<u64> = read
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["clock_ms"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(clocks.windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert_eq!(*clocks.last().unwrap(), START_MS + (calls - 1) * 1000);
    assert!(clocks[0] > START_MS, "the oldest lines went first");
    assert!(
        read.len() < calls as usize && read.len() > 40,
        "{}",
        read.len()
    );

    // From a point in time on.
    let from = UNIX_EPOCH + Duration::from_millis(START_MS + (calls - 10) * 1000);
    let recent = journal.lines(&session, Since::At(from)).unwrap();
    assert_eq!(recent.len(), 10);
    assert!(
        journal
            .lines(&session, Since::At(SystemTime::now()))
            .unwrap()
            .is_empty()
    );
}
