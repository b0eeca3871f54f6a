//! `vigil.toml` -> typed configuration. Owns the file format, its defaults,
//! the resolution of relative paths (against the config file's folder) and
//! errors that name `file:line:column`. It never opens a store, a profile or
//! a browser: everything here is plain data, testable from a TOML snippet.
//!
//! # Adding a section
//!
//! A section is one struct and one field:
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
//! Path fields take `#[serde(deserialize_with = "crate::config::path")]` (or
//! [`opt_path`]) and come out absolute, resolved against the config file's
//! folder. A value that needs checking gets a type whose `Deserialize`
//! checks it: its error then carries the value's line and column for free.

use std::cell::RefCell;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::id::SessionId;

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
    /// `[browser]`: how Chromium is started, shared by every session.
    #[serde(default)]
    pub browser: crate::browser::BrowserSettings,
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
    /// `[fleet]`: when present, this host shares the store with other
    /// hosts and runs only the sessions it owns (see README "Running a
    /// fleet").
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetConfig>,
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
            probe_interval_secs: Seconds(std::time::Duration::from_secs(10)),
            connect_timeout_secs: Seconds(std::time::Duration::from_secs(60)),
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

/// `[backup]`: where backups go, when, how long they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Any object_store URL: `file://`, `s3://`, `gs://`, `az://`,
    /// `memory://`. A relative `file://` path is relative to the config file.
    pub store: StoreUrl,
    /// Six-field cron (seconds first), in UTC.
    pub schedule: CronSchedule,
    /// Backups younger than this are kept.
    pub keep_days: u32,
    /// Never fewer than this many good backups per session, whatever their age.
    pub keep_last: KeepLast,
    pub mode: BackupMode,
    /// `age` recipients (`age1...`); when set, archives are encrypted before
    /// they leave the host.
    pub encrypt_to: Vec<AgeRecipient>,
    /// An `age` identity file, needed to restore encrypted backups.
    #[serde(deserialize_with = "opt_path")]
    pub identity: Option<PathBuf>,
    /// Extra exclusions, on top of the built-in ones unless
    /// `default_excludes = false`. A pattern without `/` matches a file or
    /// folder name at any depth (`*` and `?` allowed); with `/` it matches a
    /// path from the profile's top (`Default/Sessions`).
    pub exclude: Vec<String>,
    pub default_excludes: bool,
    /// Paths inside a profile that hold the login. A profile missing one of
    /// them (or with it empty) is not backed up and not restored.
    pub critical: Vec<ProfilePath>,
    /// An archive with no manifest (an interrupted upload) is deleted by
    /// pruning once it is older than this.
    pub orphan_grace_hours: u32,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub compression_level: CompressionLevel,
    /// How long a store request may keep being retried before the operation
    /// fails (cloud stores only; `file://` does not retry).
    pub retry_timeout_secs: u64,
    pub max_retries: usize,
    /// Back up a session once it reaches connected after a new login (or
    /// when it has no backup yet), rather than waiting for the schedule.
    pub after_login: bool,
    /// Back up every connected session when `vigil run` shuts down.
    pub on_shutdown: bool,
    pub s3: S3Options,
}

/// `[backup.s3]`: settings for S3-compatible servers. Credentials are not
/// here: they come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...) as object_store reads
/// them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Options {
    /// `http://127.0.0.1:9000` for a local server; unset for AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `bucket` in the path rather than the host name (most self-hosted servers).
    pub path_style: bool,
    /// Allow a plain-`http://` endpoint.
    pub allow_http: bool,
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
    pub probe: Option<crate::browser::Probe>,
    /// Overrides `[service] probe_interval_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_secs: Option<Seconds>,
    /// Overrides `[service] connect_timeout_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<Seconds>,
    /// In a fleet: the hosts it may run on (globs on host ids); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<crate::fleet::HostPattern>,
}

/// One `[[webhook]]`: a receiver of signed event notifications. Its secret
/// is read when the webhooks start (`crate::webhook::Webhooks::start`), so
/// a missing file or variable is reported then, with this webhook's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WebhookFields")]
pub struct WebhookConfig {
    /// Names it in logs and metrics; default: the URL's host, port and path.
    pub name: Option<String>,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: AppUrl,
    /// The HMAC-SHA256 key receivers check signatures with.
    pub secret: SecretSource,
    /// Which events it receives; default every one.
    pub events: Vec<crate::webhook::EventPattern>,
}

/// Where a webhook's secret comes from; never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `secret_file`: the file's content, without its trailing newline.
    File(PathBuf),
    /// `secret_env`: an environment variable's value.
    Env(String),
}

/// `[[webhook]]` as written, checked into a [`WebhookConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFields {
    #[serde(default)]
    name: Option<String>,
    url: AppUrl,
    #[serde(default, deserialize_with = "opt_path")]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default = "crate::webhook::EventPattern::every_event")]
    events: Vec<crate::webhook::EventPattern>,
}

impl TryFrom<WebhookFields> for WebhookConfig {
    type Error = String;
    fn try_from(f: WebhookFields) -> Result<Self, String> {
        let secret = match (f.secret_file, f.secret_env) {
            (Some(file), None) => SecretSource::File(file),
            (None, Some(var)) if !var.is_empty() => SecretSource::Env(var),
            (None, Some(_)) => return Err(format!("webhook {}: secret_env is empty", f.url)),
            (None, None) => {
                return Err(format!(
                    "webhook {}: set secret_file or secret_env (the key its signatures are made with)",
                    f.url
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "webhook {}: set only one of secret_file and secret_env",
                    f.url
                ));
            }
        };
        if f.events.is_empty() {
            return Err(format!(
                "webhook {}: events is empty; leave it out to receive every event",
                f.url
            ));
        }
        if f.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(format!("webhook {}: name is empty", f.url));
        }
        Ok(Self {
            name: f.name,
            url: f.url,
            secret,
            events: f.events,
        })
    }
}

/// `[webhooks]`: how events reach every `[[webhook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDelivery {
    /// Events waiting per webhook; when full, the oldest is dropped.
    pub queue_capacity: std::num::NonZeroUsize,
    /// Tries per event, the first included, before it is given up.
    pub max_attempts: std::num::NonZeroU32,
    /// The wait after the first failed try; it doubles after each one
    /// (with jitter) up to `backoff_max_secs`.
    #[serde(rename = "backoff_base_secs", deserialize_with = "secs")]
    pub backoff_base: Duration,
    #[serde(rename = "backoff_max_secs", deserialize_with = "secs")]
    pub backoff_max: Duration,
    /// A request (connect, send, answer) taking longer has failed.
    #[serde(rename = "timeout_secs", deserialize_with = "secs")]
    pub timeout: Duration,
    /// On shutdown, how long queued events may still be delivered.
    #[serde(rename = "flush_timeout_secs", deserialize_with = "secs")]
    pub flush_timeout: Duration,
}

impl Default for WebhookDelivery {
    fn default() -> Self {
        Self {
            queue_capacity: std::num::NonZeroUsize::new(1000).expect("non-zero"),
            max_attempts: std::num::NonZeroU32::new(10).expect("non-zero"),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// How a backup gets a consistent profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    /// Close the browser first (through the caller's hook), archive, relaunch.
    #[default]
    Quiesce,
    /// Archive while the browser runs: no downtime, but LevelDB files may be
    /// caught mid-write.
    Live,
}

const DEFAULT_CRITICAL: [&str; 2] = ["Default/IndexedDB", "Default/Local Storage"];

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            store: StoreUrl::resolve("file://backups").expect("the default store URL is valid"),
            schedule: "0 0 2 * * *"
                .parse()
                .expect("the default schedule is valid"),
            keep_days: 30,
            keep_last: KeepLast(3),
            mode: BackupMode::Quiesce,
            encrypt_to: Vec::new(),
            identity: None,
            exclude: Vec::new(),
            default_excludes: true,
            critical: DEFAULT_CRITICAL
                .iter()
                .map(|p| p.parse().expect("built-in critical paths are valid"))
                .collect(),
            orphan_grace_hours: 24,
            compression_level: CompressionLevel(6),
            retry_timeout_secs: 60,
            max_retries: 5,
            after_login: true,
            on_shutdown: true,
            s3: S3Options::default(),
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
    #[error("{}:{line}:{column}: {message} (in `{snippet}`)", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
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
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: file.to_path_buf(),
                line,
                column,
                message,
                snippet: text
                    .lines()
                    .nth(line - 1)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            }
        };
        let mut config: Config = with_base_dir(base, || toml::from_str(text))
            .map_err(|e| invalid(e.span(), e.message().to_string()))?;
        config.file = file.to_path_buf();
        if let Some((span, message)) = duplicate_session(text) {
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
            let (line, _) = line_column(text, first.id.span().start);
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

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

thread_local! {
    /// The folder relative paths are resolved against while a config is
    /// being deserialized. A thread-local rather than a parameter so that a
    /// section is a plain `Deserialize` struct (see the module docs).
    static BASE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn with_base_dir<T>(base: &Path, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<PathBuf>);
    impl Drop for Reset {
        fn drop(&mut self) {
            BASE_DIR.with(|b| *b.borrow_mut() = self.0.take());
        }
    }
    let previous = BASE_DIR.with(|b| b.borrow_mut().replace(base.to_path_buf()));
    let _reset = Reset(previous);
    f()
}

/// `p` made absolute against the config file's folder (or the current
/// directory outside of [`Config::parse`]).
fn resolve(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let base = BASE_DIR
        .with(|b| b.borrow().clone())
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    normalize(&base.join(p))
}

/// Drops `.` and folds `..` lexically, so logs show `/srv/vigil/data`
/// rather than `/srv/vigil/./data`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A positive number of seconds (`10`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(std::time::Duration);

impl Seconds {
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl serde::Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        if secs.is_nan() || secs <= 0.0 {
            return Err(serde::de::Error::custom(format!(
                "expected a positive number of seconds, got {secs}"
            )));
        }
        std::time::Duration::try_from_secs_f64(secs)
            .map(Seconds)
            .map_err(|_| serde::de::Error::custom(format!("{secs} seconds is too long")))
    }
}

/// `deserialize_with` for a path resolved against the config file's folder.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    Ok(resolve(&p))
}

/// `deserialize_with` for a positive number of seconds (`10`, `0.25`).
pub(crate) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{secs} is not a positive number of seconds"))
        })
}

/// Like [`path`], for an optional field.
pub fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = Option::<PathBuf>::deserialize(d)?;
    Ok(p.map(|p| resolve(&p)))
}

/// Where backups live, checked when the config is read.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local folder (absolute).
    File(PathBuf),
    /// Any other object_store URL (`s3://bucket/prefix`, `memory://`, ...).
    Remote(url::Url),
}

impl StoreUrl {
    fn resolve(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw.strip_prefix("file://") {
            if rest.is_empty() {
                return Err("file:// store URL names no folder".into());
            }
            return Ok(Self::File(resolve(Path::new(rest))));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("store URL {raw:?}: {e}"))?;
        match url.scheme() {
            "memory" => Ok(Self::Remote(url)),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" => {
                if url.host_str().is_none_or(str::is_empty) {
                    Err(format!("store URL {raw:?} names no bucket"))
                } else {
                    Ok(Self::Remote(url))
                }
            }
            other => Err(format!(
                "store URL {raw:?}: unknown scheme {other:?} (expected file://, s3://, gs://, az://, memory://)"
            )),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file://{}", p.display()),
            Self::Remote(u) => write!(f, "{u}"),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for StoreUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::resolve(&raw).map_err(serde::de::Error::custom)
    }
}

/// A six-field cron expression (seconds first), checked with the same
/// parser the scheduler uses.
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule(String);

impl CronSchedule {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The next time this schedule fires after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        cron_parser()
            .parse(&self.0)
            .ok()?
            .find_next_occurrence(&after, false)
            .ok()
    }
}

fn cron_parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
}

impl FromStr for CronSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fields = s.split_whitespace().count();
        if fields != 6 && fields != 7 {
            return Err(format!(
                "schedule {s:?} has {fields} fields; expected 6 with seconds first, e.g. \"0 0 2 * * *\" for 2 AM daily"
            ));
        }
        cron_parser()
            .parse(s)
            .map_err(|e| format!("schedule {s:?}: {e}"))?;
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// At least one: pruning must never delete the newest good backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepLast(u32);

impl KeepLast {
    pub fn new(n: u32) -> Option<Self> {
        (n >= 1).then_some(Self(n))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for KeepLast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        Self::new(n).ok_or_else(|| {
            serde::de::Error::custom(
                "keep_last must be at least 1: the newest good backup is never deleted",
            )
        })
    }
}

/// gzip level 1..=9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionLevel(u32);

impl CompressionLevel {
    pub fn new(level: u32) -> Option<Self> {
        (1..=9).contains(&level).then_some(Self(level))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for CompressionLevel {
    fn default() -> Self {
        Self(6)
    }
}

impl<'de> Deserialize<'de> for CompressionLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        Self::new(n).ok_or_else(|| serde::de::Error::custom("compression_level must be 1 to 9"))
    }
}

/// An `age` X25519 recipient (`age1...`), checked when the config is read.
#[derive(Clone)]
pub struct AgeRecipient(age::x25519::Recipient);

impl AgeRecipient {
    pub fn get(&self) -> &age::x25519::Recipient {
        &self.0
    }
}

impl FromStr for AgeRecipient {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<age::x25519::Recipient>()
            .map(Self)
            .map_err(|e| format!("encrypt_to {s:?} is not an age recipient (age1...): {e}"))
    }
}

impl fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for AgeRecipient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A relative path inside a profile (`Default/IndexedDB`): no absolute
/// paths, no `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ProfilePath(String);

impl ProfilePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl FromStr for ProfilePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = Path::new(s);
        let ok = !s.is_empty()
            && p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if ok {
            Ok(Self(s.trim_end_matches('/').to_string()))
        } else {
            Err(format!(
                "{s:?} must be a relative path inside the profile (no leading '/', no '..')"
            ))
        }
    }
}

impl fmt::Display for ProfilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProfilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The web address a session keeps open (`http` or `https`).
#[derive(Clone, PartialEq, Eq)]
pub struct AppUrl(url::Url);

impl AppUrl {
    pub fn get(&self) -> &url::Url {
        &self.0
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for AppUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("url {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url {s:?} must start with http:// or https://"));
        }
        Ok(Self(url))
    }
}

impl fmt::Debug for AppUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for AppUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for AppUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for AppUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                line,
                column,
                message,
                snippet,
                ..
            }) => {
                assert!(!snippet.is_empty());
                (line, column, message)
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
    fn schedule_knows_its_next_run() {
        let s: CronSchedule = "0 0 2 * * *".parse().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2025-03-01T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            s.next_after(now).unwrap().to_rfc3339(),
            "2025-03-02T02:00:00+00:00"
        );
    }
}
