//! Policy files: the TOML that binds a role to a plugin for a set of
//! sessions. Parsing and validation only, no I/O beyond what the caller
//! hands in; every error points at `file:line:col`.
//!
//! ```toml
//! role = "watchdog"                          # keepalive | watchdog | restore
//! plugin = "../target/plugins/heartbeat.wasm" # relative to this file
//! sessions = ["*"]                           # globs on session ids (* and ?)
//! priority = 0                               # higher wins when files overlap
//! interval = "60s"                           # keepalive and watchdog only
//!
//! [limits]
//! timeout = "50ms"                           # wall-clock bound per call
//! memory = "16MiB"                           # linear memory cap
//!
//! [permissions]
//! run_script = false                         # may ask to run JavaScript
//!
//! [config]                                   # read by the plugin
//! restore_after = 3
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::config::{PolicyConfig, flatten};
use super::error::PolicyError;
use super::types::Role;
use crate::fields::{Location, parse_duration, parse_size};

/// Bounds of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Wall-clock bound of one call, enforced with epoch interruption.
    #[serde(with = "super::types::millis")]
    pub timeout: Duration,
    /// Cap on the plugin's linear memory.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(50),
            memory_bytes: 16 << 20,
        }
    }
}

/// The highest memory cap a policy may ask for (the engine reserves slots
/// of this size).
pub const MAX_MEMORY_BYTES: u64 = 256 << 20;
/// The longest call a policy may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// What a policy may ask the host to do beyond the harmless actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Permissions {
    /// May ask for `run-script` actions.
    pub run_script: bool,
}

/// A glob on session ids: `*` matches any run of characters, `?` one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct SessionPattern(String);

impl SessionPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let ok = !pattern.is_empty()
            && pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?'));
        if ok {
            Ok(SessionPattern(pattern.to_owned()))
        } else {
            Err(format!(
                "session pattern {pattern:?} may only use session id characters, '*' and '?'"
            ))
        }
    }

    pub fn matches(&self, session: &str) -> bool {
        crate::id::glob_matches(self.0.as_bytes(), session.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated policy file.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFile {
    /// The file name ("activity.toml"): the policy's identity in status,
    /// logs and the key of its memory.
    pub name: String,
    pub path: PathBuf,
    pub role: Role,
    /// The plugin path as written in the file.
    pub plugin: String,
    /// The plugin path resolved against the file's folder.
    pub plugin_path: PathBuf,
    pub sessions: Vec<SessionPattern>,
    pub priority: i64,
    /// How often the host calls the policy (`None` for restore).
    pub interval: Option<Duration>,
    /// Limits the file sets; the runtime's defaults fill the rest.
    pub timeout: Option<Duration>,
    pub memory_bytes: Option<u64>,
    pub permissions: Permissions,
    pub config: PolicyConfig,
}

impl PolicyFile {
    /// The default interval of a role when the file sets none.
    pub fn default_interval(role: Role) -> Option<Duration> {
        match role {
            Role::Keepalive => Some(Duration::from_secs(30)),
            Role::Watchdog => Some(Duration::from_secs(15)),
            Role::Restore => None,
        }
    }

    pub fn limits(&self, defaults: Limits) -> Limits {
        Limits {
            timeout: self.timeout.unwrap_or(defaults.timeout),
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes),
        }
    }

    pub fn matches(&self, session: &str) -> bool {
        self.sessions.iter().any(|p| p.matches(session))
    }

    /// Parses and validates the text of the policy file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let at = |span: Range<usize>, message: String| invalid(path, text, span, message);
        let raw: RawPolicyFile = toml::from_str(text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim_end().to_string()))?;

        let named = raw.role.get_ref().as_str();
        let Some(role) = Role::ALL.into_iter().find(|r| r.as_str() == named) else {
            let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            return Err(at(
                raw.role.span(),
                format!("role {named:?} is not one of {}", known.join(", ")),
            ));
        };

        let plugin = raw.plugin.get_ref().clone();
        if plugin.is_empty() {
            return Err(at(raw.plugin.span(), "plugin path is empty".into()));
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        let plugin_path = folder.join(&plugin);

        let sessions = match raw.sessions {
            None => vec![SessionPattern("*".into())],
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(at(
                        list.span(),
                        "sessions is empty: the policy would bind nothing (omit it for all sessions)"
                            .into(),
                    ));
                }
                let mut patterns = Vec::new();
                for p in list.into_inner() {
                    let span = p.span();
                    patterns.push(SessionPattern::new(p.get_ref()).map_err(|m| at(span, m))?);
                }
                patterns
            }
        };

        let interval = match (role, raw.interval) {
            (Role::Restore, Some(i)) => {
                return Err(at(
                    i.span(),
                    "interval has no meaning for a restore policy (it runs once per start)".into(),
                ));
            }
            (_, Some(i)) => {
                let d = parse_duration(i.get_ref()).map_err(|m| at(i.span(), m))?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
                    return Err(at(i.span(), "interval must be between 1s and 24h".into()));
                }
                Some(d)
            }
            (_, None) => Self::default_interval(role),
        };

        let limits = raw.limits.unwrap_or_default();
        let timeout = match limits.timeout {
            None => None,
            Some(t) => {
                let d = parse_duration(t.get_ref()).map_err(|m| at(t.span(), m))?;
                if d < Duration::from_millis(1) || d > MAX_TIMEOUT {
                    return Err(at(t.span(), "timeout must be between 1ms and 10s".into()));
                }
                Some(d)
            }
        };
        let memory_bytes = match limits.memory {
            None => None,
            Some(m) => {
                let bytes = parse_size(m.get_ref()).map_err(|e| at(m.span(), e))?;
                if !(1 << 20..=MAX_MEMORY_BYTES).contains(&bytes) {
                    return Err(at(
                        m.span(),
                        "memory must be between 1MiB and 256MiB".into(),
                    ));
                }
                Some(bytes)
            }
        };

        let config = match raw.config {
            None => PolicyConfig::new(),
            Some(table) => {
                let span = table.span();
                flatten(table.get_ref()).map_err(|m| at(span, m))?
            }
        };

        Ok(PolicyFile {
            name: file_name(path),
            path: path.to_path_buf(),
            role,
            plugin,
            plugin_path,
            sessions,
            priority: raw.priority.unwrap_or(0),
            interval,
            timeout,
            memory_bytes,
            permissions: Permissions {
                run_script: raw.permissions.unwrap_or_default().run_script,
            },
            config,
        })
    }

    /// The byte range of the `plugin = ...` value, for errors about the
    /// plugin itself.
    pub fn plugin_span(text: &str) -> Range<usize> {
        toml::from_str::<PluginOnly>(text)
            .map(|p| p.plugin.span())
            .unwrap_or(0..0)
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// An error at a byte range of a file, as `file:line:col: message`.
pub(crate) fn invalid(path: &Path, text: &str, span: Range<usize>, message: String) -> PolicyError {
    PolicyError::Invalid {
        at: Location::of(path, text, span.start),
        message,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    role: Spanned<String>,
    plugin: Spanned<String>,
    sessions: Option<Spanned<Vec<Spanned<String>>>>,
    priority: Option<i64>,
    interval: Option<Spanned<String>>,
    limits: Option<RawLimits>,
    permissions: Option<RawPermissions>,
    config: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    run_script: bool,
}

#[derive(Deserialize)]
struct PluginOnly {
    plugin: Spanned<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_session_ids() {
        let p = |s: &str| SessionPattern::new(s).unwrap();
        assert!(p("*").matches("main"));
        assert!(p("shop-*").matches("shop-eu"));
        assert!(!p("shop-*").matches("myshop-eu"));
        assert!(p("s?p*x").matches("sapphix"));
        assert!(!p("main").matches("main2"));
        assert!(SessionPattern::new("a/b").is_err());
    }

    #[test]
    fn a_full_file_parses_and_defaults_fill_the_rest() {
        let text = r#"
role = "watchdog"
plugin = "../target/plugins/heartbeat.wasm"
sessions = ["main", "shop-*"]
priority = 5

[limits]
timeout = "20ms"

[config]
restore_after = 3
backoff = { base_ms = 10 }
"#;
        let f = PolicyFile::parse(Path::new("policies/heartbeat.toml"), text).unwrap();
        assert_eq!(f.name, "heartbeat.toml");
        assert_eq!(f.role, Role::Watchdog);
        assert_eq!(
            f.plugin_path,
            Path::new("policies/../target/plugins/heartbeat.wasm")
        );
        assert_eq!(f.interval, Some(Duration::from_secs(15)));
        assert_eq!(
            f.limits(Limits::default()).timeout,
            Duration::from_millis(20)
        );
        assert_eq!(f.limits(Limits::default()).memory_bytes, 16 << 20);
        assert!(f.matches("shop-1") && !f.matches("other"));
        assert!(f.config.contains_key("backoff.base_ms"));
    }

    #[test]
    fn errors_point_at_file_line_and_column() {
        let text = "role = \"keepalive\"\nplugin = \"x.wasm\"\ninterval = \"30 parsecs\"\n";
        let e = PolicyFile::parse(Path::new("p/a.toml"), text).unwrap_err();
        assert!(e.to_string().starts_with("p/a.toml:3:12: "), "{e}");
        let e = PolicyFile::parse(Path::new("p/a.toml"), "role = \"keepalive\"\nplugn = 1\n")
            .unwrap_err();
        assert!(e.to_string().starts_with("p/a.toml:2:1: "), "{e}");
        let e = PolicyFile::parse(Path::new("p/a.toml"), "role = \"sleepy\"\nplugin = \"x\"")
            .unwrap_err();
        assert!(e.to_string().contains("1:8: role \"sleepy\""), "{e}");
    }
}
