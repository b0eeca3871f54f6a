//! A decision journal made the way a running host makes one, without a
//! browser: a policy runtime on a fake clock answers a session's calls
//! through an outage, and each decision is journaled as the session
//! runner journals it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vigil::id::SessionId;
use vigil::journal::{Journal, JournalConfig};
use vigil::policy::{
    Facts, FakeClock, PolicyRuntime, PolicySource, Role, RuntimeOptions, SessionState,
};

use super::plugins::{compile_cache, plugin};

/// 2026-01-01T00:00:00Z.
pub const START_MS: u64 = 1_767_225_600_000;

/// A heartbeat watchdog policy file in `dir` with this `restart_after_ms`
/// (the shipped settings otherwise).
pub fn heartbeat_policy(dir: &Path, name: &str, restart_after_ms: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "role = \"watchdog\"\nplugin = {:?}\ninterval = \"15s\"\n[config]\nrestart_after_ms = {restart_after_ms}\nbackoff_ms = 30000\nreload_every_ms = 60000\n",
            plugin("heartbeat").display().to_string()
        ),
    )
    .expect("write the policy file");
    path
}

/// The activity keepalive policy file in `dir`.
pub fn activity_policy(dir: &Path) -> PathBuf {
    let path = dir.join("activity.toml");
    std::fs::write(
        &path,
        format!(
            "role = \"keepalive\"\nplugin = {:?}\ninterval = \"10s\"\n[config]\nmouse_x = 321\nmouse_y = 123\n",
            plugin("activity").display().to_string()
        ),
    )
    .expect("write the policy file");
    path
}

/// The outage the journal records: (seconds from the start, state,
/// failed probes in a row). Connected, then a drop at 10 s that lasts.
pub const OUTAGE: [(u64, SessionState, u32); 5] = [
    (0, SessionState::Connected, 0),
    (10, SessionState::Degraded, 1),
    (20, SessionState::Degraded, 2),
    (30, SessionState::Degraded, 3),
    (40, SessionState::Degraded, 4),
];

/// Runs session `main` through [`OUTAGE`] with the policies in `dir` (a
/// watchdog and a keepalive call at each moment), journaling every
/// decision into `journal_dir`; returns the journal file.
pub fn record_outage(dir: &Path, journal_dir: &Path) -> PathBuf {
    let clock = Arc::new(FakeClock::new(START_MS));
    let runtime = PolicyRuntime::new(
        RuntimeOptions::new(PolicySource::Directory(dir.to_path_buf()))
            .cache_dir(compile_cache())
            .clock(clock.clone()),
    )
    .expect("runtime starts");
    assert!(
        runtime.status().rejected.is_empty(),
        "{:?}",
        runtime.status().rejected
    );
    let journal = Journal::open(journal_dir, &JournalConfig::default()).expect("journal opens");
    let session = SessionId::new("main").unwrap();
    for (at, state, failures) in OUTAGE {
        clock.set_ms(START_MS + at * 1000);
        let mut facts = Facts::new(session.clone(), state);
        facts.consecutive_probe_failures = failures;
        facts.time_in_state = Duration::from_secs(at.saturating_sub(10));
        facts.last_probe_detail = if failures == 0 {
            "connected".into()
        } else {
            "timeout".into()
        };
        let verdict = runtime.watchdog_blocking(&facts);
        journal.record(&session, Role::Watchdog, &facts, &verdict);
        let actions = runtime.keepalive_blocking(&facts);
        journal.record(&session, Role::Keepalive, &facts, &actions);
    }
    journal.close();
    assert_eq!(journal.stats().written, 2 * OUTAGE.len() as u64);
    vigil::journal::path(journal_dir, &session)
}
