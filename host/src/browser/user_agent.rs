//! The user agent a session gets when it sets none: Chromium's own, as
//! `Browser.getVersion` reports it, with "HeadlessChrome" made "Chrome".
//!
//! It must be on the command line (`--user-agent`) before the session's
//! browser starts: a DevTools override set afterwards reaches the page and
//! its dedicated workers but not service workers, and it drops the client
//! hints (`Sec-CH-UA`, `navigator.userAgentData`) that a real Chrome sends.
//! So it is learnt once per Chromium binary (and again if the file on disk
//! changes, an upgrade) from a short-lived browser on a scratch profile,
//! and remembered for the life of the process. Owns that scratch browser
//! and its folder; never touches a session's profile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::identity::unheadless;
use super::{BASE_FLAGS, BrowserError, BrowserSettings, attach, running_as_root, shut};
use crate::id::SessionId;

/// One learnt user agent: the binary, its modification time, and the
/// user agent to use (`None`: Chromium's own says nothing to hide).
struct Learnt {
    executable: PathBuf,
    modified: Option<SystemTime>,
    user_agent: Option<String>,
}

/// Held across a probe, so sessions launching together wait for one.
static LEARNT: tokio::sync::Mutex<Vec<Learnt>> = tokio::sync::Mutex::const_new(Vec::new());

/// The user agent for a session of `executable` that sets none.
pub(super) async fn default_for(
    session: &SessionId,
    executable: &Path,
    settings: &BrowserSettings,
) -> Result<Option<String>, BrowserError> {
    let modified = std::fs::metadata(executable)
        .and_then(|m| m.modified())
        .ok();
    let mut learnt = LEARNT.lock().await;
    if let Some(known) = learnt
        .iter()
        .find(|l| l.executable == executable && l.modified == modified)
    {
        return Ok(known.user_agent.clone());
    }
    let reported = ask_chromium(session, executable, settings)
        .await
        .map_err(|source| BrowserError::UserAgentProbe {
            session: session.clone(),
            source: Box::new(source),
        })?;
    let user_agent = unheadless(&reported);
    tracing::info!(
        executable = %executable.display(),
        reported = %reported,
        using = user_agent.as_deref().unwrap_or(&reported),
        "learnt Chromium's user agent for sessions that set none"
    );
    learnt.retain(|l| l.executable != executable);
    learnt.push(Learnt {
        executable: executable.to_owned(),
        modified,
        user_agent: user_agent.clone(),
    });
    Ok(user_agent)
}

/// Starts `executable` headless on a scratch profile, asks it
/// `Browser.getVersion`, closes it and removes the profile.
async fn ask_chromium(
    session: &SessionId,
    executable: &Path,
    settings: &BrowserSettings,
) -> Result<String, BrowserError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "vigil-user-agent-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut args: Vec<String> = BASE_FLAGS.iter().map(|f| (*f).to_owned()).collect();
    if running_as_root() {
        args.push("--no-sandbox".into());
    }
    args.push(format!("--user-data-dir={}", scratch.display()));
    let asked = async {
        let mut chromium = attach(session, executable, &args, &[], &scratch, settings).await?;
        let version = tokio::time::timeout(settings.command_timeout, chromium.devtools.version())
            .await
            .map_err(|_| BrowserError::Timeout {
                session: session.clone(),
                what: "ask Chromium its version",
                after: settings.command_timeout,
            })?
            .map_err(|source| BrowserError::Devtools {
                session: session.clone(),
                what: "ask Chromium its version",
                source,
            });
        shut(&mut chromium, settings.close_timeout, session).await;
        Ok(version?.user_agent)
    }
    .await;
    if let Err(e) = tokio::fs::remove_dir_all(&scratch).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(folder = %scratch.display(), error = %e, "cannot remove the scratch profile");
    }
    asked
}
