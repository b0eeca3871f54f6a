//! The decision journal: every policy call of a session as one JSON line
//! in `data_dir/journal/<session>.jsonl`, and what is built on it: reading
//! a session's lines back ([`read`]), replaying them against another
//! policy ([`replay`]), and turning a slice into a scenario
//! ([`to_scenario`]).
//!
//! A line holds what the call was asked (the facts, or the inventory and
//! backups), the clock it ran at, the config and the memory it saw, the
//! memory it left (only when it changed), the answer, the actions refused,
//! who answered (the policy file and plugin, with their sha256, or the
//! built-in defaults, or a fallback with its cause) and how long it took.
//! That is everything a call depends on, so a replay makes the same call.
//!
//! Writing costs the caller one serialization and a non-blocking send:
//! one thread per host writes every session's file, rotates it at its
//! size cap, and drops (and counts) lines when it falls behind, rather
//! than slow a session down. This module reads policies' types but never
//! acts on a session, a browser or a profile.
//!
//! ```text
//! {"at":"2026-01-01T00:00:00.000Z","session":"main","role":"watchdog",
//!  "input":{"session":"main","state":"degraded",...},"clock_ms":1767225600000,
//!  "config":{"restart_after_ms":20000},"memory_before":{},
//!  "memory_after":{"outage-since-ms":"AHA4d5sBAAA="},
//!  "answer":{"kind":"reload-page","reason":"not connected: timeout"},
//!  "served_by":{"kind":"policy","file":"policies/heartbeat.toml",...},
//!  "plugin_sha256":"…","file_sha256":"…","took_us":41}
//! ```
//! (one line in the file; wrapped here.)

mod read;
mod replay;
mod scenario;
mod writer;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::id::SessionId;
use crate::policy::memory::KvMemory;
use crate::policy::{Action, ConfigValue, Decision, PolicyConfig, Role, ServedBy};

pub use read::{Since, read};
pub use replay::{Difference, ReplayOptions, ReplayReport, replay};
pub use scenario::{Slice, to_scenario};
pub use writer::{Journal, JournalStats};

/// `[journal]` in `vigil.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Journal every policy call (`false` writes nothing).
    pub enabled: bool,
    /// The most bytes a session's journal keeps, its files together
    /// ("8MiB"). The oldest lines go first.
    #[serde(deserialize_with = "size")]
    pub max_bytes: u64,
    /// How many files those bytes are spread over: the current one and
    /// `files - 1` older ones (`<session>.jsonl.1`, ...). A file is
    /// rotated when it reaches `max_bytes / files`.
    pub files: NonZeroU32,
    /// Lines waiting for the writer, all sessions together; when full, a
    /// line is dropped and counted rather than slow a session down.
    pub queue: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: true,
            max_bytes: 8 << 20,
            files: NonZeroU32::new(2).expect("non-zero"),
            queue: 4096,
        }
    }
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    let bytes = crate::fields::parse_size(&text).map_err(serde::de::Error::custom)?;
    if bytes < 64 << 10 {
        return Err(serde::de::Error::custom(format!(
            "max_bytes {text:?} is less than 64KiB"
        )));
    }
    Ok(bytes)
}

/// The folder of every session's journal in `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// Where a session's current journal file is in the journal folder `dir`.
pub fn path(dir: &Path, session: &SessionId) -> PathBuf {
    dir.join(format!("{session}.jsonl"))
}

/// Why a journal cannot be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{}:{line}: not a journal line: {message}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", file.display())]
    Replay { file: PathBuf, message: String },
}

/// One journal line as written.
#[derive(Serialize)]
struct LineOut<'a, I: Serialize, A: Serialize> {
    at: String,
    session: &'a SessionId,
    role: Role,
    input: &'a I,
    clock_ms: u64,
    config: &'a PolicyConfig,
    memory_before: &'a KvMemory,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_after: Option<&'a KvMemory>,
    answer: &'a A,
    #[serde(skip_serializing_if = "<[Action]>::is_empty")]
    refused: &'a [Action],
    served_by: &'a ServedBy,
    plugin_sha256: Option<&'a str>,
    file_sha256: Option<&'a str>,
    took_us: u64,
}

/// One journal line as read back. The input and answer stay JSON until a
/// reader knows the role.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    /// The call's clock, RFC 3339.
    pub at: String,
    pub session: SessionId,
    pub role: Role,
    pub input: serde_json::Value,
    pub clock_ms: u64,
    pub config: PolicyConfig,
    pub memory_before: KvMemory,
    #[serde(default)]
    pub memory_after: Option<KvMemory>,
    pub answer: serde_json::Value,
    #[serde(default)]
    pub refused: Vec<Action>,
    pub served_by: ServedBy,
    pub plugin_sha256: Option<String>,
    pub file_sha256: Option<String>,
    pub took_us: u64,
}

/// One journal line of `decision`, made about `input` (serialized here,
/// on the caller's thread: the writer only writes).
pub(crate) fn line<I: Serialize, A: Serialize>(
    session: &SessionId,
    role: Role,
    input: &I,
    decision: &Decision<A>,
) -> Result<String, serde_json::Error> {
    let record = &decision.record;
    serde_json::to_string(&LineOut {
        at: rfc3339_ms(record.now_ms),
        session,
        role,
        input,
        clock_ms: record.now_ms,
        config: &record.config,
        memory_before: &record.memory_before,
        memory_after: record.memory_after.as_ref(),
        answer: &decision.value,
        refused: &decision.refused,
        served_by: &decision.served_by,
        plugin_sha256: record.plugin_sha256.as_deref(),
        file_sha256: record.file_sha256.as_deref(),
        took_us: decision.took.as_micros().try_into().unwrap_or(u64::MAX),
    })
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Milliseconds since the Unix epoch of `t`.
fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn value_text(v: &ConfigValue) -> String {
    match v {
        ConfigValue::Text(t) => format!("{t:?}"),
        ConfigValue::Integer(i) => i.to_string(),
        ConfigValue::Float(f) => f.to_string(),
        ConfigValue::Boolean(b) => b.to_string(),
        ConfigValue::TextList(l) => format!("{l:?}"),
    }
}
