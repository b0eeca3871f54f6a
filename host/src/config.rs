//! `vigil.toml` -> typed configuration: the root of the file, where each
//! section goes, the sections that configure the host itself (`[service]`,
//! `[api]`, `[policy]`, `[fixture]`, `[[session]]`), and errors that name
//! `file:line:column`. It never opens a store, a profile or a browser:
//! everything here is plain data, testable from a TOML snippet.
//!
//! A section's types live with what it configures: `[backup]` in
//! [`crate::backup`], `[[webhook]]` and `[webhooks]` in [`crate::webhook`],
//! `[browser]` in [`crate::browser`], `[journal]` in [`crate::journal`],
//! the profile paths in [`crate::volume`]. Those modules never import this
//! one: the shapes of values they share (paths relative to the file,
//! durations, URLs) are in [`crate::fields`].
//!
//! # Adding a section
//!
//! A section is one struct, in its owner's module, and one field here:
//!
//! ```ignore
//! #[derive(Debug, Clone, serde::Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! pub struct BrowserConfig { pub binary: PathBuf, /* ... */ }
//! impl Default for BrowserConfig { /* ... */ }
//!
//! // in `Config`:
//! #[serde(default)]
//! pub browser: BrowserConfig,
//! ```
//!
//! Path fields take `#[serde(deserialize_with = "crate::fields::path")]`
//! (or `opt_path`) and come out absolute, resolved against the config
//! file's folder. A value that needs checking gets a type whose
//! `Deserialize` checks it: its error then carries the value's line and
//! column for free.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backup::BackupConfig;
use crate::browser::{BrowserSettings, Probe};
use crate::fields::{Location, Seconds, opt_path, path, resolve, with_base_dir};
use crate::id::SessionId;
use crate::journal::JournalConfig;
use crate::volume::ProfilePath;
use crate::webhook::{WebhookConfig, WebhookDelivery};

pub use crate::fields::AppUrl;

/// The whole `vigil.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was read from (absolute); empty for snippets parsed
    /// without a file.
    #[serde(skip)]
    pub file: PathBuf,
    /// Vigil's own state: profiles live in `data_dir/profiles/<session>`.
    #[serde(default = "default_data_dir", deserialize_with = "path")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[journal]`: the decision journal in `data_dir/journal`.
    #[serde(default)]
    pub journal: JournalConfig,
    /// `[browser]`: how Chromium is started, shared by every session.
    #[serde(default)]
    pub browser: BrowserSettings,
    #[serde(default)]
    pub service: ServiceConfig,
    /// `[api]`: the admin API served by `vigil run`.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[fixture]`: when present, `vigil run` also serves the fixture web
    /// app (a stand-in for a real web app, for trying Vigil out).
    #[serde(default)]
    pub fixture: Option<FixtureConfig>,
    #[serde(default, rename = "session")]
    pub sessions: Vec<SessionConfig>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default, rename = "webhooks")]
    pub webhook_delivery: WebhookDelivery,
}

/// `[service]`: how `vigil run` drives its sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Browsers started at the same time; the rest wait their turn, so a
    /// host with many sessions does not start them all in one CPU spike.
    pub max_concurrent_launches: usize,
    /// SIGTERM / SIGINT: close every browser gracefully, take the shutdown
    /// backups, and exit within this many seconds whatever is left.
    pub shutdown_timeout_secs: u64,
    /// How often each session's page is probed (sessions may override).
    pub probe_interval_secs: Seconds,
    /// How long a launched page may take to show connected or needs-login
    /// before the session counts as degraded (sessions may override).
    pub connect_timeout_secs: Seconds,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_concurrent_launches: 2,
            shutdown_timeout_secs: 90,
            probe_interval_secs: std::time::Duration::from_secs(10).into(),
            connect_timeout_secs: std::time::Duration::from_secs(60).into(),
        }
    }
}

/// `[api]`: where `vigil run` serves the admin API, `/metrics` and the
/// health checks, and where its bearer token comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address and port. A non-loopback address needs a token
    /// (`VIGIL_API_TOKEN` or `token_file`).
    pub listen: std::net::SocketAddr,
    /// A file holding the bearer token (`VIGIL_API_TOKEN` wins over it).
    /// Without either, on a loopback address, `vigil run` makes a random
    /// token at each start and writes it to `data_dir/api-token`.
    #[serde(deserialize_with = "opt_path")]
    pub token_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8517)),
            token_file: None,
        }
    }
}

/// `[fixture]`: the bundled stand-in web app (see README "The fixture app").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureConfig {
    /// Where it listens; keep the port fixed (Chromium files the page's
    /// IndexedDB under its origin, port included).
    pub listen: std::net::SocketAddr,
    /// Mark a page idle after this many seconds without user input.
    #[serde(default)]
    pub idle_after_secs: Option<Seconds>,
    /// Pair every login code by itself after this many seconds, as if a
    /// phone scanned it.
    #[serde(default)]
    pub auto_pair_after_secs: Option<Seconds>,
    /// Keep paired devices here across restarts.
    #[serde(default, deserialize_with = "opt_path")]
    pub state_file: Option<PathBuf>,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of policy files (watched).
    #[serde(deserialize_with = "path")]
    pub dir: PathBuf,
    /// Compiled plugins are kept here between starts (default
    /// `data_dir/policy-cache`).
    #[serde(deserialize_with = "opt_path")]
    pub cache_dir: Option<PathBuf>,
}

/// One `[[session]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub id: SessionId,
    /// The web app this session keeps open.
    pub url: AppUrl,
    /// Overrides `[backup] critical` for this session's web app.
    #[serde(default)]
    pub critical: Option<Vec<ProfilePath>>,
    /// How to tell the page's state (see README "The probe"). Default: the
    /// page counts as connected once it has loaded.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// Overrides `[service] probe_interval_secs`.
    #[serde(default)]
    pub probe_interval_secs: Option<Seconds>,
    /// Overrides `[service] connect_timeout_secs`.
    #[serde(default)]
    pub connect_timeout_secs: Option<Seconds>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: resolve(Path::new("policies")),
            cache_dir: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    resolve(Path::new("data"))
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{}: cannot read the config: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message} (in `{snippet}`)")]
    Invalid {
        at: Location,
        message: String,
        /// The offending line, trimmed.
        snippet: String,
    },
}

impl Config {
    /// Reads and checks a config file. Relative paths inside it are resolved
    /// against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &file, &base)
    }

    /// Parses a config held in memory, as if it were the file `file`, with
    /// relative paths resolved against `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Self, ConfigError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let at = Location::of(file, text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                snippet: text
                    .lines()
                    .nth(at.line - 1)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                at,
                message,
            }
        };
        let mut config: Config = with_base_dir(base, || toml::from_str(text))
            .map_err(|e| invalid(e.span(), e.message().to_string()))?;
        config.file = file.to_path_buf();
        if let Some((span, message)) = duplicate_session(text) {
            return Err(invalid(Some(span), message));
        }
        Ok(config)
    }

    pub fn session(&self, id: &SessionId) -> Option<&SessionConfig> {
        self.sessions.iter().find(|s| &s.id == id)
    }

    /// Where the profile of `session` lives.
    pub fn profile_dir(&self, session: &SessionId) -> PathBuf {
        self.data_dir.join("profiles").join(session.as_str())
    }

    /// Where compiled plugins are cached.
    pub fn policy_cache_dir(&self) -> PathBuf {
        self.policy
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("policy-cache"))
    }

    /// The critical paths of `session`'s profile: its own list or the
    /// `[backup]` one.
    pub fn critical_files(&self, session: &SessionId) -> Vec<ProfilePath> {
        self.session(session)
            .and_then(|s| s.critical.clone())
            .unwrap_or_else(|| self.backup.critical.clone())
    }
}

/// Ids are checked one by one by `SessionId`; uniqueness needs the whole
/// list, so it is checked on a second, tiny pass that keeps each id's span.
fn duplicate_session(text: &str) -> Option<(std::ops::Range<usize>, String)> {
    #[derive(Deserialize)]
    struct Ids {
        #[serde(default)]
        session: Vec<Id>,
    }
    #[derive(Deserialize)]
    struct Id {
        id: toml::Spanned<String>,
    }
    let ids: Ids = toml::from_str(text).ok()?;
    for (i, later) in ids.session.iter().enumerate() {
        if let Some(first) = ids.session[..i]
            .iter()
            .find(|s| s.id.get_ref() == later.id.get_ref())
        {
            let line = Location::of(Path::new(""), text, first.id.span().start).line;
            return Some((
                later.id.span(),
                format!(
                    "session id {:?} is already used on line {line}",
                    later.id.get_ref()
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backup::{BackupMode, DEFAULT_CRITICAL, StoreUrl};
    use crate::webhook::{EventPattern, SecretSource};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("/srv/vigil/vigil.toml"),
            Path::new("/srv/vigil"),
        )
    }

    fn error_at(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                at,
                message,
                snippet,
            }) => {
                assert!(!snippet.is_empty());
                assert_eq!(at.file, Path::new("/srv/vigil/vigil.toml"));
                (at.line, at.column, message)
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn the_seed_example_reads_with_defaults_filled_in() {
        let c = parse(
            r#"
data_dir = "./data"
[backup]
store = "file://./backups"
schedule = "0 0 2 * * *"
keep_days = 30
keep_last = 3
[[session]]
id = "main"
url = "https://web.whatsapp.com"
"#,
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/vigil/data"));
        assert_eq!(c.backup.store, StoreUrl::File("/srv/vigil/backups".into()));
        assert_eq!(c.policy.dir, Path::new("/srv/vigil/policies"));
        assert_eq!(c.backup.mode, BackupMode::Quiesce);
        assert_eq!(c.sessions.len(), 1);
        let main = SessionId::new("main").unwrap();
        assert_eq!(
            c.profile_dir(&main),
            Path::new("/srv/vigil/data/profiles/main")
        );
        assert_eq!(
            c.critical_files(&main)
                .iter()
                .map(ProfilePath::as_str)
                .collect::<Vec<_>>(),
            DEFAULT_CRITICAL
        );
    }

    #[test]
    fn an_empty_file_is_a_valid_config() {
        let c = parse("").unwrap();
        assert_eq!(c.backup.store, StoreUrl::File("/srv/vigil/backups".into()));
        assert_eq!(c.backup.keep_last.get(), 3);
    }

    #[test]
    fn unknown_fields_are_named_with_their_position() {
        let (line, column, message) = error_at("[backup]\nkeep_dayz = 3\n");
        assert_eq!((line, column), (2, 1));
        assert!(message.contains("keep_dayz"), "{message}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let (line, column, message) = error_at("[backup]\nschedule = \"0 2 * * *\"\n");
        assert_eq!((line, column), (2, 12));
        assert!(message.contains("5 fields"), "{message}");

        let (line, _, message) = error_at("[backup]\nkeep_last = 0\n");
        assert_eq!(line, 2);
        assert!(message.contains("keep_last"), "{message}");

        let (line, _, message) = error_at("[[session]]\nid = \"../x\"\nurl = \"https://a\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("../x"), "{message}");

        let (_, _, message) = error_at("[backup]\nstore = \"ftp://x\"\n");
        assert!(message.contains("ftp"), "{message}");

        let (_, _, message) = error_at("[backup]\nencrypt_to = [\"age1nope\"]\n");
        assert!(message.contains("age1nope"), "{message}");

        let (_, _, message) = error_at("[backup]\ncritical = [\"../etc\"]\n");
        assert!(message.contains("../etc"), "{message}");
    }

    #[test]
    fn duplicate_sessions_name_both_lines() {
        let (line, column, message) = error_at(
            "[[session]]\nid = \"a\"\nurl = \"https://a\"\n[[session]]\nid = \"a\"\nurl = \"https://b\"\n",
        );
        assert_eq!((line, column), (5, 6));
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn s3_options_and_absolute_paths() {
        let c = parse(
            r#"
data_dir = "/var/lib/vigil"
[backup]
store = "s3://bucket/vigil"
identity = "keys/backup.txt"
[backup.s3]
endpoint = "http://127.0.0.1:9000"
path_style = true
allow_http = true
"#,
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/vigil"));
        assert!(
            matches!(c.backup.store, StoreUrl::Remote(ref u) if u.as_str() == "s3://bucket/vigil")
        );
        assert_eq!(
            c.backup.identity.as_deref(),
            Some(Path::new("/srv/vigil/keys/backup.txt"))
        );
        assert!(c.backup.s3.path_style && c.backup.s3.allow_http);
    }

    fn invalid(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_webhook_section_reads_with_defaults() {
        let config = parse(
            r#"
[[webhook]]
url = "https://hooks.example.com/vigil"
secret_file = "webhook.secret"
events = ["session.*", "backup.failed"]

[[webhook]]
name = "pager"
url = "http://127.0.0.1:9000/"
secret_env = "PAGER_SECRET"
"#,
        )
        .unwrap();
        let [first, second] = &config.webhooks[..] else {
            panic!("two webhooks: {:?}", config.webhooks)
        };
        assert_eq!(
            first.secret,
            SecretSource::File("/srv/vigil/webhook.secret".into())
        );
        assert_eq!(
            first
                .events
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["session.*", "backup.failed"]
        );
        assert_eq!(second.name.as_deref(), Some("pager"));
        assert_eq!(second.secret, SecretSource::Env("PAGER_SECRET".into()));
        assert_eq!(second.events, EventPattern::every_event());
        let d = &config.webhook_delivery;
        assert_eq!(d.queue_capacity.get(), 1000);
        assert_eq!(d.max_attempts.get(), 10);
        assert_eq!(d.backoff_base, Duration::from_secs(1));
        assert_eq!(d.backoff_max, Duration::from_secs(60));
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert_eq!(d.flush_timeout, Duration::from_secs(5));
    }

    #[test]
    fn delivery_settings_take_seconds_with_fractions() {
        let config = parse(
            r#"
[webhooks]
queue_capacity = 50
max_attempts = 3
backoff_base_secs = 0.25
backoff_max_secs = 90
timeout_secs = 2
flush_timeout_secs = 20
"#,
        )
        .unwrap();
        let d = &config.webhook_delivery;
        assert_eq!(d.queue_capacity.get(), 50);
        assert_eq!(d.backoff_base, Duration::from_millis(250));
        assert_eq!(d.backoff_max, Duration::from_secs(90));
        assert_eq!(d.flush_timeout, Duration::from_secs(20));
    }

    #[test]
    fn mistakes_name_the_line_and_the_field() {
        let err = invalid("[[webhook]]\nurl = \"https://h/x\"\n");
        assert!(err.contains("set secret_file or secret_env"), "{err}");
        assert!(err.contains("https://h/x"), "{err}");
        let err = invalid(
            "[[webhook]]\nurl = \"https://h/x\"\nsecret_env = \"A\"\nsecret_file = \"f\"\n",
        );
        assert!(err.contains("only one of"), "{err}");
        let err = invalid(
            "[[webhook]]\nurl = \"https://h/x\"\nsecret_env = \"A\"\nevents = [\"backup.faild\"]\n",
        );
        assert!(err.contains("vigil.toml:4:"), "{err}");
        assert!(err.contains("unknown event \"backup.faild\""), "{err}");
        let err = invalid("[[webhook]]\nurl = \"ftp://h/x\"\nsecret_env = \"A\"\n");
        assert!(err.contains("vigil.toml:2:"), "{err}");
        let err = invalid("[webhooks]\nqueue_capacity = 0\n");
        assert!(err.contains("vigil.toml:2:"), "{err}");
        let err = invalid("[webhooks]\ntimeout_secs = \"10s\"\n");
        assert!(err.contains("vigil.toml:2:"), "{err}");
        let err = invalid("[webhooks]\nbackoff_base_secs = 0\n");
        assert!(err.contains("positive number of seconds, got 0"), "{err}");
        let err = invalid("[webhooks]\nretries = 3\n");
        assert!(err.contains("retries"), "{err}");
    }
}
