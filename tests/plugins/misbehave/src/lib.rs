//! A keepalive policy for the runtime's tests, never shipped. Its config
//! `mode` chooses how it behaves:
//!
//! - `echo` (default): answers `key-press("<label>#<n>")`, where `label` is
//!   the config value and `n` counts calls in the policy's memory (every
//!   mode counts, before misbehaving).
//! - `spin`: loops forever.
//! - `hog`: allocates until the memory cap stops it.
//! - `script`: asks to run a script, plus a `focus`.
//! - `garbage`: answers an action the host must reject (an empty key name).
//! - `panic`: panics (a trap).
//! - `recurse`: recurses without end (the call stack overflows).
//! - `long-key`: answers a `key-press` whose key name is 8 MiB long.
//!
//! The misbehaviour applies only to sessions whose id starts with `bad`,
//! so the host's self-check at load passes, unless `always = true`: then it
//! also fails the self-check and must be refused at load.

// The export glue wit-bindgen generates takes one argument per flattened
// WIT field; that is its business, not a design smell of ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "keepalive", path: "../../../wit" });

use vigil::policy::config::{self, Value};
use vigil::policy::log::{self as host_log, Level};
use vigil::policy::memory;

fn text(key: &str, default: &str) -> String {
    match config::get(key) {
        Some(Value::Text(t)) => t,
        _ => default.to_string(),
    }
}

/// Counts calls in the policy's memory; every mode counts before it
/// misbehaves, so a test can see that a failed call's writes are dropped.
fn count() -> u64 {
    let n = memory::get("calls")
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
        + 1;
    memory::set("calls", &n.to_le_bytes()).expect("memory has room for 8 bytes");
    n
}

fn echo(n: u64) -> Vec<Action> {
    let label = text("label", "echo");
    host_log::log(Level::Info, &format!("echo {label} call {n}"));
    vec![Action::KeyPress(format!("{label}#{n}"))]
}

/// Never returns for a large `n`: each call waits for the next one, and a
/// rotate-then-xor is no accumulator the compiler can turn into a loop.
#[inline(never)]
fn deeper(n: u64) -> u64 {
    if n == 0 {
        1
    } else {
        deeper(n - 1).rotate_left(1) ^ n
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn tick(facts: Facts) -> Vec<Action> {
        let n = count();
        let always = matches!(config::get("always"), Some(Value::Boolean(true)));
        if !always && !facts.session_id.starts_with("bad") {
            return echo(n);
        }
        match text("mode", "echo").as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "script" => vec![
                Action::RunScript("document.title = 'owned'".into()),
                Action::Focus,
            ],
            "garbage" => vec![Action::KeyPress(String::new())],
            "panic" => panic!("misbehave was asked to panic"),
            "recurse" => {
                let depth = deeper(u64::MAX - facts.session_id.len() as u64);
                vec![Action::KeyPress(format!("{depth}"))]
            }
            "long-key" => vec![Action::KeyPress("k".repeat(8 << 20))],
            _ => echo(n),
        }
    }
}

export!(Misbehave);
