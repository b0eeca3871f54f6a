//! How Chromium is started: the `[browser]` settings an operator may change,
//! and the command line built from them. Pure: nothing here spawns or reads
//! the machine, so the flags are tested as plain data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::identity::Identity;

/// Browser settings shared by every session (the `[browser]` table of
/// `vigil.toml`). Every field has a default; durations are in seconds.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserSettings {
    /// The Chromium binary. A bare name is looked up on `PATH`.
    pub executable: PathBuf,
    /// The window (and so the page and screenshot) size in CSS pixels.
    pub window_width: u32,
    pub window_height: u32,
    /// Add the flags that cut Chromium's memory (see [`LEAN_FLAGS`] and
    /// docs/BENCHMARKS.md). Turn off if a web app misbehaves with them.
    pub lean: bool,
    /// More command-line flags, added last. `--disable-features=`,
    /// `--enable-features=` and `--js-flags=` are merged with Vigil's own
    /// instead of replacing them.
    pub extra_args: Vec<String>,
    /// From spawning Chromium to its DevTools endpoint answering.
    #[serde(rename = "launch_timeout_secs", with = "secs")]
    pub launch_timeout: Duration,
    /// Opening or reloading the page, until its `load` event.
    #[serde(rename = "load_timeout_secs", with = "secs")]
    pub load_timeout: Duration,
    /// Any other DevTools command (probe, input, screenshot).
    #[serde(rename = "command_timeout_secs", with = "secs")]
    pub command_timeout: Duration,
    /// A graceful close waits this long for Chromium to flush its profile
    /// and exit before killing it.
    #[serde(rename = "close_timeout_secs", with = "secs")]
    pub close_timeout: Duration,
    /// Who the browser says it is: set per session (`[[session]]`
    /// user_agent, locale, timezone, proxy), never in `[browser]`.
    #[serde(skip)]
    pub identity: Identity,
}

impl Default for BrowserSettings {
    fn default() -> Self {
        Self {
            executable: PathBuf::from("chromium"),
            window_width: 1280,
            window_height: 800,
            lean: true,
            extra_args: Vec::new(),
            launch_timeout: Duration::from_secs(20),
            load_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            identity: Identity::default(),
        }
    }
}

/// Flags every session gets: headless, a fixed window, and nothing that
/// talks to the network on its own (this service's hosts may have no
/// internet; the closed network here refuses such connections) or waits
/// for a person (first-run, default-browser, sync).
pub const BASE_FLAGS: &[&str] = &[
    "--headless",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
    // No start tab (nor its New Tab page): Vigil opens the session's own.
    "--no-startup-window",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--no-pings",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--mute-audio",
    "--hide-scrollbars",
    // A kept-alive page must run its timers and sockets at full speed even
    // though no one looks at it.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=Translate,MediaRouter,OptimizationHints,OptimizationGuideModelDownloading,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
];

/// Flags that cut memory with the fixture app and a one-page session still
/// working; chosen by the measurements in docs/BENCHMARKS.md.
pub const LEAN_FLAGS: &[&str] = &[
    "--renderer-process-limit=1",
    // The (software) GPU process folded into the browser process.
    "--in-process-gpu",
    // No spare renderer kept warm for a next tab that never comes; no
    // cached previous pages; and no hidden omnibox pop-ups, which headless
    // Chromium preloads as two WebUI pages in their own renderer.
    "--disable-features=SpareRendererForSitePerProcess,BackForwardCache,WebUIOmniboxPopup,WebUIOmniboxAimPopup",
    // The network service inside the browser process, as on Android (the
    // older `NetworkServiceInProcess` no longer does this on desktop).
    "--enable-features=NetworkServiceInProcess2",
];

/// The full command line for one session, without the executable: Vigil's
/// flags, the session's identity, then `extra_args` (so an operator's flag
/// comes last and wins).
pub fn chromium_args(settings: &BrowserSettings, profile: &Path, as_root: bool) -> Vec<String> {
    let mut args = Args::default();
    for flag in BASE_FLAGS {
        args.push(flag);
    }
    // Chromium's sandbox cannot start as root; elsewhere keep it.
    if as_root {
        args.push("--no-sandbox");
    }
    if settings.lean {
        for flag in LEAN_FLAGS {
            args.push(flag);
        }
    }
    args.push(&format!(
        "--window-size={},{}",
        settings.window_width, settings.window_height
    ));
    args.push(&format!("--user-data-dir={}", profile.display()));
    for flag in settings.identity.flags() {
        args.push(&flag);
    }
    for flag in &settings.extra_args {
        args.push(flag);
    }
    args.into_vec()
}

/// Flags whose repeated values Chromium would not merge (the last one
/// wins), merged here so that an extra `--disable-features=X` adds X.
const LIST_FLAGS: &[(&str, &str)] = &[
    ("--disable-features=", ","),
    ("--enable-features=", ","),
    ("--js-flags=", " "),
];

#[derive(Default)]
struct Args {
    plain: Vec<String>,
    lists: Vec<(&'static str, Vec<String>)>,
}

impl Args {
    fn push(&mut self, flag: &str) {
        for (prefix, sep) in LIST_FLAGS {
            if let Some(values) = flag.strip_prefix(prefix) {
                let slot = match self.lists.iter().position(|(p, _)| p == prefix) {
                    Some(i) => &mut self.lists[i].1,
                    None => {
                        self.lists.push((prefix, Vec::new()));
                        &mut self.lists.last_mut().expect("just pushed").1
                    }
                };
                for v in values.split(sep).filter(|v| !v.is_empty()) {
                    if !slot.iter().any(|have| have == v) {
                        slot.push(v.to_owned());
                    }
                }
                return;
            }
        }
        self.plain.push(flag.to_owned());
    }

    fn into_vec(self) -> Vec<String> {
        let mut out = self.plain;
        for (prefix, values) in self.lists {
            let sep = LIST_FLAGS
                .iter()
                .find(|(p, _)| *p == prefix)
                .map_or(",", |(_, s)| s);
            out.push(format!("{prefix}{}", values.join(sep)));
        }
        out
    }
}

mod secs {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) use crate::fields::secs as deserialize;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(args: &[String], prefix: &str) -> usize {
        args.iter().filter(|a| a.starts_with(prefix)).count()
    }

    #[test]
    fn the_sandbox_is_dropped_only_for_root() {
        let s = BrowserSettings::default();
        let p = Path::new("profiles/main");
        assert!(chromium_args(&s, p, true).contains(&"--no-sandbox".to_owned()));
        assert!(!chromium_args(&s, p, false).contains(&"--no-sandbox".to_owned()));
    }

    #[test]
    fn feature_lists_are_merged_into_one_flag_each() {
        let s = BrowserSettings {
            extra_args: vec![
                "--disable-features=Foo,Translate".into(),
                "--js-flags=--max-old-space-size=96".into(),
                "--lang=de".into(),
            ],
            ..BrowserSettings::default()
        };
        let args = chromium_args(&s, Path::new("p"), false);
        assert_eq!(count(&args, "--disable-features="), 1);
        let disabled = args
            .iter()
            .find_map(|a| a.strip_prefix("--disable-features="))
            .unwrap();
        let disabled: Vec<_> = disabled.split(',').collect();
        for want in ["Translate", "Foo", "SpareRendererForSitePerProcess"] {
            assert_eq!(disabled.iter().filter(|d| **d == want).count(), 1, "{want}");
        }
        assert!(args.contains(&"--js-flags=--max-old-space-size=96".to_owned()));
        assert!(args.contains(&"--lang=de".to_owned()));
        assert!(args.contains(&"--user-data-dir=p".to_owned()));
        assert!(args.contains(&"--window-size=1280,800".to_owned()));
    }

    #[test]
    fn lean_flags_can_be_turned_off() {
        let s = BrowserSettings {
            lean: false,
            ..BrowserSettings::default()
        };
        let args = chromium_args(&s, Path::new("p"), false);
        assert_eq!(count(&args, "--renderer-process-limit"), 0);
    }

    #[test]
    fn settings_read_from_toml_with_seconds() {
        let s: BrowserSettings = toml::from_str(
            "executable = \"/opt/chromium\"\nlaunch_timeout_secs = 2.5\nlean = false\n",
        )
        .unwrap();
        assert_eq!(s.launch_timeout, Duration::from_millis(2500));
        assert_eq!(s.executable, PathBuf::from("/opt/chromium"));
        assert!(!s.lean);
        assert_eq!(s.window_width, 1280);
        let err = toml::from_str::<BrowserSettings>("close_timeout_secs = -1").unwrap_err();
        assert!(
            err.to_string().contains("positive number of seconds"),
            "{err}"
        );
        let err = toml::from_str::<BrowserSettings>("colour = 1").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
