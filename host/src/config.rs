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
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::backup::{BackupConfig, StoreUrl};
use crate::browser::{BrowserSettings, Probe};
use crate::fields::{Location, Seconds, opt_path, path, resolve, with_base_dir};
use crate::id::SessionId;
use crate::journal::JournalConfig;
use crate::volume::ProfilePath;
use crate::webhook::{WebhookConfig, WebhookDelivery};

pub use crate::fields::AppUrl;
use crate::secret::SecretSource;

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
    /// `[log]`: how log lines are written.
    #[serde(default)]
    pub log: LogConfig,
    /// `[fleet]`: when present, this host shares the store with other
    /// hosts and runs only the sessions it owns (see README "Running a
    /// fleet").
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetConfig>,
}

/// `[log]`: how Vigil writes its log lines (to stderr). `VIGIL_LOG_FORMAT`
/// wins over it; `RUST_LOG` sets the levels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `text` for people, `json` (one object per line) for log collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("log format {s:?} is neither \"text\" nor \"json\"")),
        }
    }
}

impl LogConfig {
    /// The `[log] format` of the config at `path`, read before anything
    /// else so the first log line already has it. `None` when the file or
    /// its `[log]` table cannot be read: the command then loads the config
    /// itself and reports what is wrong with it.
    pub fn peek(path: &Path) -> Option<LogFormat> {
        #[derive(Deserialize)]
        struct LogOnly {
            #[serde(default)]
            log: Option<LogConfig>,
        }
        let text = std::fs::read_to_string(path).ok()?;
        let only: LogOnly = toml::from_str(&text).ok()?;
        only.log.map(|l| l.format)
    }
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
    #[serde(
        rename = "shutdown_timeout_secs",
        deserialize_with = "crate::fields::secs_or_zero"
    )]
    pub shutdown_timeout: Duration,
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
            shutdown_timeout: Duration::from_secs(90),
            probe_interval_secs: Duration::from_secs(10).into(),
            connect_timeout_secs: Duration::from_secs(60).into(),
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
    /// A file holding a second, read-only token (`VIGIL_API_READ_TOKEN`
    /// wins over it): it opens `/metrics` and every GET, and is refused
    /// (403) on anything that changes something. For dashboards and
    /// Prometheus.
    #[serde(deserialize_with = "opt_path")]
    pub read_token_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8517)),
            token_file: None,
            read_token_file: None,
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
    /// Show a new login QR code this often (default 20, like WhatsApp);
    /// the code it replaces can no longer be paired.
    #[serde(default)]
    pub code_rotation_secs: Option<Seconds>,
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

/// One `[[session]]`; also what the fleet's catalog stores for each
/// session, whether it came from a `vigil.toml` or the API.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub id: SessionId,
    /// The web app this session keeps open.
    pub url: AppUrl,
    /// Overrides `[backup] critical` for this session's web app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<Vec<ProfilePath>>,
    /// How to tell the page's state (see README "The probe"). Default: the
    /// page counts as connected once it has loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Overrides `[service] probe_interval_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_secs: Option<Seconds>,
    /// Overrides `[service] connect_timeout_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<Seconds>,
    /// In a fleet: the hosts it may run on (globs on host ids); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<crate::fleet::HostPattern>,
    /// The `User-Agent` the page and its server see; default: Chromium's
    /// own with "HeadlessChrome" made "Chrome".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<crate::browser::UserAgent>,
    /// A language tag (`de-DE`): `navigator.language` and `Accept-Language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<crate::browser::Locale>,
    /// An IANA time zone (`Europe/Berlin`) for the page and its workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<crate::browser::TimeZone>,
    /// `http://`, `https://` or `socks5://` host:port for the page's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<crate::browser::ProxyUrl>,
    /// A file holding the proxy's `user:password`.
    #[serde(
        default,
        deserialize_with = "opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy_credentials_file: Option<PathBuf>,
    /// An environment variable holding the proxy's `user:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_credentials_env: Option<String>,
    /// More Chromium flags for this session, after `[browser] extra_args`
    /// (merged the same way).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Overrides `[browser] window_width` / `window_height`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<crate::browser::WindowSize>,
}

impl SessionConfig {
    /// The browser identity this session asks for. The combination of its
    /// proxy fields was checked by [`Config::parse`].
    pub fn identity(&self) -> crate::browser::Identity {
        let credentials = match (&self.proxy_credentials_file, &self.proxy_credentials_env) {
            (Some(file), _) => Some(SecretSource::File(file.clone())),
            (None, Some(var)) => Some(SecretSource::Env(var.clone())),
            (None, None) => None,
        };
        crate::browser::Identity {
            user_agent: self.user_agent.clone(),
            locale: self.locale.clone(),
            timezone: self.timezone.clone(),
            proxy: self
                .proxy
                .clone()
                .map(|url| crate::browser::Proxy { url, credentials }),
        }
    }
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
        if let Some((span, message)) = duplicate_session(text).or_else(|| proxy_mistake(text)) {
            return Err(invalid(Some(span), message));
        }
        if let Some((span, message)) = fleet_without_shared_store(&config, text) {
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

/// A fleet needs a store whose conditional writes every host sees: a
/// local folder or an in-process memory store fences nothing across
/// machines. Checked on a second pass that finds the `[fleet]` table.
fn fleet_without_shared_store(
    config: &Config,
    text: &str,
) -> Option<(std::ops::Range<usize>, String)> {
    config.fleet.as_ref()?;
    let why = match &config.backup.store {
        StoreUrl::File(_) => "a file:// store is one machine's folder",
        StoreUrl::Remote(url) if url.scheme() == "memory" => {
            "a memory:// store lives in one process"
        }
        StoreUrl::Remote(_) => return None,
    };
    #[derive(Deserialize)]
    struct Fleet {
        fleet: toml::Spanned<toml::Value>,
    }
    let span = toml::from_str::<Fleet>(text)
        .map(|f| f.fleet.span())
        .unwrap_or(0..0);
    Some((
        span,
        format!(
            "[fleet] needs a store every host shares with atomic conditional writes \
             (s3://, gs://, az://), but [backup] store = \"{}\": {why}, so it cannot stop two \
             hosts from running the same session. Remove [fleet] to run one host on it",
            config.backup.store
        ),
    ))
}

/// The field of a `[[session]]` a proxy mistake is shown at.
enum ProxyField {
    CredentialsFile,
    CredentialsEnv,
}

/// The proxy fields of one session make sense together: credentials need
/// a proxy, come from one place, and Chromium cannot give them to a SOCKS
/// proxy. `proxy`: whether one is set, and whether it is SOCKS. One rule
/// for `vigil.toml` and for a session added through the API.
fn proxy_rule(
    id: &str,
    proxy: Option<bool>,
    file: bool,
    env: Option<&str>,
) -> Option<(ProxyField, String)> {
    let credentials = match (file, env) {
        (true, Some(_)) => {
            return Some((
                ProxyField::CredentialsEnv,
                format!(
                    "session {id}: set only one of proxy_credentials_file and proxy_credentials_env"
                ),
            ));
        }
        (true, None) => Some(ProxyField::CredentialsFile),
        (false, Some(env)) if env.trim().is_empty() => {
            return Some((
                ProxyField::CredentialsEnv,
                format!("session {id}: proxy_credentials_env is empty"),
            ));
        }
        (false, Some(_)) => Some(ProxyField::CredentialsEnv),
        (false, None) => None,
    };
    match (proxy, credentials) {
        (None, Some(at)) => Some((
            at,
            format!(
                "session {id}: proxy credentials are set but no proxy: add proxy = \"http://host:port\""
            ),
        )),
        (Some(true), Some(at)) => Some((
            at,
            format!(
                "session {id}: Chromium cannot log in to a SOCKS proxy; use an http:// or https:// proxy for authentication, or a SOCKS proxy that needs none"
            ),
        )),
        _ => None,
    }
}

impl SessionConfig {
    /// What the file's second passes check, for a session that comes
    /// without a file (added through the API): its proxy fields.
    pub fn check(&self) -> Result<(), String> {
        match proxy_rule(
            self.id.as_str(),
            self.proxy.as_ref().map(crate::browser::ProxyUrl::is_socks),
            self.proxy_credentials_file.is_some(),
            self.proxy_credentials_env.as_deref(),
        ) {
            Some((_, message)) => Err(message),
            None => Ok(()),
        }
    }
}

/// [`proxy_rule`] for each `[[session]]` of the file, on a second pass
/// that keeps each value's span.
fn proxy_mistake(text: &str) -> Option<(std::ops::Range<usize>, String)> {
    #[derive(Deserialize)]
    struct Sessions {
        #[serde(default)]
        session: Vec<Proxied>,
    }
    #[derive(Deserialize)]
    struct Proxied {
        id: String,
        proxy: Option<String>,
        proxy_credentials_file: Option<toml::Spanned<String>>,
        proxy_credentials_env: Option<toml::Spanned<String>>,
    }
    let sessions: Sessions = toml::from_str(text).ok()?;
    sessions.session.into_iter().find_map(|s| {
        let socks = s
            .proxy
            .as_deref()
            .map(|p| p.to_ascii_lowercase().starts_with("socks5:"));
        let (at, message) = proxy_rule(
            &s.id,
            socks,
            s.proxy_credentials_file.is_some(),
            s.proxy_credentials_env
                .as_ref()
                .map(|e| e.get_ref().as_str()),
        )?;
        let span = match at {
            ProxyField::CredentialsFile => s.proxy_credentials_file?.span(),
            ProxyField::CredentialsEnv => s.proxy_credentials_env?.span(),
        };
        Some((span, message))
    })
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
    fn every_duration_takes_a_number_in_its_unit_or_a_string() {
        let c = parse(
            r#"
[service]
shutdown_timeout_secs = "2m"
probe_interval_secs = "250ms"
connect_timeout_secs = 45
[backup]
keep_days = "36h"
orphan_grace_hours = 2
retry_timeout_secs = "1m30s"
[browser]
launch_timeout_secs = "5s"
[webhooks]
backoff_base_secs = "500ms"
[fixture]
listen = "127.0.0.1:8600"
idle_after_secs = "1m"
[[session]]
id = "main"
url = "https://a"
probe_interval_secs = "2s"
"#,
        )
        .unwrap();
        assert_eq!(c.service.shutdown_timeout, Duration::from_secs(120));
        assert_eq!(
            c.service.probe_interval_secs.get(),
            Duration::from_millis(250)
        );
        assert_eq!(
            c.service.connect_timeout_secs.get(),
            Duration::from_secs(45)
        );
        assert_eq!(c.backup.keep, Duration::from_secs(36 * 3600));
        assert_eq!(c.backup.orphan_grace, Duration::from_secs(2 * 3600));
        assert_eq!(c.backup.retry_timeout, Duration::from_secs(90));
        assert_eq!(c.browser.launch_timeout, Duration::from_secs(5));
        assert_eq!(c.webhook_delivery.backoff_base, Duration::from_millis(500));
        let idle = c.fixture.unwrap().idle_after_secs.unwrap().get();
        assert_eq!(idle, Duration::from_secs(60));
        assert_eq!(
            c.sessions[0].probe_interval_secs.unwrap().get(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_bad_duration_is_refused_at_its_value() {
        let (line, column, message) = error_at("[service]\nshutdown_timeout_secs = \"2 mins\"\n");
        assert_eq!((line, column), (2, 25));
        assert!(
            message.contains("\"2 mins\": unknown unit \"mins\""),
            "{message}"
        );
        let (line, _, message) = error_at("[backup]\nkeep_days = \"3 weeks\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("3 weeks"), "{message}");
        let (line, _, message) = error_at(
            "[[session]]\nid = \"a\"\nurl = \"https://a\"\nconnect_timeout_secs = \"0s\"\n",
        );
        assert_eq!(line, 4);
        assert!(message.contains("positive number of seconds"), "{message}");
        let (_, _, message) = error_at("[browser]\nload_timeout_secs = \"5 parsecs\"\n");
        assert!(message.contains("unknown unit"), "{message}");
    }

    #[test]
    fn identity_mistakes_name_the_field_at_its_value() {
        const HEAD: &str = "[[session]]\nid = \"a\"\nurl = \"https://a\"\n";
        let at = |line: &str| error_at(&format!("{HEAD}{line}\n"));

        let (l, c, m) = at("timezone = \"Mars/Base\"");
        assert_eq!((l, c), (4, 12));
        assert!(
            m.contains("timezone \"Mars/Base\" is not an IANA time zone"),
            "{m}"
        );
        let (l, _, m) = at("locale = \"de_DE\"");
        assert_eq!(l, 4);
        assert!(m.contains("locale \"de_DE\"") && m.contains("de-DE"), "{m}");
        let (_, _, m) = at("proxy = \"ftp://p:21\"");
        assert!(m.contains("http://, https:// or socks5://"), "{m}");
        let (l, c, m) = at("proxy = \"http://alice:pw@p:3128\"");
        assert_eq!((l, c), (4, 9));
        assert!(
            m.contains("proxy_credentials_env") && !m.contains("pw@"),
            "{m}"
        );
        let (_, _, m) = at("user_agent = \"\"");
        assert!(m.contains("user_agent is empty"), "{m}");
        let (_, _, m) = at("window = { width = 1024 }");
        assert!(m.contains("height"), "{m}");
        let (_, _, m) = at("window = { width = 10, height = 700 }");
        assert!(m.contains("window width 10"), "{m}");

        let (l, c, m) = at("proxy_credentials_env = \"PROXY_AUTH\"");
        assert_eq!((l, c), (4, 25));
        assert!(
            m.contains("session a: proxy credentials are set but no proxy"),
            "{m}"
        );
        let (l, _, m) = at(
            "proxy = \"http://p:3128\"\nproxy_credentials_file = \"f\"\nproxy_credentials_env = \"V\"",
        );
        assert_eq!(l, 6);
        assert!(m.contains("only one of"), "{m}");
        let (l, _, m) = at("proxy = \"socks5://p:1080\"\nproxy_credentials_env = \"V\"");
        assert_eq!(l, 5);
        assert!(m.contains("cannot log in to a SOCKS proxy"), "{m}");
        // Each mistake names the file too.
        let e = parse(&format!("{HEAD}timezone = \"Nowhere\"\n")).unwrap_err();
        assert!(
            e.to_string().starts_with("/srv/vigil/vigil.toml:4:12: "),
            "{e}"
        );
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        assert_eq!(parse("").unwrap().log.format, LogFormat::Text);
        assert_eq!(
            parse("[log]\nformat = \"json\"\n").unwrap().log.format,
            LogFormat::Json
        );
        let (line, _, message) = error_at("[log]\nformat = \"xml\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("xml"), "{message}");
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vigil.toml");
        std::fs::write(&file, "[log]\nformat = \"json\"\n[backup]\nkeep_dayz = 1\n").unwrap();
        // Peeking reads only [log], whatever else is wrong.
        assert_eq!(LogConfig::peek(&file), Some(LogFormat::Json));
        assert_eq!(LogConfig::peek(&dir.path().join("none.toml")), None);
    }

    #[test]
    fn a_fleet_reads_with_defaults_and_pins() {
        let c = parse(
            r#"
[backup]
store = "s3://bucket/vigil"
[fleet]
host_id = "eu-1"
max_sessions = 4
[[session]]
id = "main"
url = "https://a.example"
hosts = ["eu-*"]
"#,
        )
        .unwrap();
        let fleet = c.fleet.unwrap();
        assert_eq!(fleet.host_id.as_str(), "eu-1");
        assert_eq!(fleet.lease, Duration::from_secs(30));
        assert_eq!(fleet.renew, Duration::from_secs(10));
        assert_eq!(fleet.max_sessions, Some(4));
        assert!(c.sessions[0].hosts[0].matches(&fleet.host_id));
    }

    #[test]
    fn a_fleet_on_a_local_or_memory_store_is_refused_at_its_table() {
        for store in ["file://./backups", "memory://"] {
            let (line, _, message) = error_at(&format!(
                "[backup]\nstore = \"{store}\"\n\n[fleet]\nhost_id = \"a\"\n"
            ));
            assert_eq!(line, 4, "{message}");
            assert!(
                message.contains("[fleet] needs a store every host shares"),
                "{message}"
            );
            assert!(
                message.contains(store.trim_end_matches("./backups")),
                "{message}"
            );
        }
    }

    #[test]
    fn fleet_timing_that_cannot_fence_safely_is_refused() {
        let (line, _, message) = error_at(
            "[backup]\nstore = \"s3://b/v\"\n[fleet]\nhost_id = \"a\"\nlease_secs = 20\nrenew_secs = 10\n",
        );
        assert!(line >= 3, "{line}: {message}");
        assert!(message.contains("at least 3 x renew_secs"), "{message}");
        let (_, _, message) = error_at("[fleet]\nhost_id = \"a/b\"\n");
        assert!(message.contains("a/b"), "{message}");
        let (_, _, message) = error_at("[fleet]\nhost_id = \"a\"\nleases = 3\n");
        assert!(message.contains("leases"), "{message}");
    }

    #[test]
    fn a_session_reads_back_the_same_after_the_catalog_writes_it() {
        let c = parse(
            r#"
[[session]]
id = "berlin"
url = "https://shop.example/"
critical = ["Default/IndexedDB"]
probe = { script = "document.body.dataset.state" }
probe_interval_secs = "2.5s"
user_agent = "Mozilla/5.0 (Test) Berlin/1.0"
locale = "de-DE"
timezone = "Europe/Berlin"
proxy = "http://proxy.internal:3128"
proxy_credentials_file = "secrets/proxy"
extra_args = ["--proxy-bypass-list=<-loopback>"]
window = { width = 1024, height = 700 }
"#,
        )
        .unwrap();
        let session = &c.sessions[0];
        let stored = serde_json::to_value(session).unwrap();
        let back: SessionConfig = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(&back, session, "{stored}");
        // Unset fields stay out of the stored form.
        let plain = parse("[[session]]\nid = \"a\"\nurl = \"https://a/\"\n").unwrap();
        let stored = serde_json::to_value(&plain.sessions[0]).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({ "id": "a", "url": "https://a/" })
        );
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
        let err = invalid("[webhooks]\ntimeout_secs = \"10 parsecs\"\n");
        assert!(err.contains("vigil.toml:2:"), "{err}");
        let err = invalid("[webhooks]\nbackoff_base_secs = 0\n");
        assert!(err.contains("positive number of seconds"), "{err}");
        let err = invalid("[webhooks]\nretries = 3\n");
        assert!(err.contains("retries"), "{err}");
    }
}
