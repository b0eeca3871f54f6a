//! A slice of a journal as a scenario file (`vigil policy test
//! --from-journal`): real calls become steps, each with the facts (or
//! inventory and backups) the call saw, at its clock, expecting what was
//! answered. The policy's memory before the first call becomes the
//! scenario's starting memory, so the steps replay as they happened.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::read::entries;
use super::{Entry, JournalError};
use crate::fields::format_duration;
use crate::policy::memory::KvMemory;
use crate::policy::{
    Action, BackupFacts, ConfigValue, Facts, Inventory, Plan, RestoreQuestion, Role, ServedBy,
    Verdict,
};

/// Which calls of a journal become steps.
#[derive(Clone, Debug, Default)]
pub struct Slice {
    /// The role; may be left out when the journal holds calls of one role.
    pub role: Option<Role>,
    /// Calls at or after this clock (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Calls before this clock.
    pub until_ms: Option<u64>,
    /// At most this many steps (the first ones of the slice).
    pub limit: Option<usize>,
}

#[derive(Serialize)]
struct ScenarioOut {
    role: Role,
    session: String,
    start_ms: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    config: BTreeMap<String, toml::Value>,
    #[serde(skip_serializing_if = "KvMemory::is_empty")]
    memory: KvMemory,
    step: Vec<StepOut>,
}

#[derive(Serialize)]
struct StepOut {
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<FactsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inventory: Option<Inventory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backups: Option<Vec<BackupOut>>,
    expect: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fallback: bool,
}

/// Facts as a scenario writes them (durations as text, "never").
#[derive(Serialize)]
struct FactsOut {
    state: crate::policy::SessionState,
    time_in_state: String,
    consecutive_probe_failures: u32,
    restarts_last_hour: u32,
    since_activity: String,
    since_backup: String,
    last_probe_detail: String,
    since_connected: String,
    launch_failures: u32,
    missing_critical_files: Vec<String>,
}

#[derive(Serialize)]
struct BackupOut {
    id: String,
    age: String,
    size_bytes: u64,
    verified: bool,
    restore_failed: bool,
}

/// The scenario (TOML) of the `slice` of `journals` (each a file name and
/// its text).
pub fn to_scenario(journals: &[(PathBuf, String)], slice: &Slice) -> Result<String, JournalError> {
    let file = journals.first().map(|(p, _)| p.clone()).unwrap_or_default();
    let fail = |message: String| JournalError::Replay {
        file: file.clone(),
        message,
    };
    let mut picked: Vec<Entry> = Vec::new();
    for (path, text) in journals {
        for entry in entries(path, text) {
            let (_, entry) = entry?;
            let in_time = slice.from_ms.is_none_or(|t| entry.clock_ms >= t)
                && slice.until_ms.is_none_or(|t| entry.clock_ms < t);
            if in_time && slice.role.is_none_or(|r| r == entry.role) {
                picked.push(entry);
            }
        }
    }
    let mut roles: Vec<Role> = picked.iter().map(|e| e.role).collect();
    roles.sort();
    roles.dedup();
    let role = match roles[..] {
        [] => return Err(fail("no call of the journal is in the slice".into())),
        [role] => role,
        _ => {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(fail(format!(
                "the slice holds {} calls: pick one role with --role",
                names.join(", ")
            )));
        }
    };
    let mut sessions: Vec<&str> = picked.iter().map(|e| e.session.as_str()).collect();
    sessions.dedup();
    if sessions.len() > 1 {
        return Err(fail(format!(
            "the slice holds calls of sessions {}: give one session's journal",
            sessions.join(", ")
        )));
    }
    picked.truncate(slice.limit.unwrap_or(usize::MAX));
    let first = &picked[0];
    let start_ms = first.clock_ms;
    let mut steps = Vec::new();
    for entry in &picked {
        steps.push(
            step(role, entry, start_ms).map_err(|message| JournalError::Replay {
                file: file.clone(),
                message: format!("the call at {}: {message}", entry.at),
            })?,
        );
    }
    let scenario = ScenarioOut {
        role,
        session: first.session.to_string(),
        start_ms,
        config: first
            .config
            .iter()
            .map(|(k, v)| (k.clone(), toml_value(v)))
            .collect(),
        memory: first.memory_before.clone(),
        step: steps,
    };
    let body = toml::to_string(&scenario).map_err(|e| fail(e.to_string()))?;
    Ok(format!(
        "# Made by `vigil policy test --from-journal` from {} ({} call(s) of session {}).\n\
         # Each step is a real call: the facts it saw and what was answered.\n{body}",
        file.display(),
        picked.len(),
        first.session
    ))
}

fn step(role: Role, entry: &Entry, start_ms: u64) -> Result<StepOut, String> {
    let at = format_duration(Duration::from_millis(
        entry.clock_ms.saturating_sub(start_ms),
    ));
    let fallback = matches!(entry.served_by, ServedBy::Fallback { .. });
    let json = |e: serde_json::Error| e.to_string();
    let mut out = StepOut {
        at,
        facts: None,
        inventory: None,
        backups: None,
        expect: Vec::new(),
        reason: None,
        fallback,
    };
    match role {
        Role::Keepalive | Role::Watchdog => {
            let facts: Facts = serde_json::from_value(entry.input.clone()).map_err(json)?;
            out.facts = Some(facts_out(&facts));
        }
        Role::Restore => {
            let q: RestoreQuestion = serde_json::from_value(entry.input.clone()).map_err(json)?;
            out.inventory = Some(q.inventory);
            out.backups = Some(q.backups.iter().map(backup_out).collect());
        }
    }
    match role {
        Role::Keepalive => {
            let actions: Vec<Action> =
                serde_json::from_value(entry.answer.clone()).map_err(json)?;
            out.expect = actions.iter().map(ToString::to_string).collect();
        }
        Role::Watchdog => {
            let verdict: Verdict = serde_json::from_value(entry.answer.clone()).map_err(json)?;
            out.expect = vec![verdict.kind().to_string()];
            out.reason = Some(verdict.reason().to_string()).filter(|r| !r.is_empty());
        }
        Role::Restore => {
            let plan: Plan = serde_json::from_value(entry.answer.clone()).map_err(json)?;
            out.expect = vec![match plan.argument() {
                Some(arg) => format!("{}({arg})", plan.kind()),
                None => plan.kind().to_string(),
            }];
            out.reason = Some(plan.reason().to_string()).filter(|r| !r.is_empty());
        }
    }
    Ok(out)
}

fn facts_out(f: &Facts) -> FactsOut {
    let maybe = |d: Option<Duration>| d.map_or_else(|| "never".to_string(), format_duration);
    FactsOut {
        state: f.state,
        time_in_state: format_duration(f.time_in_state),
        consecutive_probe_failures: f.consecutive_probe_failures,
        restarts_last_hour: f.restarts_last_hour,
        since_activity: maybe(f.since_activity),
        since_backup: maybe(f.since_backup),
        last_probe_detail: f.last_probe_detail.clone(),
        since_connected: maybe(f.since_connected),
        launch_failures: f.launch_failures,
        missing_critical_files: f.missing_critical_files.clone(),
    }
}

fn backup_out(b: &BackupFacts) -> BackupOut {
    BackupOut {
        id: b.id.clone(),
        age: format_duration(b.age),
        size_bytes: b.size_bytes,
        verified: b.verified,
        restore_failed: b.restore_failed,
    }
}

fn toml_value(v: &ConfigValue) -> toml::Value {
    match v {
        ConfigValue::Text(t) => toml::Value::String(t.clone()),
        ConfigValue::Integer(i) => toml::Value::Integer(*i),
        ConfigValue::Float(f) => toml::Value::Float(*f),
        ConfigValue::Boolean(b) => toml::Value::Boolean(*b),
        ConfigValue::TextList(l) => {
            toml::Value::Array(l.iter().cloned().map(toml::Value::String).collect())
        }
    }
}
