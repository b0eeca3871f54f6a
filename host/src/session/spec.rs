//! What one session is, as plain data taken from its `[[session]]` (in
//! `vigil.toml` or added at runtime) and the host's config: its page, its
//! probe, its profile, and how often to look at it. Nothing here touches
//! the machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::backup::BackupMode;
use crate::browser::{BrowserSettings, Probe};
use crate::config::{Config, SessionConfig};
use crate::id::SessionId;
use crate::volume::ProfilePath;

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
    /// In a fleet: this host's ownership of the session. The runner drives
    /// the browser only while it holds, restores from its lineage, and
    /// publishes backups through its fence. None on a single host.
    pub tenure: Option<crate::fleet::Tenure>,
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
            browser: browser_settings(config, session),
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
            tenure: None,
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

/// `[browser]` with the session's own window, flags and identity on top.
/// Its extra flags come after the shared ones, so they win where Chromium
/// keeps the last value, and feature lists are merged as for `[browser]`.
fn browser_settings(config: &Config, session: &SessionConfig) -> BrowserSettings {
    let mut browser = config.browser.clone();
    if let Some(window) = session.window {
        browser.window_width = window.width;
        browser.window_height = window.height;
    }
    browser
        .extra_args
        .extend(session.extra_args.iter().cloned());
    browser.identity = session.identity();
    browser
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
    fn each_session_gets_its_own_identity_window_and_flags() {
        let cfg = config(
            r##"
            [browser]
            extra_args = ["--disable-features=Foo", "--js-flags=--max-old-space-size=96"]
            [[session]]
            id = "berlin"
            url = "http://127.0.0.1:8600/"
            user_agent = "Mozilla/5.0 (Test) Berlin/1.0"
            locale = "de-DE"
            timezone = "Europe/Berlin"
            proxy = "http://proxy.internal:3128"
            proxy_credentials_file = "secrets/proxy"
            extra_args = ["--disable-features=Bar", "--proxy-bypass-list=<-loopback>"]
            window = { width = 1024, height = 700 }
            [[session]]
            id = "plain"
            url = "http://127.0.0.1:8600/"
            "##,
        );
        let specs = SessionSpec::all(&cfg);
        let berlin = &specs[0].browser;
        assert_eq!((berlin.window_width, berlin.window_height), (1024, 700));
        let id = &berlin.identity;
        assert_eq!(id.locale.as_ref().unwrap().as_str(), "de-DE");
        assert_eq!(id.timezone.as_ref().unwrap().as_str(), "Europe/Berlin");
        let proxy = id.proxy.as_ref().unwrap();
        assert_eq!(
            proxy.credentials,
            Some(crate::secret::SecretSource::File(
                "/srv/vigil/secrets/proxy".into()
            ))
        );
        let args = crate::browser::chromium_args(berlin, Path::new("p"), false);
        let disabled = args
            .iter()
            .find_map(|a| a.strip_prefix("--disable-features="))
            .unwrap();
        assert!(disabled.split(',').any(|f| f == "Foo"), "{disabled}");
        assert!(disabled.split(',').any(|f| f == "Bar"), "{disabled}");
        for want in [
            "--user-agent=Mozilla/5.0 (Test) Berlin/1.0",
            "--accept-lang=de-DE",
            "--proxy-server=http://proxy.internal:3128",
            "--proxy-bypass-list=<-loopback>",
            "--js-flags=--max-old-space-size=96",
            "--window-size=1024,700",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        // The session's flags come after the shared ones.
        let position = |flag: &str| args.iter().position(|a| a == flag).unwrap();
        assert!(position("--accept-lang=de-DE") < position("--proxy-bypass-list=<-loopback>"));

        let plain = &specs[1].browser;
        assert_eq!(plain.identity, crate::browser::Identity::default());
        assert_eq!((plain.window_width, plain.window_height), (1280, 800));
        assert!(!plain.extra_args.iter().any(|a| a.contains("Bar")));
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
