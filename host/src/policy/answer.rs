//! Checking a plugin's answer before anything acts on it: sizes, names,
//! backup ids, waits, and the permission to run scripts. Plain functions.
//!
//! Why an answer is invalid is told in the policy's own words, but never
//! more than [`QUOTE_CHARS`] of them: the reason goes to logs, status,
//! metrics and webhooks at every call, and a policy chooses its answer's
//! size (an 8 MiB key name must not become an 8 MiB log line).

use std::time::Duration;

use super::file::Permissions;
use super::types::{Action, BackupFacts, Plan, Verdict};

/// Most actions one keepalive answer may hold.
pub const MAX_ACTIONS: usize = 16;
/// Longest script a `run-script` action may carry.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Longest key name of a `key-press`.
pub const MAX_KEY_NAME: usize = 32;
/// Longest reason kept from a verdict or plan; longer ones are cut.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest wait a restore plan may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The most characters of a policy's text quoted in an error.
pub const QUOTE_CHARS: usize = 200;

/// `text` as a Rust string literal (escaped), cut to [`QUOTE_CHARS`]
/// characters with the full size said after it.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes in all)", &text[..end], text.len()),
    }
}

/// At most [`QUOTE_CHARS`] characters of `text` (a plugin's own words, a
/// panic message), control characters escaped, with the full size said
/// when it was cut.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_CHARS {
            out.push_str(&format!("… ({} bytes in all)", text.len()));
            break;
        }
        // Quoted in errors that are shown on terminals and in logs.
        if crate::untrusted::is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn cut(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let cut = reason.len() - end;
        reason.truncate(end);
        reason.push_str(&format!("…[cut {cut} bytes]"));
    }
    reason
}

/// Checks a keepalive answer; splits off actions the policy may not ask for.
pub(super) fn accept_actions(
    actions: Vec<Action>,
    permissions: Permissions,
) -> Result<(Vec<Action>, Vec<Action>), String> {
    if actions.len() > MAX_ACTIONS {
        return Err(format!("{} actions (at most {MAX_ACTIONS})", actions.len()));
    }
    let mut allowed = Vec::with_capacity(actions.len());
    let mut refused = Vec::new();
    for action in actions {
        match &action {
            Action::KeyPress { key } if key.is_empty() || key.chars().count() > MAX_KEY_NAME => {
                return Err(format!("key-press with key name {}", quote(key)));
            }
            Action::MouseMove { x, y } if *x > 100_000 || *y > 100_000 => {
                return Err(format!("mouse-move to {x},{y} is off any screen"));
            }
            Action::RunScript { script } if script.len() > MAX_SCRIPT_BYTES => {
                return Err(format!(
                    "run-script of {} bytes (at most {MAX_SCRIPT_BYTES})",
                    script.len()
                ));
            }
            Action::RunScript { .. } if !permissions.run_script => refused.push(action),
            _ => allowed.push(action),
        }
    }
    Ok((allowed, refused))
}

pub(super) fn accept_verdict(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Healthy => Verdict::Healthy,
        Verdict::Degraded { reason } => Verdict::Degraded {
            reason: cut(reason),
        },
        Verdict::ReloadPage { reason } => Verdict::ReloadPage {
            reason: cut(reason),
        },
        Verdict::RestartBrowser { reason } => Verdict::RestartBrowser {
            reason: cut(reason),
        },
        Verdict::RestoreFromBackup { reason } => Verdict::RestoreFromBackup {
            reason: cut(reason),
        },
        Verdict::GiveUp { reason } => Verdict::GiveUp {
            reason: cut(reason),
        },
    }
}

pub(super) fn accept_plan(plan: Plan, backups: &[BackupFacts]) -> Result<Plan, String> {
    match plan {
        Plan::RestoreBackup { id, .. } if !backups.iter().any(|b| b.id == id) => Err(format!(
            "restore-backup names backup {}, which was not offered",
            quote(&id)
        )),
        Plan::Wait { after, .. } if after.is_zero() || after > MAX_WAIT => Err(format!(
            "wait of {} ms (must be between 1 ms and 1 h)",
            after.as_millis()
        )),
        Plan::UseDisk { reason } => Ok(Plan::UseDisk {
            reason: cut(reason),
        }),
        Plan::RestoreBackup { id, reason } => Ok(Plan::RestoreBackup {
            id,
            reason: cut(reason),
        }),
        Plan::StartFresh { reason } => Ok(Plan::StartFresh {
            reason: cut(reason),
        }),
        Plan::Wait { after, reason } => Ok(Plan::Wait {
            after,
            reason: cut(reason),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_script_without_the_grant_is_refused_not_passed_on() {
        let asked = vec![
            Action::RunScript {
                script: "x()".into(),
            },
            Action::Focus,
        ];
        let (allowed, refused) = accept_actions(asked.clone(), Permissions::default()).unwrap();
        assert_eq!(allowed, vec![Action::Focus]);
        assert_eq!(refused.len(), 1);
        let (allowed, _) = accept_actions(asked, Permissions { run_script: true }).unwrap();
        assert_eq!(allowed.len(), 2);
    }

    #[test]
    fn a_huge_key_name_is_quoted_in_200_characters() {
        let key = "k".repeat(8 << 20);
        let reason =
            accept_actions(vec![Action::KeyPress { key }], Permissions::default()).unwrap_err();
        assert!(reason.len() < 300, "{} bytes", reason.len());
        assert!(reason.contains(&"k".repeat(QUOTE_CHARS)), "{reason}");
        assert!(reason.ends_with("(8388608 bytes in all)"), "{reason}");
        assert_eq!(quote("Sh\"ift"), r#""Sh\"ift""#);
        assert_eq!(excerpt("a\nb"), "a\\nb");
        assert!(excerpt(&"x".repeat(1000)).ends_with("… (1000 bytes in all)"));
    }

    #[test]
    fn a_plan_naming_an_unknown_backup_is_invalid() {
        let plan = Plan::RestoreBackup {
            id: "nope".into(),
            reason: String::new(),
        };
        assert!(accept_plan(plan, &[]).is_err());
    }
}
