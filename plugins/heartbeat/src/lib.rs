//! `heartbeat`: Vigil's default watchdog policy, the seed behaviour.
//!
//! A connected session is healthy. A session whose probes fail gets its
//! browser restarted, with an exponential backoff between restarts; after
//! `restore_after` failed probes in a row it is restored from a backup (once
//! per failure streak); after `give_up_after` it is given up. A session that
//! needs a new login is left alone: restarting cannot fix a lost login.
//!
//! Config (all optional): `restore_after` (default 3), `give_up_after`
//! (default 6), `backoff_ms` (first wait between restarts, default 30000,
//! doubling with each restart in the last hour), `backoff_max_ms` (default
//! 600000). The time of the last restart and whether a restore was asked
//! for live in the policy's memory.

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "watchdog", path: "../../wit" });

use vigil::policy::config::{self, Value};
use vigil::policy::types::SessionState;
use vigil::policy::{clock, memory};

struct Settings {
    restore_after: u32,
    give_up_after: u32,
    backoff_ms: u64,
    backoff_max_ms: u64,
}

impl Settings {
    fn from_config() -> Self {
        let int = |key: &str, default: u64| match config::get(key) {
            Some(Value::Integer(n)) => u64::try_from(n).unwrap_or(default),
            _ => default,
        };
        Settings {
            restore_after: int("restore_after", 3) as u32,
            give_up_after: int("give_up_after", 6) as u32,
            backoff_ms: int("backoff_ms", 30_000),
            backoff_max_ms: int("backoff_max_ms", 600_000),
        }
    }
}

/// What the watchdog remembers about the current failure streak.
#[derive(Default, Debug, PartialEq)]
struct Streak {
    last_restart_ms: Option<u64>,
    restore_asked: bool,
}

/// The decision, free of imports so it can be tested natively.
fn judge(facts: &Facts, settings: &Settings, now_ms: u64, streak: &mut Streak) -> Verdict {
    let failures = facts.consecutive_probe_failures;
    match facts.state {
        SessionState::NeedsLogin => {
            return Verdict::Degraded("needs a new login; a restart cannot fix that".into());
        }
        SessionState::Connected if failures == 0 => {
            *streak = Streak::default();
            return Verdict::Healthy;
        }
        SessionState::Connected | SessionState::Degraded => {}
        // Starting, restoring, launching, stopped, failed: the session's own
        // life is in charge, not the watchdog.
        _ => return Verdict::Healthy,
    }
    if failures == 0 {
        return Verdict::Degraded(format!("degraded: {}", facts.last_probe_detail));
    }
    let detail = &facts.last_probe_detail;
    if failures >= settings.give_up_after {
        return Verdict::GiveUp(format!(
            "{failures} probes failed in a row (limit {}): {detail}",
            settings.give_up_after
        ));
    }
    if failures >= settings.restore_after && !streak.restore_asked {
        streak.restore_asked = true;
        return Verdict::RestoreFromBackup(format!(
            "{failures} probes failed in a row (restore after {}): {detail}",
            settings.restore_after
        ));
    }
    let doublings = facts.restarts_last_hour.saturating_sub(1).min(20);
    let backoff = settings
        .backoff_ms
        .saturating_mul(1 << doublings)
        .min(settings.backoff_max_ms);
    if let Some(last) = streak.last_restart_ms {
        let since = now_ms.saturating_sub(last);
        if since < backoff {
            return Verdict::Degraded(format!(
                "not connected; next restart allowed in {} s (backoff {} s)",
                (backoff - since).div_ceil(1000),
                backoff / 1000
            ));
        }
    }
    streak.last_restart_ms = Some(now_ms);
    Verdict::RestartBrowser(format!(
        "not connected: {failures} probe(s) failed in a row: {detail}"
    ))
}

fn load_streak() -> Streak {
    Streak {
        last_restart_ms: memory::get("last-restart-ms")
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes),
        restore_asked: memory::get("restore-asked").is_some(),
    }
}

fn save_streak(streak: &Streak) {
    match streak.last_restart_ms {
        Some(ms) => {
            let _ = memory::set("last-restart-ms", &ms.to_le_bytes());
        }
        None => memory::remove("last-restart-ms"),
    }
    if streak.restore_asked {
        let _ = memory::set("restore-asked", &[1]);
    } else {
        memory::remove("restore-asked");
    }
}

struct Heartbeat;

impl Guest for Heartbeat {
    fn check(facts: Facts) -> Verdict {
        let mut streak = load_streak();
        let before = (streak.last_restart_ms, streak.restore_asked);
        let verdict = judge(
            &facts,
            &Settings::from_config(),
            clock::now_ms(),
            &mut streak,
        );
        if before != (streak.last_restart_ms, streak.restore_asked) {
            save_streak(&streak);
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
            restore_after: 3,
            give_up_after: 6,
            backoff_ms: 30_000,
            backoff_max_ms: 600_000,
        }
    }

    fn facts(state: SessionState, failures: u32, restarts: u32) -> Facts {
        Facts {
            session_id: "main".into(),
            state,
            ms_in_state: 0,
            consecutive_probe_failures: failures,
            restarts_last_hour: restarts,
            ms_since_activity: None,
            ms_since_backup: None,
            last_probe_detail: "timeout".into(),
        }
    }

    #[test]
    fn restarts_then_backs_off_then_restores_then_gives_up() {
        let mut streak = Streak::default();
        let s = seed();
        let v = judge(&facts(SessionState::Degraded, 1, 0), &s, 1_000, &mut streak);
        assert!(matches!(v, Verdict::RestartBrowser(_)), "{v:?}");
        let v = judge(
            &facts(SessionState::Degraded, 2, 1),
            &s,
            11_000,
            &mut streak,
        );
        assert!(matches!(v, Verdict::Degraded(_)), "{v:?}");
        let v = judge(
            &facts(SessionState::Degraded, 2, 1),
            &s,
            31_000,
            &mut streak,
        );
        assert!(matches!(v, Verdict::RestartBrowser(_)), "{v:?}");
        let v = judge(
            &facts(SessionState::Degraded, 3, 2),
            &s,
            40_000,
            &mut streak,
        );
        assert!(matches!(v, Verdict::RestoreFromBackup(_)), "{v:?}");
        let v = judge(
            &facts(SessionState::Degraded, 6, 2),
            &s,
            50_000,
            &mut streak,
        );
        assert!(matches!(v, Verdict::GiveUp(_)), "{v:?}");
    }

    #[test]
    fn a_reconnect_forgets_the_streak() {
        let mut streak = Streak {
            last_restart_ms: Some(5),
            restore_asked: true,
        };
        let v = judge(
            &facts(SessionState::Connected, 0, 0),
            &seed(),
            10,
            &mut streak,
        );
        assert!(matches!(v, Verdict::Healthy));
        assert_eq!(streak, Streak::default());
    }
}
