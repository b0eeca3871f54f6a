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

/// The `heartbeat` watchdog: restart with backoff, restore after
/// `restore_after` failed probes (once per streak), give up after
/// `give_up_after`.
pub fn watchdog(
    facts: &Facts,
    config: &PolicyConfig,
    now_ms: u64,
    memory: &mut KvMemory,
) -> Verdict {
    let setting =
        |key: &str, default: i64| u64::try_from(integer(config, key, default)).unwrap_or(0);
    let restore_after = setting("restore_after", 3);
    let give_up_after = setting("give_up_after", 6);
    let backoff_ms = setting("backoff_ms", 30_000);
    let backoff_max_ms = setting("backoff_max_ms", 600_000);
    let failures = u64::from(facts.consecutive_probe_failures);
    let detail = &facts.last_probe_detail;

    match facts.state {
        SessionState::NeedsLogin => {
            return Verdict::Degraded {
                reason: "needs a new login; a restart cannot fix that".into(),
            };
        }
        SessionState::Connected if failures == 0 => {
            memory.remove("last-restart-ms");
            memory.remove("restore-asked");
            return Verdict::Healthy;
        }
        SessionState::Connected | SessionState::Degraded => {}
        _ => return Verdict::Healthy,
    }
    if failures == 0 {
        return Verdict::Degraded {
            reason: format!("degraded: {detail}"),
        };
    }
    if failures >= give_up_after {
        return Verdict::GiveUp {
            reason: format!("{failures} probes failed in a row (limit {give_up_after}): {detail}"),
        };
    }
    if failures >= restore_after && memory.get("restore-asked").is_none() {
        let _ = memory.set("restore-asked", vec![1]);
        return Verdict::RestoreFromBackup {
            reason: format!(
                "{failures} probes failed in a row (restore after {restore_after}): {detail}"
            ),
        };
    }
    let doublings = facts.restarts_last_hour.saturating_sub(1).min(20);
    let backoff = backoff_ms
        .saturating_mul(1 << doublings)
        .min(backoff_max_ms);
    if let Some(last) = read_u64(memory, "last-restart-ms") {
        let since = now_ms.saturating_sub(last);
        if since < backoff {
            return Verdict::Degraded {
                reason: format!(
                    "not connected; next restart allowed in {} s (backoff {} s)",
                    (backoff - since).div_ceil(1000),
                    backoff / 1000
                ),
            };
        }
    }
    let _ = memory.set("last-restart-ms", now_ms.to_le_bytes().to_vec());
    Verdict::RestartBrowser {
        reason: format!("not connected: {failures} probe(s) failed in a row: {detail}"),
    }
}

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
