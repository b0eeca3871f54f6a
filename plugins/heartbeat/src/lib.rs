//! `heartbeat`: Vigil's default watchdog policy. It never gives up.
//!
//! A connected session is healthy. When a session stops being connected
//! (an *outage*), the watchdog escalates in its own steps, whatever the
//! probes counted:
//!
//! 1. reload the page (cheap: keeps the browser and the profile);
//! 2. restart the browser, `restart_after_ms` after the reload, then again
//!    with a doubling back-off (`backoff_ms`, 2x, 4x, ...) capped at
//!    `backoff_max_ms` (15 min): a slow, visible, endless retry;
//! 3. between restarts, reload the page every `reload_every_ms`, so a
//!    session whose app was down comes back within a minute of the app;
//! 4. restore from a backup only when the profile itself is damaged
//!    (critical files missing, or `restore_after_launch_failures` launches
//!    in a row in which Chromium refused the profile), or after
//!    `restore_after_restarts` restarts that did not reconnect. Once per
//!    outage. The host backs the current profile up first.
//!
//! It answers `give-up` only when `give_up_after_restarts` is set (0, the
//! default, means never). A session that needs a new login is left alone:
//! restarting cannot fix a lost login.
//!
//! The outage's steps live in the policy's memory and are forgotten when
//! the session is connected again.

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "watchdog", path: "../../wit" });

use vigil::policy::config::{self, Value};
use vigil::policy::types::SessionState;
use vigil::policy::{clock, memory};

struct Settings {
    restart_after_ms: u64,
    backoff_ms: u64,
    backoff_max_ms: u64,
    reload_every_ms: u64,
    restore_after_restarts: u64,
    restore_after_launch_failures: u64,
    give_up_after_restarts: u64,
}

impl Settings {
    fn from_config() -> Self {
        let int = |key: &str, default: u64| match config::get(key) {
            Some(Value::Integer(n)) => u64::try_from(n).unwrap_or(default),
            _ => default,
        };
        Settings {
            restart_after_ms: int("restart_after_ms", 20_000),
            backoff_ms: int("backoff_ms", 30_000),
            backoff_max_ms: int("backoff_max_ms", 900_000),
            reload_every_ms: int("reload_every_ms", 60_000),
            restore_after_restarts: int("restore_after_restarts", 5),
            restore_after_launch_failures: int("restore_after_launch_failures", 3),
            give_up_after_restarts: int("give_up_after_restarts", 0),
        }
    }
}

/// What the watchdog remembers of the current outage (all zero: none).
#[derive(Default, Debug, PartialEq, Clone, Copy)]
struct Outage {
    /// When the watchdog first saw it (ms since the epoch).
    since_ms: u64,
    last_reload_ms: u64,
    restarts: u64,
    last_restart_ms: u64,
    restored: bool,
}

impl Outage {
    const KEYS: [&'static str; 5] = [
        "outage-since-ms",
        "last-reload-ms",
        "restarts",
        "last-restart-ms",
        "restored",
    ];

    fn fields(&self) -> [u64; 5] {
        [
            self.since_ms,
            self.last_reload_ms,
            self.restarts,
            self.last_restart_ms,
            u64::from(self.restored),
        ]
    }

    fn load() -> Self {
        let read = |key: &str| {
            memory::get(key)
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map_or(0, u64::from_le_bytes)
        };
        Outage {
            since_ms: read(Self::KEYS[0]),
            last_reload_ms: read(Self::KEYS[1]),
            restarts: read(Self::KEYS[2]),
            last_restart_ms: read(Self::KEYS[3]),
            restored: read(Self::KEYS[4]) != 0,
        }
    }

    fn save(&self) {
        for (key, value) in Self::KEYS.iter().zip(self.fields()) {
            if value == 0 {
                memory::remove(key);
            } else {
                let _ = memory::set(key, &value.to_le_bytes());
            }
        }
    }
}

/// The pause before restart number `n + 1`, after `n` restarts.
fn backoff(settings: &Settings, n: u64) -> u64 {
    let doublings = n.saturating_sub(1).min(20) as u32;
    settings
        .backoff_ms
        .saturating_mul(1 << doublings)
        .min(settings.backoff_max_ms)
}

fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The decision, free of imports so it can be tested natively.
fn judge(facts: &Facts, settings: &Settings, now_ms: u64, outage: &mut Outage) -> Verdict {
    match facts.state {
        SessionState::NeedsLogin => {
            return Verdict::Degraded("needs a new login; a restart cannot fix that".into());
        }
        SessionState::Connected if facts.consecutive_probe_failures == 0 => {
            *outage = Outage::default();
            return Verdict::Healthy;
        }
        SessionState::Connected | SessionState::Degraded => {}
        // Starting, restoring, launching, stopped, failed: the session's own
        // life is in charge, not the watchdog.
        _ => return Verdict::Healthy,
    }
    if outage.since_ms == 0 {
        outage.since_ms = now_ms.max(1);
    }
    let down = secs(now_ms.saturating_sub(outage.since_ms));
    let detail = &facts.last_probe_detail;

    if !outage.restored {
        let damage = if !facts.missing_critical_files.is_empty() {
            Some(format!(
                "the profile lost {}",
                facts.missing_critical_files.join(", ")
            ))
        } else if settings.restore_after_launch_failures > 0
            && u64::from(facts.launch_failures) >= settings.restore_after_launch_failures
        {
            Some(format!(
                "the browser refused the profile {} times in a row",
                facts.launch_failures
            ))
        } else if settings.restore_after_restarts > 0
            && outage.restarts >= settings.restore_after_restarts
            && now_ms.saturating_sub(outage.last_restart_ms) >= backoff(settings, outage.restarts)
        {
            Some(format!(
                "{} restarts did not reconnect it in {down} s",
                outage.restarts
            ))
        } else {
            None
        };
        if let Some(why) = damage {
            outage.restored = true;
            outage.last_restart_ms = now_ms;
            return Verdict::RestoreFromBackup(format!("{why}: {detail}"));
        }
    }
    if facts.launch_failures > 0 {
        // The browser is not running: the host paces its own relaunches.
        return Verdict::RestartBrowser(format!(
            "the browser did not start {} time(s) in a row: {detail}",
            facts.launch_failures
        ));
    }
    if outage.last_reload_ms == 0 {
        outage.last_reload_ms = now_ms;
        return Verdict::ReloadPage(format!("not connected: {detail}"));
    }
    let next_restart = if outage.restarts == 0 {
        outage.last_reload_ms + settings.restart_after_ms
    } else {
        outage.last_restart_ms + backoff(settings, outage.restarts)
    };
    if now_ms < next_restart {
        if settings.reload_every_ms > 0
            && now_ms.saturating_sub(outage.last_reload_ms) >= settings.reload_every_ms
        {
            outage.last_reload_ms = now_ms;
            return Verdict::ReloadPage(format!(
                "not connected for {down} s (next restart in {} s): {detail}",
                secs(next_restart - now_ms)
            ));
        }
        return Verdict::Degraded(format!(
            "not connected for {down} s; next restart in {} s: {detail}",
            secs(next_restart - now_ms)
        ));
    }
    if settings.give_up_after_restarts > 0 && outage.restarts >= settings.give_up_after_restarts {
        return Verdict::GiveUp(format!(
            "{} restarts did not reconnect it in {down} s (give_up_after_restarts = {}): {detail}",
            outage.restarts, settings.give_up_after_restarts
        ));
    }
    outage.restarts += 1;
    outage.last_restart_ms = now_ms;
    outage.last_reload_ms = now_ms;
    Verdict::RestartBrowser(format!(
        "not connected for {down} s: restart {} (the next in {} s if needed): {detail}",
        outage.restarts,
        secs(backoff(settings, outage.restarts))
    ))
}

struct Heartbeat;

impl Guest for Heartbeat {
    fn check(facts: Facts) -> Verdict {
        let mut outage = Outage::load();
        let before = outage;
        let verdict = judge(
            &facts,
            &Settings::from_config(),
            clock::now_ms(),
            &mut outage,
        );
        if before != outage {
            outage.save();
        }
        verdict
    }
}

export!(Heartbeat);

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Settings {
        Settings {
            restart_after_ms: 20_000,
            backoff_ms: 30_000,
            backoff_max_ms: 900_000,
            reload_every_ms: 60_000,
            restore_after_restarts: 5,
            restore_after_launch_failures: 3,
            give_up_after_restarts: 0,
        }
    }

    fn degraded(failures: u32) -> Facts {
        Facts {
            session_id: "main".into(),
            state: SessionState::Degraded,
            ms_in_state: 0,
            consecutive_probe_failures: failures,
            restarts_last_hour: 0,
            ms_since_activity: None,
            ms_since_backup: None,
            last_probe_detail: "disconnected".into(),
            ms_since_connected: Some(0),
            launch_failures: 0,
            missing_critical_files: Vec::new(),
        }
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Healthy => "healthy",
            Verdict::Degraded(_) => "degraded",
            Verdict::ReloadPage(_) => "reload-page",
            Verdict::RestartBrowser(_) => "restart-browser",
            Verdict::RestoreFromBackup(_) => "restore-from-backup",
            Verdict::GiveUp(_) => "give-up",
        }
    }

    /// The verdicts of a watchdog called every `every_ms` for `for_ms` of
    /// an outage that never ends.
    fn outage(settings: &Settings, every_ms: u64, for_ms: u64) -> Vec<(u64, &'static str)> {
        let mut memory = Outage::default();
        let mut seen = Vec::new();
        let mut now = 1_000_000;
        let end = now + for_ms;
        while now <= end {
            let v = judge(&degraded(3), settings, now, &mut memory);
            seen.push((now - 1_000_000, kind(&v)));
            now += every_ms;
        }
        seen
    }

    #[test]
    fn a_drop_is_answered_with_a_reload_at_once() {
        let mut memory = Outage::default();
        let v = judge(&degraded(1), &seed(), 5_000, &mut memory);
        assert_eq!(kind(&v), "reload-page", "{v:?}");
    }

    #[test]
    fn an_endless_outage_restarts_at_a_slow_capped_pace_and_never_gives_up() {
        let seen = outage(&seed(), 15_000, 3 * 3600 * 1000);
        assert!(seen.iter().all(|(_, k)| *k != "give-up"));
        let restarts: Vec<u64> = seen
            .iter()
            .filter(|(_, k)| matches!(*k, "restart-browser" | "restore-from-backup"))
            .map(|(t, _)| *t)
            .collect();
        // 20 s after the reload, then 30, 60, 120, 240, 480 s apart, then
        // every 15 min (the restore takes the place of one restart).
        assert_eq!(restarts[0], 30_000);
        let gaps: Vec<u64> = restarts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 900_000 + 15_000), "{gaps:?}");
        assert!(gaps.last().unwrap() >= &900_000, "{gaps:?}");
        // One restore, after five restarts did not help.
        let restores = seen
            .iter()
            .filter(|(_, k)| *k == "restore-from-backup")
            .count();
        assert_eq!(restores, 1);
        // Reloads keep coming between the slow restarts.
        let late_reloads = seen
            .iter()
            .filter(|(t, k)| *t > 3600 * 1000 && *k == "reload-page")
            .count();
        assert!(late_reloads > 30, "{late_reloads}");
    }

    #[test]
    fn give_up_only_when_configured() {
        let settings = Settings {
            give_up_after_restarts: 2,
            ..seed()
        };
        let seen = outage(&settings, 15_000, 600_000);
        assert!(seen.iter().any(|(_, k)| *k == "give-up"), "{seen:?}");
    }

    #[test]
    fn a_damaged_profile_is_restored_first() {
        let mut memory = Outage::default();
        let mut facts = degraded(1);
        facts.missing_critical_files = vec!["Default/IndexedDB".into()];
        let v = judge(&facts, &seed(), 5_000, &mut memory);
        assert_eq!(kind(&v), "restore-from-backup", "{v:?}");
        // Once per outage.
        let v = judge(&facts, &seed(), 6_000, &mut memory);
        assert_eq!(kind(&v), "reload-page", "{v:?}");
    }

    #[test]
    fn a_refused_profile_is_restored_after_three_launches() {
        let mut memory = Outage::default();
        let mut facts = degraded(0);
        facts.launch_failures = 2;
        let v = judge(&facts, &seed(), 5_000, &mut memory);
        assert_eq!(kind(&v), "restart-browser", "{v:?}");
        facts.launch_failures = 3;
        let v = judge(&facts, &seed(), 6_000, &mut memory);
        assert_eq!(kind(&v), "restore-from-backup", "{v:?}");
    }

    #[test]
    fn a_reconnect_forgets_the_outage() {
        let mut memory = Outage {
            since_ms: 5,
            last_reload_ms: 6,
            restarts: 2,
            last_restart_ms: 7,
            restored: true,
        };
        let mut connected = degraded(0);
        connected.state = SessionState::Connected;
        let v = judge(&connected, &seed(), 10, &mut memory);
        assert_eq!(kind(&v), "healthy");
        assert_eq!(memory, Outage::default());
    }

    #[test]
    fn a_lost_login_is_not_restarted() {
        let mut memory = Outage::default();
        let mut facts = degraded(0);
        facts.state = SessionState::NeedsLogin;
        let v = judge(&facts, &seed(), 10, &mut memory);
        assert_eq!(kind(&v), "degraded");
    }
}
