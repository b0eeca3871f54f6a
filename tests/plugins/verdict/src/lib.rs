//! A watchdog policy for the tests, never shipped: it answers
//! `degraded(<reason>)` on every check, `reason` being its config value
//! (default "said so"). A test puts text a page must not run (markup, a
//! script) in the reason and checks where it is shown.

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "watchdog", path: "../../../wit" });

use vigil::policy::config::{self, Value};

struct Verdicts;

impl Guest for Verdicts {
    fn check(_facts: Facts) -> Verdict {
        let reason = match config::get("reason") {
            Some(Value::Text(t)) => t,
            _ => "said so".to_string(),
        };
        Verdict::Degraded(reason)
    }
}

export!(Verdicts);
