//! `activity`: Vigil's default keepalive policy, the seed behaviour.
//!
//! While a session's page is open (connected or degraded) it asks for a
//! mouse move, a key press and a screen wake lock on every tick, so the web
//! app sees a user and the browser does not throttle the tab. The mouse
//! alternates between two nearby points so each tick really moves it; the
//! tick count lives in the policy's memory.
//!
//! Config (all optional): `key` (default "Shift"), `mouse_x`, `mouse_y`
//! (default 200, 200), `wake_lock` (default true).

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "keepalive", path: "../../wit" });

use vigil::policy::config::{self, Value};
use vigil::policy::memory;
use vigil::policy::types::{Point, SessionState};

/// How far the mouse moves between ticks, in CSS pixels.
const JIGGLE: u32 = 7;

struct Settings {
    key: String,
    x: u32,
    y: u32,
    wake_lock: bool,
}

impl Settings {
    fn from_config() -> Self {
        let int = |key: &str, default: u32| match config::get(key) {
            Some(Value::Integer(n)) => u32::try_from(n).unwrap_or(default),
            _ => default,
        };
        Settings {
            key: match config::get("key") {
                Some(Value::Text(k)) if !k.is_empty() => k,
                _ => "Shift".to_string(),
            },
            x: int("mouse_x", 200),
            y: int("mouse_y", 200),
            wake_lock: !matches!(config::get("wake_lock"), Some(Value::Boolean(false))),
        }
    }
}

/// The decision, free of imports so it can be tested natively.
fn activity(state: SessionState, settings: &Settings, tick: u64) -> Vec<Action> {
    if !matches!(state, SessionState::Connected | SessionState::Degraded) {
        return vec![Action::Nothing];
    }
    let offset = if tick.is_multiple_of(2) { 0 } else { JIGGLE };
    let mut actions = vec![
        Action::MouseMove(Point {
            x: settings.x + offset,
            y: settings.y + offset,
        }),
        Action::KeyPress(settings.key.clone()),
    ];
    if settings.wake_lock {
        actions.push(Action::WakeLock);
    }
    actions
}

struct Activity;

impl Guest for Activity {
    fn tick(facts: Facts) -> Vec<Action> {
        let tick = memory::get("tick")
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        // A full memory only costs the jiggle, never the keepalive itself.
        let _ = memory::set("tick", &(tick.wrapping_add(1)).to_le_bytes());
        activity(facts.state, &Settings::from_config(), tick)
    }
}

export!(Activity);

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Settings {
        Settings {
            key: "Shift".into(),
            x: 200,
            y: 200,
            wake_lock: true,
        }
    }

    #[test]
    fn an_open_page_gets_mouse_key_and_wake_lock_and_the_mouse_moves() {
        let first = activity(SessionState::Connected, &seed(), 0);
        let second = activity(SessionState::Connected, &seed(), 1);
        assert!(matches!(
            first[0],
            Action::MouseMove(Point { x: 200, y: 200 })
        ));
        assert!(matches!(
            second[0],
            Action::MouseMove(Point { x: 207, y: 207 })
        ));
        assert!(matches!(&first[1], Action::KeyPress(k) if k == "Shift"));
        assert!(matches!(first[2], Action::WakeLock));
    }

    #[test]
    fn no_page_means_nothing_to_do() {
        for state in [
            SessionState::Starting,
            SessionState::NeedsLogin,
            SessionState::Stopped,
        ] {
            assert!(matches!(activity(state, &seed(), 0)[..], [Action::Nothing]));
        }
    }
}
