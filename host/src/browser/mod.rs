//! One session's Chromium, through chromiumoxide: launch it headless on the
//! session's profile with the session's identity (user agent, language,
//! time zone, proxy and its login), open the session's page, probe what
//! state the page is in, carry out keepalive actions with trusted input,
//! take screenshots, and close it so the profile is flushed.
//!
//! It owns the Chromium process and the tasks that watch it; the process
//! dies with Vigil, even with a `kill -9` (see `process.rs`), and
//! [`stop_orphan`] stops one that an older Vigil left running. It never
//! decides anything about a session (when to reload, restart, restore: the
//! session layer does), never touches the profile's files (the volume does),
//! never imports the policy module, and knows no web app by name. It acts
//! on exactly what it is given: the [`Action`] a policy answered (the
//! mouse goes to the policy's point).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vigil::browser::BrowserError> {
//! use std::time::Duration;
//! use vigil::browser::{Action, Browser, BrowserSettings, Probe};
//! use vigil::id::SessionId;
//!
//! let session = SessionId::new("main").unwrap();
//! let browser = Browser::launch(session, "profiles/main".as_ref(), &BrowserSettings::default()).await?;
//! browser.open("http://127.0.0.1:8088/").await?;
//! let probe = Probe::Script("document.body.dataset.state".into());
//! let outcome = browser.wait_settled(&probe, Duration::from_secs(30)).await?;
//! browser.act(&Action::KeyPress { key: "Shift".into() }).await?;
//! browser.act(&Action::MouseMove { x: 200, y: 200 }).await?;
//! let mut gone = browser.exit_signal();
//! tokio::select! {
//!     why = gone.wait() => println!("browser gone: {why}"),
//!     _ = tokio::time::sleep(Duration::from_secs(60)) => {}
//! }
//! browser.close().await;
//! # Ok(()) }
//! ```

mod action;
mod identity;
mod memory;
mod probe;
mod process;
mod procfs;
mod screencast;
mod settings;
mod user_agent;
pub mod watchdog;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::browser::{
    PermissionDescriptor, PermissionSetting, SetPermissionParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetFocusEmulationEnabledParams, SetIdleOverrideParams, SetLocaleOverrideParams,
};
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
};
use chromiumoxide::cdp::browser_protocol::page::{
    BringToFrontParams, CaptureScreenshotFormat, SetWebLifecycleStateParams,
    SetWebLifecycleStateState,
};
use chromiumoxide::cdp::js_protocol::runtime::{EvaluateParams, EvaluateReturns};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use tokio::task::JoinHandle;

pub use crate::action::Action;
pub use action::{Key, UnknownKey};
pub use identity::{
    CredentialsError, HEADLESS_PRODUCT, Identity, Locale, Proxy, ProxyCredentials, ProxyUrl,
    TimeZone, UserAgent, WindowSize, unheadless,
};
pub use memory::{MemoryUsage, ProcessMemory, process_tree, process_tree_memory};
pub use probe::{PageState, Probe, ProbeOutcome};
pub use process::{BrowserGone, Exit, ExitSignal, OrphanStop, stop_orphan};
pub use screencast::{FRAME_GAP, Frame, Screencast};
pub use settings::{BASE_FLAGS, BrowserSettings, LEAN_FLAGS, chromium_args};

use crate::id::SessionId;
use process::Process;

/// Chromium's exit code when another Chromium holds the profile
/// (`RESULT_CODE_PROFILE_IN_USE`): a live browser on this host, or a
/// `SingletonLock` naming another host.
const PROFILE_IN_USE: i32 = 21;

/// How often [`Browser::wait_settled`] probes.
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// What went wrong with a session's browser. Every variant names the
/// session; launch failures also name the profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    #[error(
        "session {session}: cannot find the browser {executable:?} (looked on PATH); install Debian's `chromium` or set browser.executable"
    )]
    ExecutableNotFound {
        session: SessionId,
        executable: PathBuf,
    },
    #[error("session {session}: cannot start {}: {source}", executable.display())]
    Spawn {
        session: SessionId,
        executable: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "session {session}: profile {} is in use by another Chromium (exit code 21), on this host or the one named in its SingletonLock: {detail}",
        profile.display()
    )]
    ProfileInUse {
        session: SessionId,
        profile: PathBuf,
        detail: String,
    },
    #[error("session {session}: Chromium ended during launch ({exit}) on profile {}: {stderr}", profile.display())]
    LaunchExited {
        session: SessionId,
        profile: PathBuf,
        exit: Exit,
        stderr: String,
    },
    #[error("session {session}: Chromium did not open DevTools within {after:?} on profile {}: {stderr}", profile.display())]
    LaunchTimeout {
        session: SessionId,
        profile: PathBuf,
        after: Duration,
        stderr: String,
    },
    #[error("session {session}: {what}: {source}")]
    Devtools {
        session: SessionId,
        what: &'static str,
        #[source]
        source: CdpError,
    },
    #[error("session {session}: {what} took longer than {after:?}")]
    Timeout {
        session: SessionId,
        what: &'static str,
        after: Duration,
    },
    #[error("session {session}: {what}: {gone}")]
    Gone {
        session: SessionId,
        what: &'static str,
        gone: BrowserGone,
    },
    #[error("session {session}: cannot open {url}: {reason}")]
    Navigate {
        session: SessionId,
        url: String,
        reason: String,
    },
    #[error("session {session}: proxy credentials: {source}")]
    ProxyCredentials {
        session: SessionId,
        #[source]
        source: CredentialsError,
    },
    #[error(
        "session {session}: cannot learn Chromium's own user agent (from a short-lived browser on a scratch profile; set user_agent to skip this): {source}"
    )]
    UserAgentProbe {
        session: SessionId,
        #[source]
        source: Box<BrowserError>,
    },
    #[error("session {session}: {what}: the page threw: {message}")]
    Script {
        session: SessionId,
        what: &'static str,
        message: String,
    },
    /// A `key-press` of a key that would type something or is unknown.
    #[error("session {session}: not pressed: {refused}")]
    KeyRefused {
        session: SessionId,
        refused: UnknownKey,
    },
}

/// How a [`Browser::close`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Chromium closed itself within the bound (profile flushed, lock
    /// links removed). `false`: it was gone already, or had to be killed.
    pub graceful: bool,
    pub exit: Option<Exit>,
    pub took: Duration,
}

/// A running Chromium for one session, with the one page it keeps alive.
/// All methods take `&self` and may run concurrently. Dropping it kills
/// Chromium (use [`Browser::close`] to let it flush the profile first).
pub struct Browser {
    session: SessionId,
    profile: PathBuf,
    settings: BrowserSettings,
    chromium: Attached,
    page: chromiumoxide::Page,
    screencaster: Arc<screencast::Screencaster>,
}

impl Browser {
    /// Starts Chromium headless on `profile` (its `--user-data-dir`) and
    /// attaches to it, with the session's identity (see
    /// [`BrowserSettings::identity`]). Fails with
    /// [`BrowserError::ProfileInUse`] when another Chromium holds the
    /// profile.
    pub async fn launch(
        session: SessionId,
        profile: &Path,
        settings: &BrowserSettings,
    ) -> Result<Browser, BrowserError> {
        let started = Instant::now();
        let executable = find_executable(&settings.executable).ok_or_else(|| {
            BrowserError::ExecutableNotFound {
                session: session.clone(),
                executable: settings.executable.clone(),
            }
        })?;
        let identity = &settings.identity;
        // Read before anything starts: a missing file fails the launch
        // with its name, not a page stuck on the proxy's 407.
        let credentials = identity
            .proxy
            .as_ref()
            .and_then(|p| p.credentials.as_ref())
            .map(ProxyCredentials::read)
            .transpose()
            .map_err(|source| BrowserError::ProxyCredentials {
                session: session.clone(),
                source,
            })?;
        // Absolute, so that a later Vigil can tell from the command line
        // which profile this browser holds (see `stop_orphan`).
        let user_data_dir = std::path::absolute(profile).unwrap_or_else(|_| profile.to_owned());
        let mut args = chromium_args(settings, &user_data_dir, running_as_root());
        args.push(session.browser_marker());
        if !args.iter().any(|a| a.starts_with("--user-agent=")) {
            let learnt = user_agent::default_for(&session, &executable, settings).await?;
            if let Some(ua) = learnt {
                args.push(format!("--user-agent={ua}"));
            }
        }
        tracing::debug!(%session, executable = %executable.display(), ?args, "starting Chromium");
        let mut chromium = attach(
            &session,
            &executable,
            &args,
            &identity.env(),
            profile,
            settings,
        )
        .await?;
        let page = identity_page(&mut chromium.devtools, identity, credentials)
            .await
            .map_err(|(source, what)| BrowserError::Devtools {
                session: session.clone(),
                what,
                source,
            })?;
        tracing::info!(
            %session,
            pid = chromium.process.pid(),
            profile = %profile.display(),
            took_ms = started.elapsed().as_millis() as u64,
            "browser launched"
        );
        let screencaster = screencast::Screencaster::new(
            session.clone(),
            page.clone(),
            (settings.window_width, settings.window_height),
        );
        Ok(Browser {
            session,
            profile: profile.to_owned(),
            settings: settings.clone(),
            chromium,
            page,
            screencaster,
        })
    }

    pub fn session(&self) -> &SessionId {
        &self.session
    }

    pub fn profile(&self) -> &Path {
        &self.profile
    }

    /// The Chromium browser process (the leader of its process group).
    pub fn pid(&self) -> u32 {
        self.chromium.process.pid()
    }

    /// Fires when this browser is gone (process exit or DevTools lost).
    pub fn exit_signal(&self) -> ExitSignal {
        ExitSignal::new(self.chromium.process.liveness())
    }

    /// PSS and RSS summed over this browser's processes.
    pub async fn memory(&self) -> std::io::Result<MemoryUsage> {
        let pid = self.pid();
        tokio::task::spawn_blocking(move || process_tree_memory(pid))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Navigates the page to `url` and waits for its `load` event.
    pub async fn open(&self, url: &str) -> Result<(), BrowserError> {
        let started = Instant::now();
        let loaded = self
            .guard("open the page", self.settings.load_timeout, async {
                self.page.goto(url).await.map(|_| ())
            })
            .await;
        match loaded {
            Ok(()) => {
                tracing::info!(session = %self.session, url, took_ms = started.elapsed().as_millis() as u64, "page opened");
                Ok(())
            }
            Err(BrowserError::Devtools { source, .. }) => Err(BrowserError::Navigate {
                session: self.session.clone(),
                url: url.to_owned(),
                reason: source.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Asks the page what state it is in. A page that is loading, or whose
    /// script threw, is [`PageState::Other`] with the reason as detail; an
    /// error means the browser itself failed.
    pub async fn probe(&self, probe: &Probe) -> Result<ProbeOutcome, BrowserError> {
        match self.evaluate("probe the page", probe.expression()).await {
            Ok(Evaluated::Value(value)) => Ok(probe.judge(&value)),
            Ok(Evaluated::Threw(message)) => Ok(ProbeOutcome::other(format!(
                "probe script threw: {message}"
            ))),
            // The page is between documents (navigating, reloading).
            Err(BrowserError::Devtools {
                source: CdpError::Chrome(e),
                ..
            }) => Ok(ProbeOutcome::other(format!("page not ready: {e}"))),
            Err(e) => Err(e),
        }
    }

    /// Probes until the page is connected or needs a login, or until
    /// `timeout`; returns the last outcome either way.
    pub async fn wait_settled(
        &self,
        probe: &Probe,
        timeout: Duration,
    ) -> Result<ProbeOutcome, BrowserError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let outcome = self.probe(probe).await?;
            if outcome.is_settled() || tokio::time::Instant::now() + SETTLE_POLL > deadline {
                return Ok(outcome);
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Carries out one keepalive action; returns what was done, for logs.
    /// `backup-now` and `nothing` are not the page's business: they do
    /// nothing here (the session takes the backup). A `run-script` runs as
    /// given: only a policy answer accepted with the `run_script` grant
    /// carries one.
    pub async fn act(&self, action: &Action) -> Result<String, BrowserError> {
        let done = match action {
            Action::MouseMove { x, y } => self.move_mouse(*x, *y).await?,
            Action::KeyPress { key } => {
                let key = key.parse().map_err(|refused| BrowserError::KeyRefused {
                    session: self.session.clone(),
                    refused,
                })?;
                self.press(key).await?
            }
            Action::Focus => {
                self.focus().await?;
                "page focused".to_owned()
            }
            Action::Presence => self.presence().await?,
            Action::WakeLock => self.wake_lock().await?,
            Action::ReloadPage => {
                self.guard("reload the page", self.settings.load_timeout, async {
                    self.page.reload().await.map(|_| ())
                })
                .await?;
                "page reloaded".to_owned()
            }
            Action::BackupNow | Action::Nothing => {
                return Ok("nothing to do in the page".to_owned());
            }
            Action::RunScript { script } => match self
                .evaluate("run a script", script.clone())
                .await?
            {
                Evaluated::Value(v) => format!("script returned {}", shorten(&v.to_string(), 200)),
                Evaluated::Threw(message) => {
                    return Err(BrowserError::Script {
                        session: self.session.clone(),
                        what: "run a script",
                        message,
                    });
                }
            },
        };
        tracing::debug!(session = %self.session, action = action.kind(), %done, "keepalive action");
        Ok(done)
    }

    /// A PNG of what the page shows (the operator scans a login QR from it).
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        let params = ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .build();
        self.guard("take a screenshot", self.settings.command_timeout, async {
            self.page.screenshot(params).await
        })
        .await
    }

    /// The page's screen as it changes, at most every [`FRAME_GAP`], for
    /// as long as the returned [`Screencast`] is kept (shared with anyone
    /// else watching). It ends when the browser does.
    pub async fn screencast(&self) -> Result<Screencast, BrowserError> {
        self.guard(
            "start a screencast",
            self.settings.command_timeout,
            self.screencaster.watch(self.exit_signal()),
        )
        .await
    }

    /// Whether the page's screen is being streamed: someone keeps a
    /// [`Screencast`]. It stops shortly after the last one is dropped.
    pub async fn screencasting(&self) -> bool {
        self.screencaster.is_live().await
    }

    /// Closes Chromium so it flushes the profile (LevelDB stores, `exit_type`
    /// in Preferences, the `Singleton*` links removed), waiting up to the
    /// close timeout; then kills the process group. Never fails: the
    /// outcome says how it went.
    pub async fn close(mut self) -> Closed {
        let started = Instant::now();
        let (graceful, exit) = shut(
            &mut self.chromium,
            self.settings.close_timeout,
            &self.session,
        )
        .await;
        let closed = Closed {
            graceful,
            exit,
            took: started.elapsed(),
        };
        tracing::info!(session = %self.session, graceful, exit = ?closed.exit, took_ms = closed.took.as_millis() as u64, "browser closed");
        closed
    }

    /// Moves the pointer to `(x, y)` of the viewport, kept inside the
    /// page (a point past its edge would reach no element).
    async fn move_mouse(&self, x: u32, y: u32) -> Result<String, BrowserError> {
        let inside = |v: u32, size: u32| f64::from(v.min(size.saturating_sub(1)));
        let (x, y) = (
            inside(x, self.settings.window_width),
            inside(y, self.settings.window_height),
        );
        self.cdp(
            "move the mouse",
            DispatchMouseEventParams::new(DispatchMouseEventType::MouseMoved, x, y),
        )
        .await?;
        Ok(format!("pointer moved to ({x}, {y})"))
    }

    async fn press(&self, key: Key) -> Result<String, BrowserError> {
        let event = |kind: DispatchKeyEventType, modifiers: i64| {
            let mut e = DispatchKeyEventParams::new(kind);
            e.key = Some(key.name().to_owned());
            e.code = Some(key.code().to_owned());
            e.windows_virtual_key_code = Some(key.windows_key_code());
            e.native_virtual_key_code = Some(key.windows_key_code());
            e.location = Some(1);
            e.modifiers = Some(modifiers);
            e
        };
        // A key that types nothing goes down as rawKeyDown, like a real
        // keyboard's; the modifier bit is held while it is down.
        self.cdp(
            "press a key",
            event(DispatchKeyEventType::RawKeyDown, key.modifier_bit()),
        )
        .await?;
        self.cdp("release a key", event(DispatchKeyEventType::KeyUp, 0))
            .await?;
        Ok(format!("pressed {key}"))
    }

    async fn focus(&self) -> Result<(), BrowserError> {
        self.cdp("bring the page to front", BringToFrontParams::default())
            .await?;
        self.cdp("emulate focus", SetFocusEmulationEnabledParams::new(true))
            .await?;
        Ok(())
    }

    async fn presence(&self) -> Result<String, BrowserError> {
        self.focus().await?;
        self.cdp(
            "mark the user active",
            SetIdleOverrideParams::new(true, true),
        )
        .await?;
        self.cdp(
            "set the page lifecycle active",
            SetWebLifecycleStateParams::new(SetWebLifecycleStateState::Active),
        )
        .await?;
        let seen = self
            .evaluate(
                "check presence",
                "`${document.visibilityState}, focus=${document.hasFocus()}`".to_owned(),
            )
            .await?;
        Ok(match seen {
            Evaluated::Value(v) => format!("present: {}", v.as_str().unwrap_or_default()),
            Evaluated::Threw(m) => format!("present (page cannot say: {m})"),
        })
    }

    async fn wake_lock(&self) -> Result<String, BrowserError> {
        let origin = match self
            .evaluate("read the page origin", "location.origin".to_owned())
            .await?
        {
            Evaluated::Value(serde_json::Value::String(o)) if o.starts_with("http") => Some(o),
            _ => None,
        };
        let mut grant = SetPermissionParams::new(
            PermissionDescriptor::new("screen-wake-lock"),
            PermissionSetting::Granted,
        );
        grant.origin = origin;
        self.guard(
            "grant the wake lock permission",
            self.settings.command_timeout,
            self.chromium.devtools.execute(grant),
        )
        .await?;
        const REQUEST: &str = "(async () => {
            if (!('wakeLock' in navigator)) return 'unsupported';
            if (window.__vigilWakeLock && !window.__vigilWakeLock.released) return 'held';
            window.__vigilWakeLock = await navigator.wakeLock.request('screen');
            return 'acquired';
        })()";
        match self
            .evaluate("request a wake lock", REQUEST.to_owned())
            .await?
        {
            Evaluated::Value(v) => Ok(format!("wake lock {}", v.as_str().unwrap_or("?"))),
            Evaluated::Threw(message) => Err(BrowserError::Script {
                session: self.session.clone(),
                what: "request a wake lock",
                message,
            }),
        }
    }

    async fn evaluate(
        &self,
        what: &'static str,
        expression: String,
    ) -> Result<Evaluated, BrowserError> {
        let mut params = EvaluateParams::new(expression);
        params.await_promise = Some(true);
        params.return_by_value = Some(true);
        let returned: EvaluateReturns = self.cdp(what, params).await?;
        if let Some(ex) = returned.exception_details {
            let message = ex.exception.and_then(|e| e.description).unwrap_or(ex.text);
            return Ok(Evaluated::Threw(message));
        }
        Ok(Evaluated::Value(
            returned.result.value.unwrap_or(serde_json::Value::Null),
        ))
    }

    /// Sends one DevTools command to the page, bounded and raced against the
    /// browser's death.
    async fn cdp<T>(&self, what: &'static str, command: T) -> Result<T::Response, BrowserError>
    where
        T: chromiumoxide::types::Command,
    {
        self.guard(what, self.settings.command_timeout, async {
            self.page.execute(command).await.map(|r| r.result)
        })
        .await
    }

    /// Bounds `work` by `after`, and ends it as soon as the browser is gone:
    /// a command in flight when Chromium dies would otherwise wait for its
    /// full timeout.
    async fn guard<T>(
        &self,
        what: &'static str,
        after: Duration,
        work: impl Future<Output = Result<T, CdpError>>,
    ) -> Result<T, BrowserError> {
        let mut gone = self.exit_signal();
        if let Some(gone) = gone.gone() {
            return Err(self.gone(what, gone));
        }
        tokio::select! {
            done = tokio::time::timeout(after, work) => match done {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(source)) => Err(BrowserError::Devtools { session: self.session.clone(), what, source }),
                Err(_) => Err(BrowserError::Timeout { session: self.session.clone(), what, after }),
            },
            gone = gone.wait() => Err(self.gone(what, gone)),
        }
    }

    fn gone(&self, what: &'static str, gone: BrowserGone) -> BrowserError {
        BrowserError::Gone {
            session: self.session.clone(),
            what,
            gone,
        }
    }
}

enum Evaluated {
    Value(serde_json::Value),
    Threw(String),
}

fn launch_failure(session: SessionId, profile: &Path, exit: Exit, stderr: String) -> BrowserError {
    if exit.code == Some(PROFILE_IN_USE) {
        let detail = stderr
            .lines()
            .rev()
            .find(|l| l.contains("ProcessSingleton") || l.contains("in use"))
            .or_else(|| stderr.lines().last())
            .map(|l| l.trim().to_owned())
            .unwrap_or_default();
        return BrowserError::ProfileInUse {
            session,
            profile: profile.to_owned(),
            detail,
        };
    }
    BrowserError::LaunchExited {
        session,
        profile: profile.to_owned(),
        exit,
        stderr,
    }
}

/// The session's one tab (see [`first_page`]), with the parts of its
/// identity that DevTools sets: the locale `Intl` formats with, and the
/// proxy's login.
async fn identity_page(
    devtools: &mut chromiumoxide::Browser,
    identity: &Identity,
    credentials: Option<ProxyCredentials>,
) -> Result<chromiumoxide::Page, (CdpError, &'static str)> {
    let page = first_page(devtools)
        .await
        .map_err(|source| (source, "open the browser's page"))?;
    if let Some(locale) = &identity.locale {
        // The flags already set navigator.language and Accept-Language.
        let params = SetLocaleOverrideParams {
            locale: Some(locale.as_str().to_owned()),
        };
        page.execute(params)
            .await
            .map_err(|source| (source, "set the page's locale"))?;
    }
    if let Some(ProxyCredentials { username, password }) = credentials {
        // Chromium ignores credentials in --proxy-server. Through DevTools'
        // Fetch domain every request of the page is paused and let go, and
        // the proxy's 407 is answered with these, once per request: a
        // refusal leaves the page on the proxy's answer instead of looping.
        // chromiumoxide's handler answers every auth challenge itself, so
        // its mechanism must be the one that does it.
        page.authenticate(chromiumoxide::auth::Credentials { username, password })
            .await
            .map_err(|source| (source, "answer the proxy's login through DevTools"))?;
    }
    Ok(page)
}

/// A Chromium process with DevTools attached. Dropping it kills the
/// process group (`Process` does) and ends the DevTools task with it.
struct Attached {
    process: Process,
    devtools: chromiumoxide::Browser,
    handler: JoinHandle<()>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

/// Spawns Chromium with `args` and `env`, waits for its DevTools address
/// (up to the launch timeout), and attaches to it.
async fn attach(
    session: &SessionId,
    executable: &Path,
    args: &[String],
    env: &[(&str, String)],
    profile: &Path,
    settings: &BrowserSettings,
) -> Result<Attached, BrowserError> {
    let (mut process, devtools_url) = Process::spawn(executable, args, env, session)
        .await
        .map_err(|source| BrowserError::Spawn {
            session: session.clone(),
            executable: executable.to_owned(),
            source,
        })?;
    let mut liveness = process.liveness();
    let url = tokio::select! {
        url = devtools_url => url.ok(),
        // Mapped to `()` so no `watch::Ref` (not `Send`) outlives the select.
        _ = async { let _ = liveness.wait_for(|l| l.exit().is_some()).await; } => None,
        _ = tokio::time::sleep(settings.launch_timeout) => {
            let stderr = process.stderr_tail().await;
            return Err(BrowserError::LaunchTimeout {
                session: session.clone(),
                profile: profile.to_owned(),
                after: settings.launch_timeout,
                stderr,
            });
        }
    };
    let Some(url) = url else {
        // Stderr closed or the process ended before DevTools came up.
        let exit = process
            .wait_exit(Duration::from_secs(2))
            .await
            .unwrap_or(Exit {
                code: None,
                signal: None,
            });
        return Err(launch_failure(
            session.clone(),
            profile,
            exit,
            process.stderr_tail().await,
        ));
    };
    let config = HandlerConfig {
        // A kept-alive app must not silently accept a bad certificate.
        ignore_https_errors: false,
        // The page gets exactly the configured size: a headless window
        // would give it less (its hidden tab strip and toolbar).
        viewport: Some(Viewport {
            width: settings.window_width,
            height: settings.window_height,
            device_scale_factor: Some(1.0),
            ..Viewport::default()
        }),
        request_timeout: settings.command_timeout,
        ..HandlerConfig::default()
    };
    let (devtools, handler) = chromiumoxide::Browser::connect_with_config(url, config)
        .await
        .map_err(|source| BrowserError::Devtools {
            session: session.clone(),
            what: "attach to Chromium's DevTools",
            source,
        })?;
    let handler = tokio::spawn(drive_devtools(
        handler,
        process.state_sender(),
        session.clone(),
    ));
    Ok(Attached {
        process,
        devtools,
        handler,
    })
}

/// Asks Chromium to close (it flushes its profile), waits up to `bound`
/// for the process to end, then kills its group. Returns whether it closed
/// by itself, and how it ended.
async fn shut(
    attached: &mut Attached,
    bound: Duration,
    session: &SessionId,
) -> (bool, Option<Exit>) {
    let started = Instant::now();
    let process = &mut attached.process;
    if process.exit().is_none() {
        // The answer may never come: Chromium can drop the connection
        // as it exits. The process exit is what counts.
        let _ = tokio::time::timeout(bound, attached.devtools.close()).await;
    }
    let mut exit = process
        .wait_exit(bound.saturating_sub(started.elapsed()))
        .await;
    let graceful = exit.is_some_and(|e| e.code == Some(0));
    if exit.is_none() {
        tracing::warn!(%session, pid = process.pid(), ?bound, "Chromium did not close in time; killing it");
        process.kill();
        exit = process.wait_exit(Duration::from_secs(5)).await;
    }
    attached.handler.abort();
    process.reap().await;
    (graceful, exit)
}

/// Drives chromiumoxide's connection until it fails; a failure is recorded
/// as "DevTools lost" so the exit signal fires even if the process lives.
async fn drive_devtools(
    mut handler: chromiumoxide::Handler,
    state: tokio::sync::watch::Sender<process::Liveness>,
    session: SessionId,
) {
    while let Some(event) = handler.next().await {
        if let Err(e) = event {
            tracing::debug!(%session, error = %e, "DevTools connection failed");
            state.send_modify(|l| l.lose_devtools(e.to_string()));
            return;
        }
    }
}

/// The session's one tab. Chromium starts with none (`--no-startup-window`):
/// a tab made through chromiumoxide is fully set up (lifecycle events on)
/// before it is returned, which a tab adopted from the start is not, and
/// navigations on it are then tracked reliably.
async fn first_page(
    devtools: &mut chromiumoxide::Browser,
) -> Result<chromiumoxide::Page, CdpError> {
    devtools.new_page("about:blank").await
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) always succeeds and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// A path with a slash is used as given; a bare name is looked up on PATH.
fn find_executable(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionId {
        SessionId::new("main").unwrap()
    }

    #[test]
    fn exit_code_21_reads_as_profile_in_use_with_chromiums_reason() {
        let stderr = "[1:1:ERROR:process_singleton_posix.cc:349] Failed to create /p/SingletonLock: File exists (17)\n\
                      [1:1:ERROR:chrome_main_delegate.cc:624] Failed to create a ProcessSingleton for your profile directory. Aborting now to avoid profile corruption.";
        let err = launch_failure(
            session(),
            Path::new("profiles/main"),
            Exit {
                code: Some(21),
                signal: None,
            },
            stderr.into(),
        );
        let text = err.to_string();
        assert!(matches!(err, BrowserError::ProfileInUse { .. }));
        assert!(
            text.contains("profiles/main") && text.contains("session main"),
            "{text}"
        );
        assert!(
            text.contains("Failed to create a ProcessSingleton"),
            "{text}"
        );
    }

    #[test]
    fn other_launch_exits_keep_chromiums_words() {
        let err = launch_failure(
            session(),
            Path::new("p"),
            Exit {
                code: Some(1),
                signal: None,
            },
            "bad flag".into(),
        );
        assert!(matches!(err, BrowserError::LaunchExited { .. }));
        assert!(err.to_string().contains("exit code 1") && err.to_string().contains("bad flag"));
    }

    #[test]
    fn executables_are_found_on_path_or_taken_as_given() {
        assert!(find_executable(Path::new("sh")).is_some());
        assert!(find_executable(Path::new("no-such-browser-here")).is_none());
        assert_eq!(
            find_executable(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(find_executable(Path::new("./nope/chromium")).is_none());
    }

    #[test]
    fn long_details_are_shortened_on_a_char_boundary() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("hi", 2), "hi");
    }
}
