//! Replaying a journal against a policy: each recorded call of the
//! policy's role is made again with the recorded input, clock and memory,
//! and the new answer is compared with the recorded one.
//!
//! The config is the policy file's own (it is part of the policy being
//! tried: a changed `[config]` shows as the decisions it changes, and the
//! report lists how it differs from the recorded one), or, with
//! [`ReplayOptions::recorded_config`], each call's recorded config (to try
//! a new plugin build alone). Replaying against the policy that made the
//! journal finds no difference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::read::entries;
use super::{Entry, JournalError, value_text};
use crate::id::SessionId;
use crate::policy::role::{PolicyRole, dispatch};
use crate::policy::{PolicyConfig, PolicyRuntime, Role, ServedBy};

/// How to replay.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOptions {
    /// Give each call the config it recorded instead of the policy file's.
    pub recorded_config: bool,
}

/// One decision the policy would make differently.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// The journal file and line of the recorded call.
    pub file: PathBuf,
    pub line: usize,
    /// When the call was made (RFC 3339).
    pub at: String,
    pub session: SessionId,
    pub recorded: serde_json::Value,
    pub replayed: serde_json::Value,
    /// Both in words.
    pub recorded_text: String,
    pub replayed_text: String,
    /// Who answered the replayed call (the plugin, or its fallback and why).
    pub replayed_by: ServedBy,
}

/// The outcome of a replay.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// The policy file replayed against, its role and plugin (short sha256).
    pub policy: PathBuf,
    pub role: Role,
    pub plugin_sha256: String,
    /// Calls of that role made again.
    pub replayed: usize,
    pub differences: Vec<Difference>,
    /// Calls of other roles in the journal, not replayed.
    pub other_roles: usize,
    /// The plugins (sha256) that made the recorded calls.
    pub recorded_plugins: BTreeSet<String>,
    /// How the config used differs from the recorded one(s), key by key;
    /// empty when they are the same or the recorded config was used.
    pub config_changes: Vec<String>,
    pub recorded_config: bool,
}

impl ReplayReport {
    /// The report for people: each difference, then a summary.
    pub fn render(&self) -> String {
        use crate::untrusted::shown;
        let mut out = String::new();
        for d in &self.differences {
            let _ = writeln!(
                out,
                "{} {} ({}:{})",
                d.at,
                d.session,
                d.file.display(),
                d.line
            );
            // Both answers came from policies: escaped, one line each.
            let _ = writeln!(out, "  - recorded: {}", shown(&d.recorded_text));
            let _ = writeln!(out, "  + replayed: {}", shown(&d.replayed_text));
            if let ServedBy::Fallback { cause, .. } = &d.replayed_by {
                let _ = writeln!(
                    out,
                    "    (the plugin failed, its fallback answered: {})",
                    shown(&cause.to_string())
                );
            }
        }
        let _ = writeln!(
            out,
            "replayed {} {} call(s) against {} (plugin {}): {} differ",
            self.replayed,
            self.role,
            self.policy.display(),
            self.plugin_sha256,
            self.differences.len()
        );
        if self.recorded_config {
            let _ = writeln!(out, "config: each call's recorded config");
        } else if !self.config_changes.is_empty() {
            let _ = writeln!(
                out,
                "config: the policy file's, which differs from the recorded one: {}",
                self.config_changes.join("; ")
            );
        }
        if self.other_roles > 0 {
            let _ = writeln!(
                out,
                "not replayed: {} call(s) of other roles",
                self.other_roles
            );
        }
        out
    }
}

/// Replays `journals` (each a file name and its text) against the one
/// policy `runtime` loaded.
pub fn replay(
    runtime: &PolicyRuntime,
    journals: &[(PathBuf, String)],
    options: ReplayOptions,
) -> Result<ReplayReport, JournalError> {
    let status = runtime.status();
    let first = journals.first().map(|(p, _)| p.clone()).unwrap_or_default();
    let Some(policy) = status.policies.first() else {
        let why = status
            .rejected
            .first()
            .map_or("no policy is loaded".to_string(), |r| r.reason.clone());
        return Err(JournalError::Replay {
            file: first,
            message: format!("nothing to replay against: {why}"),
        });
    };
    let mut report = ReplayReport {
        policy: policy.file.clone(),
        role: policy.role,
        plugin_sha256: policy.sha256.clone(),
        replayed: 0,
        differences: Vec::new(),
        other_roles: 0,
        recorded_plugins: BTreeSet::new(),
        config_changes: Vec::new(),
        recorded_config: options.recorded_config,
    };
    let mut recorded_configs: Vec<PolicyConfig> = Vec::new();
    for (file, text) in journals {
        for entry in entries(file, text) {
            let (line, entry) = entry?;
            if entry.role != report.role {
                report.other_roles += 1;
                continue;
            }
            if let Some(sha) = &entry.plugin_sha256 {
                report.recorded_plugins.insert(sha.clone());
            }
            if !recorded_configs.contains(&entry.config) {
                recorded_configs.push(entry.config.clone());
            }
            let difference =
                dispatch!(report.role, R => replay_one::<R>(runtime, file, line, entry, options))?;
            report.replayed += 1;
            report.differences.extend(difference);
        }
    }
    if !options.recorded_config {
        let used = policy_config(runtime, report.role);
        for recorded in &recorded_configs {
            for change in config_changes(recorded, &used) {
                if !report.config_changes.contains(&change) {
                    report.config_changes.push(change);
                }
            }
        }
    }
    Ok(report)
}

fn replay_one<R: PolicyRole>(
    runtime: &PolicyRuntime,
    file: &std::path::Path,
    line: usize,
    entry: Entry,
    options: ReplayOptions,
) -> Result<Option<Difference>, JournalError> {
    let bad = |what: &str, e: serde_json::Error| JournalError::Line {
        file: file.to_path_buf(),
        line,
        message: format!("its {what} is not a {} {what}: {e}", R::ROLE),
    };
    let input: R::Input =
        serde_json::from_value(entry.input.clone()).map_err(|e| bad("input", e))?;
    let recorded: R::Answer =
        serde_json::from_value(entry.answer.clone()).map_err(|e| bad("answer", e))?;
    let config = options
        .recorded_config
        .then(|| Arc::new(entry.config.clone()));
    let decision = runtime
        .replay::<R>(&input, entry.clock_ms, config, entry.memory_before)
        .ok_or_else(|| JournalError::Replay {
            file: file.to_path_buf(),
            message: format!("no {} policy is loaded", R::ROLE),
        })?;
    if decision.value == recorded {
        return Ok(None);
    }
    Ok(Some(Difference {
        file: file.to_path_buf(),
        line,
        at: entry.at,
        session: entry.session,
        recorded_text: R::describe(&recorded),
        replayed_text: R::describe(&decision.value),
        recorded: entry.answer,
        replayed: serde_json::to_value(&decision.value).unwrap_or_default(),
        replayed_by: decision.served_by,
    }))
}

/// The config the policy file gives its role's calls.
fn policy_config(runtime: &PolicyRuntime, role: Role) -> PolicyConfig {
    dispatch!(role, R => runtime.loaded_config::<R>())
        .map(|c| (*c).clone())
        .unwrap_or_default()
}

/// "key: old -> new" for every key whose value differs.
fn config_changes(recorded: &PolicyConfig, used: &PolicyConfig) -> Vec<String> {
    let keys: BTreeSet<&String> = recorded.keys().chain(used.keys()).collect();
    let show = |c: &BTreeMap<String, _>, k: &String| c.get(k).map_or("(unset)".into(), value_text);
    keys.into_iter()
        .filter(|k| recorded.get(*k) != used.get(*k))
        .map(|k| format!("{k}: {} -> {}", show(recorded, k), show(used, k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_answer_stays_on_its_own_line_of_the_report() {
        let hostile = "degraded (ok\n2026-01-01T00:00:00Z  INFO forged\u{1b}[2J\u{202e}exe)";
        let report = ReplayReport {
            policy: "watchdog.toml".into(),
            role: Role::Watchdog,
            plugin_sha256: "eb3af6c2244e".into(),
            replayed: 1,
            differences: vec![Difference {
                file: "main.jsonl".into(),
                line: 3,
                at: "2026-12-04T10:00:00Z".into(),
                session: SessionId::new("main").unwrap(),
                recorded: serde_json::json!("healthy"),
                replayed: serde_json::json!({ "degraded": hostile }),
                recorded_text: "healthy".into(),
                replayed_text: hostile.into(),
                replayed_by: ServedBy::BuiltIn,
            }],
            other_roles: 0,
            recorded_plugins: BTreeSet::new(),
            config_changes: Vec::new(),
            recorded_config: false,
        };
        let text = report.render();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.contains(
                "  + replayed: degraded (ok\\n2026-01-01T00:00:00Z  INFO forged\\x1b[2J\\u{202e}exe)\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text}"
        );
    }
}
