//! `restore-default`: Vigil's default restore policy, the seed behaviour.
//!
//! Use the profile on disk when every required critical file is present and
//! non-empty and no live process holds the profile's lock. Otherwise restore
//! the newest verified backup whose restore has not already failed (so a
//! failed restore moves on to the next older one). Otherwise start fresh,
//! which means a new login. A profile held by a live process is never
//! touched: the plan is to wait and decide again.
//!
//! Config (all optional): `required` (list of profile-relative paths,
//! default ["Default/IndexedDB", "Default/Local Storage"]), `wait_ms`
//! (default 30000).

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "restore", path: "../../wit" });

use vigil::policy::config::{self, Value};
use vigil::policy::types::{Choice, LockState};

struct Settings {
    required: Vec<String>,
    wait_ms: u64,
}

impl Settings {
    fn from_config() -> Self {
        Settings {
            required: match config::get("required") {
                Some(Value::TextList(paths)) => paths,
                _ => vec!["Default/IndexedDB".into(), "Default/Local Storage".into()],
            },
            wait_ms: match config::get("wait_ms") {
                Some(Value::Integer(n)) if n > 0 => n as u64,
                _ => 30_000,
            },
        }
    }
}

/// The decision, free of imports so it can be tested natively.
fn plan(inventory: &Inventory, backups: &[Backup], settings: &Settings) -> Plan {
    if inventory.exists && matches!(inventory.lock, LockState::Held) {
        return Plan {
            choice: Choice::Wait(settings.wait_ms),
            reason: "a live process holds the profile's lock; not touching it".into(),
        };
    }
    let missing: Vec<&str> = settings
        .required
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
        return Plan {
            choice: Choice::UseDisk,
            reason: "the profile on disk has every critical file".into(),
        };
    }
    let why_not_disk = if inventory.exists {
        format!("the profile on disk lacks {}", missing.join(", "))
    } else {
        "there is no profile on disk".to_string()
    };
    let usable = backups
        .iter()
        .filter(|b| b.verified && !b.restore_failed)
        .min_by_key(|b| b.age_ms);
    match usable {
        Some(backup) => Plan {
            choice: Choice::RestoreBackup(backup.id.clone()),
            reason: format!(
                "{why_not_disk}; restoring the newest usable backup {} ({} min old)",
                backup.id,
                backup.age_ms / 60_000
            ),
        },
        None => Plan {
            choice: Choice::StartFresh,
            reason: format!(
                "{why_not_disk} and no verified backup is left to try; a new login is needed"
            ),
        },
    }
}

struct RestoreDefault;

impl Guest for RestoreDefault {
    fn decide(_session_id: String, inventory: Inventory, backups: Vec<Backup>) -> Plan {
        plan(&inventory, &backups, &Settings::from_config())
    }
}

export!(RestoreDefault);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil::policy::types::CriticalFile;

    fn settings() -> Settings {
        Settings {
            required: vec!["Default/IndexedDB".into(), "Default/Local Storage".into()],
            wait_ms: 30_000,
        }
    }

    fn inventory(idb: bool, ls: bool, lock: LockState) -> Inventory {
        let file = |path: &str, ok: bool| CriticalFile {
            path: path.into(),
            present: ok,
            non_empty: ok,
        };
        Inventory {
            exists: true,
            critical_files: vec![
                file("Default/IndexedDB", idb),
                file("Default/Local Storage", ls),
            ],
            size_bytes: 1 << 20,
            lock,
        }
    }

    fn backup(id: &str, age_ms: u64, verified: bool, failed: bool) -> Backup {
        Backup {
            id: id.into(),
            age_ms,
            size_bytes: 1 << 20,
            verified,
            restore_failed: failed,
        }
    }

    #[test]
    fn complete_profile_with_stale_lock_is_used() {
        let p = plan(&inventory(true, true, LockState::Stale), &[], &settings());
        assert!(matches!(p.choice, Choice::UseDisk));
    }

    #[test]
    fn broken_profile_takes_newest_verified_backup_not_already_failed() {
        let backups = [
            backup("newest-failed", 10, true, true),
            backup("unverified", 20, false, false),
            backup("good", 30, true, false),
            backup("older", 40, true, false),
        ];
        let p = plan(
            &inventory(true, false, LockState::None),
            &backups,
            &settings(),
        );
        assert!(
            matches!(&p.choice, Choice::RestoreBackup(id) if id == "good"),
            "{p:?}"
        );
        assert!(p.reason.contains("Default/Local Storage"), "{}", p.reason);
    }

    #[test]
    fn nothing_usable_starts_fresh_and_a_held_lock_waits() {
        let p = plan(&inventory(false, false, LockState::None), &[], &settings());
        assert!(matches!(p.choice, Choice::StartFresh));
        let p = plan(&inventory(true, true, LockState::Held), &[], &settings());
        assert!(matches!(p.choice, Choice::Wait(30_000)));
    }
}
