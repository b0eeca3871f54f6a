//! The decisions Vigil makes with no policy file: the seed behaviour,
//! written as plain Rust, the same logic as the default plugins in
//! `plugins/` (the scenarios in `policies/scenarios/` run against both).
//! Also the per-call fallbacks used when a plugin traps, times out or
//! answers nonsense: stricter than the defaults, they never disrupt.

use std::time::Duration;

use super::config::{ConfigValue, PolicyConfig, integer};
use super::memory::KvMemory;
use super::types::{Action, BackupFacts, Facts, Inventory, LockState, Plan, SessionState, Verdict};

/// Where the mouse goes on even ticks; odd ticks add [`JIGGLE`].
const MOUSE_AT: u32 = 200;
const JIGGLE: u32 = 7;

/// The `activity` keepalive: mouse move, key press and wake lock while the
/// page is open.
pub fn keepalive(facts: &Facts, config: &PolicyConfig, memory: &mut KvMemory) -> Vec<Action> {
    let tick = read_u64(memory, "tick").unwrap_or(0);
    let _ = memory.set("tick", tick.wrapping_add(1).to_le_bytes().to_vec());
    if !matches!(
        facts.state,
        SessionState::Connected | SessionState::Degraded
    ) {
        return vec![Action::Nothing];
    }
    let offset = if tick.is_multiple_of(2) { 0 } else { JIGGLE };
    let at = |key: &str| u32::try_from(integer(config, key, MOUSE_AT.into())).unwrap_or(MOUSE_AT);
    let key = match config.get("key") {
        Some(ConfigValue::Text(k)) if !k.is_empty() => k.clone(),
        _ => "Shift".to_string(),
    };
    let mut actions = vec![
        Action::MouseMove {
            x: at("mouse_x") + offset,
            y: at("mouse_y") + offset,
        },
        Action::KeyPress { key },
    ];
    if !matches!(config.get("wake_lock"), Some(ConfigValue::Boolean(false))) {
        actions.push(Action::WakeLock);
    }
    actions
}

/// The `heartbeat` watchdog (see `plugins/heartbeat`): in an outage,
/// reload the page, then restart the browser with a doubling back-off
/// capped at `backoff_max_ms`, reloading between restarts; restore only a
/// damaged profile or after `restore_after_restarts` restarts (once per
/// outage); give up only when `give_up_after_restarts` is set.
pub fn watchdog(
    facts: &Facts,
    config: &PolicyConfig,
    now_ms: u64,
    memory: &mut KvMemory,
) -> Verdict {
    let setting =
        |key: &str, default: i64| u64::try_from(integer(config, key, default)).unwrap_or(0);
    let restart_after_ms = setting("restart_after_ms", 20_000);
    let backoff_ms = setting("backoff_ms", 30_000);
    let backoff_max_ms = setting("backoff_max_ms", 900_000);
    let reload_every_ms = setting("reload_every_ms", 60_000);
    let restore_after_restarts = setting("restore_after_restarts", 5);
    let restore_after_launch_failures = setting("restore_after_launch_failures", 3);
    let give_up_after_restarts = setting("give_up_after_restarts", 0);
    let backoff = |n: u64| {
        backoff_ms
            .saturating_mul(1 << n.saturating_sub(1).min(20))
            .min(backoff_max_ms)
    };
    let secs = |ms: u64| ms.div_ceil(1000);
    let detail = &facts.last_probe_detail;

    match facts.state {
        SessionState::NeedsLogin => {
            return Verdict::Degraded {
                reason: "needs a new login; a restart cannot fix that".into(),
            };
        }
        SessionState::Connected if facts.consecutive_probe_failures == 0 => {
            for key in OUTAGE_KEYS {
                memory.remove(key);
            }
            return Verdict::Healthy;
        }
        SessionState::Connected | SessionState::Degraded => {}
        _ => return Verdict::Healthy,
    }
    let mut outage = OUTAGE_KEYS.map(|key| read_u64(memory, key).unwrap_or(0));
    let before = outage;
    let [
        since_ms,
        last_reload_ms,
        restarts,
        last_restart_ms,
        restored,
    ] = &mut outage;
    if *since_ms == 0 {
        *since_ms = now_ms.max(1);
    }
    let down = secs(now_ms.saturating_sub(*since_ms));
    let verdict = 'verdict: {
        if *restored == 0 {
            let damage = if !facts.missing_critical_files.is_empty() {
                Some(format!(
                    "the profile lost {}",
                    facts.missing_critical_files.join(", ")
                ))
            } else if restore_after_launch_failures > 0
                && u64::from(facts.launch_failures) >= restore_after_launch_failures
            {
                Some(format!(
                    "the browser refused the profile {} times in a row",
                    facts.launch_failures
                ))
            } else if restore_after_restarts > 0
                && *restarts >= restore_after_restarts
                && now_ms.saturating_sub(*last_restart_ms) >= backoff(*restarts)
            {
                Some(format!(
                    "{restarts} restarts did not reconnect it in {down} s"
                ))
            } else {
                None
            };
            if let Some(why) = damage {
                *restored = 1;
                *last_restart_ms = now_ms;
                break 'verdict Verdict::RestoreFromBackup {
                    reason: format!("{why}: {detail}"),
                };
            }
        }
        if facts.launch_failures > 0 {
            break 'verdict Verdict::RestartBrowser {
                reason: format!(
                    "the browser did not start {} time(s) in a row: {detail}",
                    facts.launch_failures
                ),
            };
        }
        if *last_reload_ms == 0 {
            *last_reload_ms = now_ms;
            break 'verdict Verdict::ReloadPage {
                reason: format!("not connected: {detail}"),
            };
        }
        let next_restart = if *restarts == 0 {
            *last_reload_ms + restart_after_ms
        } else {
            *last_restart_ms + backoff(*restarts)
        };
        if now_ms < next_restart {
            if reload_every_ms > 0 && now_ms.saturating_sub(*last_reload_ms) >= reload_every_ms {
                *last_reload_ms = now_ms;
                break 'verdict Verdict::ReloadPage {
                    reason: format!(
                        "not connected for {down} s (next restart in {} s): {detail}",
                        secs(next_restart - now_ms)
                    ),
                };
            }
            break 'verdict Verdict::Degraded {
                reason: format!(
                    "not connected for {down} s; next restart in {} s: {detail}",
                    secs(next_restart - now_ms)
                ),
            };
        }
        if give_up_after_restarts > 0 && *restarts >= give_up_after_restarts {
            break 'verdict Verdict::GiveUp {
                reason: format!(
                    "{restarts} restarts did not reconnect it in {down} s (give_up_after_restarts = {give_up_after_restarts}): {detail}"
                ),
            };
        }
        *restarts += 1;
        *last_restart_ms = now_ms;
        *last_reload_ms = now_ms;
        Verdict::RestartBrowser {
            reason: format!(
                "not connected for {down} s: restart {restarts} (the next in {} s if needed): {detail}",
                secs(backoff(*restarts))
            ),
        }
    };
    if outage != before {
        for (key, value) in OUTAGE_KEYS.iter().zip(outage) {
            if value == 0 {
                memory.remove(key);
            } else {
                let _ = memory.set(key, value.to_le_bytes().to_vec());
            }
        }
    }
    verdict
}

/// The memory keys of the heartbeat's outage, as the plugin names them.
const OUTAGE_KEYS: [&str; 5] = [
    "outage-since-ms",
    "last-reload-ms",
    "restarts",
    "last-restart-ms",
    "restored",
];

/// The `restore-default` plan: disk if complete and not held, else the
/// newest verified backup not already failed, else fresh.
pub fn restore(inventory: &Inventory, backups: &[BackupFacts], config: &PolicyConfig) -> Plan {
    let wait =
        Duration::from_millis(u64::try_from(integer(config, "wait_ms", 30_000)).unwrap_or(30_000));
    if inventory.exists && inventory.lock == LockState::Held {
        return Plan::Wait {
            after: wait,
            reason: "a live process holds the profile's lock; not touching it".into(),
        };
    }
    let required: Vec<String> = match config.get("required") {
        Some(ConfigValue::TextList(paths)) => paths.clone(),
        _ => vec!["Default/IndexedDB".into(), "Default/Local Storage".into()],
    };
    let missing: Vec<&str> = required
        .iter()
        .filter(|path| {
            !inventory
                .critical_files
                .iter()
                .any(|f| &f.path == *path && f.present && f.non_empty)
        })
        .map(String::as_str)
        .collect();
    if inventory.exists && missing.is_empty() {
        return Plan::UseDisk {
            reason: "the profile on disk has every critical file".into(),
        };
    }
    let why_not_disk = if inventory.exists {
        format!("the profile on disk lacks {}", missing.join(", "))
    } else {
        "there is no profile on disk".to_string()
    };
    match backups
        .iter()
        .filter(|b| b.verified && !b.restore_failed)
        .min_by_key(|b| b.age)
    {
        Some(b) => Plan::RestoreBackup {
            id: b.id.clone(),
            reason: format!(
                "{why_not_disk}; restoring the newest usable backup {} ({} min old)",
                b.id,
                b.age.as_secs() / 60
            ),
        },
        None => Plan::StartFresh {
            reason: format!(
                "{why_not_disk} and no verified backup is left to try; a new login is needed"
            ),
        },
    }
}

/// Keepalive fallback: do nothing this time.
pub fn keepalive_fallback() -> Vec<Action> {
    Vec::new()
}

/// Watchdog fallback: never kill; say the watchdog could not judge.
pub fn watchdog_fallback(cause: &str) -> Verdict {
    Verdict::Degraded {
        reason: format!("watchdog policy gave no usable verdict ({cause}); not acting"),
    }
}

/// How long a restore fallback waits before the restore is decided again.
pub const RESTORE_FALLBACK_WAIT: Duration = Duration::from_secs(30);

/// Restore fallback: use the disk if it is complete, otherwise wait.
pub fn restore_fallback(inventory: &Inventory, cause: &str) -> Plan {
    if inventory.is_complete() {
        Plan::UseDisk {
            reason: format!(
                "restore policy gave no usable plan ({cause}); the profile on disk is complete"
            ),
        }
    } else {
        Plan::Wait {
            after: RESTORE_FALLBACK_WAIT,
            reason: format!(
                "restore policy gave no usable plan ({cause}) and the profile on disk is incomplete"
            ),
        }
    }
}

fn read_u64(memory: &KvMemory, key: &str) -> Option<u64> {
    memory
        .get(key)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}
