//! `[backup]` in `vigil.toml`: where backups go, when, how long they are
//! kept, how they are made. Owned here, with the backups it configures;
//! `config` only places the section in the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::fields::{opt_path, resolve};
use crate::volume::ProfilePath;

/// `[backup]`: where backups go, when, how long they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Any object_store URL: `file://`, `s3://`, `gs://`, `az://`,
    /// `memory://`. A relative `file://` path is relative to the config file.
    pub store: StoreUrl,
    /// Six-field cron (seconds first), in UTC.
    pub schedule: CronSchedule,
    /// Backups younger than this are kept (`30`, or `"36h"`).
    #[serde(rename = "keep_days", deserialize_with = "crate::fields::days")]
    pub keep: Duration,
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
    #[serde(
        rename = "orphan_grace_hours",
        deserialize_with = "crate::fields::hours"
    )]
    pub orphan_grace: Duration,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub compression_level: CompressionLevel,
    /// How long a store request may keep being retried before the operation
    /// fails (cloud stores only; `file://` does not retry).
    #[serde(
        rename = "retry_timeout_secs",
        deserialize_with = "crate::fields::secs_or_zero"
    )]
    pub retry_timeout: Duration,
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

/// The profile paths that hold a login in most web apps (IndexedDB and
/// Local Storage), when `[backup] critical` names none.
pub const DEFAULT_CRITICAL: [&str; 2] = ["Default/IndexedDB", "Default/Local Storage"];

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            store: StoreUrl::resolve("file://backups").expect("the default store URL is valid"),
            schedule: "0 0 2 * * *"
                .parse()
                .expect("the default schedule is valid"),
            keep: Duration::from_secs(30 * 86_400),
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
            orphan_grace: Duration::from_secs(24 * 3600),
            compression_level: CompressionLevel(6),
            retry_timeout: Duration::from_secs(60),
            max_retries: 5,
            after_login: true,
            on_shutdown: true,
            s3: S3Options::default(),
        }
    }
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
        crate::fields::parsed(d)
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
        crate::fields::parsed(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
