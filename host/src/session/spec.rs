//! What one session is, as plain data taken from its `[[session]]` (in
//! `vigil.toml` or added at runtime) and the host's config: its page, its
//! probe, its profile, and how often to look at it. Nothing here touches
//! the machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::browser::{BrowserSettings, Probe};
use crate::config::{BackupMode, Config, ProfilePath, SessionConfig};
use crate::id::SessionId;

/// The probe a session gets when its config names none: a page that has
/// loaded counts as connected. Real apps should set a probe that can tell
/// a login screen apart (see `examples/whatsapp.toml`).
pub const DEFAULT_PROBE: &str =
    "document.readyState === 'complete' ? 'connected' : 'loading: ' + document.readyState";

/// Everything a session's task needs to know about it.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub id: SessionId,
    pub url: String,
    pub probe: Probe,
    pub profile_dir: PathBuf,
    pub critical: Vec<ProfilePath>,
    pub browser: BrowserSettings,
    pub probe_interval: Duration,
    pub connect_timeout: Duration,
    pub backup_mode: BackupMode,
    pub backup_after_login: bool,
    pub backup_on_shutdown: bool,
}

impl SessionSpec {
    /// The spec of `session` as configured in `config`.
    pub fn from_config(config: &Config, session: &SessionConfig) -> Self {
        Self {
            id: session.id.clone(),
            url: session.url.as_str().to_string(),
            probe: session
                .probe
                .clone()
                .unwrap_or_else(|| Probe::Script(DEFAULT_PROBE.to_string())),
            profile_dir: config.profile_dir(&session.id),
            critical: session
                .critical
                .clone()
                .unwrap_or_else(|| config.backup.critical.clone()),
            browser: config.browser.clone(),
            probe_interval: session
                .probe_interval_secs
                .unwrap_or(config.service.probe_interval_secs)
                .get(),
            connect_timeout: session
                .connect_timeout_secs
                .unwrap_or(config.service.connect_timeout_secs)
                .get(),
            backup_mode: config.backup.mode,
            backup_after_login: config.backup.after_login,
            backup_on_shutdown: config.backup.on_shutdown,
        }
    }

    /// Specs of every configured session, in config order.
    pub fn all(config: &Config) -> Vec<Self> {
        config
            .sessions
            .iter()
            .map(|s| Self::from_config(config, s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(
            text,
            Path::new("/srv/vigil/vigil.toml"),
            Path::new("/srv/vigil"),
        )
        .unwrap()
    }

    #[test]
    fn sessions_inherit_service_defaults_and_may_override_them() {
        let cfg = config(
            r##"
            [service]
            probe_interval_secs = 5
            [[session]]
            id = "main"
            url = "http://127.0.0.1:8600/"
            [[session]]
            id = "fast"
            url = "http://127.0.0.1:8600/"
            probe_interval_secs = 0.5
            connect_timeout_secs = 3
            probe = { connected = "#connected", needs_login = "#login" }
            "##,
        );
        let specs = SessionSpec::all(&cfg);
        assert_eq!(specs[0].probe_interval, Duration::from_secs(5));
        assert_eq!(specs[0].connect_timeout, Duration::from_secs(60));
        assert_eq!(specs[0].probe, Probe::Script(DEFAULT_PROBE.into()));
        assert_eq!(
            specs[0].profile_dir,
            Path::new("/srv/vigil/data/profiles/main")
        );
        assert_eq!(specs[1].probe_interval, Duration::from_millis(500));
        assert_eq!(specs[1].connect_timeout, Duration::from_secs(3));
        assert!(matches!(specs[1].probe, Probe::Selectors { .. }));
    }

    #[test]
    fn a_zero_probe_interval_is_refused_with_its_line() {
        let err = Config::parse(
            "[service]\nprobe_interval_secs = 0\n",
            Path::new("vigil.toml"),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("vigil.toml:2:"), "{err}");
        assert!(err.contains("positive number of seconds"), "{err}");
    }
}
