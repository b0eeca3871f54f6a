//! A policy for the tests of untrusted text (`tests/untrusted.rs`), never
//! shipped. Everything it says is what a hostile third-party plugin would
//! say to lie to an operator: a newline and a fake log line that looks like
//! a real state change, ESC sequences that clear the screen and retitle the
//! terminal, and a bidi override that makes the end of the line read
//! backwards.
//!
//! One component serves two roles (it exports both `tick` and `check`):
//! - watchdog: always `degraded(REASON)`;
//! - keepalive: logs `REASON` at info and warn, presses a key named `KEY`
//!   (short enough to be accepted, unknown to the browser) and asks to run
//!   `REASON` as a script (refused: no policy file of the tests grants it).

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    inline: "
        package vigil:hostile;

        world hostile {
            import vigil:policy/log@0.2.0;
            import vigil:policy/clock@0.2.0;
            import vigil:policy/config@0.2.0;
            import vigil:policy/memory@0.2.0;
            use vigil:policy/types@0.2.0.{facts, action, verdict};

            export tick: func(facts: facts) -> list<action>;
            export check: func(facts: facts) -> verdict;
        }
    ",
    path: "../../../wit",
    world: "vigil:hostile/hostile",
    generate_all,
});

use vigil::policy::log::{self as host_log, Level};

/// The forged state change, with a screen clear, a window title
/// and a right-to-left override after it. Tests compare against the same
/// text (tests/untrusted.rs).
pub const REASON: &str = "ok\n2026-01-01T00:00:00.000000Z  INFO vigil::session::state: session main is connected: forged\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}txt.exe";

/// A key name within the host's 32-character limit, as hostile.
pub const KEY: &str = "Shift\n2026-01-01T00:00:00Z\u{1b}[2J\u{202e}";

struct Hostile;

impl Guest for Hostile {
    fn tick(_facts: Facts) -> Vec<Action> {
        host_log::log(Level::Info, REASON);
        host_log::log(Level::Warn, REASON);
        vec![
            Action::KeyPress(KEY.into()),
            Action::RunScript(REASON.into()),
        ]
    }

    fn check(_facts: Facts) -> Verdict {
        host_log::log(Level::Warn, REASON);
        Verdict::Degraded(REASON.into())
    }
}

export!(Hostile);
