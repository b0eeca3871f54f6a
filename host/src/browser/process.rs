//! The Chromium process of one session: spawned in its own process group,
//! its stderr read (the DevTools address, and the last lines for error
//! messages), its exit noticed the moment it happens. Owns the two tasks
//! that do this; dropping a [`Process`] kills the whole group.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStderr, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::id::SessionId;

/// How many of Chromium's last stderr lines are kept for error messages.
const TAIL_LINES: usize = 40;

/// How a Chromium process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(9)) => f.write_str("killed (SIGKILL)"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// Why a browser can no longer be used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrowserGone {
    /// The Chromium process ended: crashed, killed, or closed.
    Exited(Exit),
    /// The DevTools connection broke while the process still ran.
    DevtoolsLost(String),
    /// Vigil dropped the browser handle (and killed the process with it).
    Dropped,
}

impl fmt::Display for BrowserGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrowserGone::Exited(exit) => write!(f, "Chromium exited: {exit}"),
            BrowserGone::DevtoolsLost(why) => write!(f, "DevTools connection lost: {why}"),
            BrowserGone::Dropped => f.write_str("browser handle dropped"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Liveness {
    exit: Option<Exit>,
    devtools_lost: Option<String>,
}

impl Liveness {
    pub(crate) fn gone(&self) -> Option<BrowserGone> {
        if let Some(exit) = self.exit {
            return Some(BrowserGone::Exited(exit));
        }
        self.devtools_lost.clone().map(BrowserGone::DevtoolsLost)
    }

    pub(crate) fn exit(&self) -> Option<Exit> {
        self.exit
    }

    pub(crate) fn lose_devtools(&mut self, why: String) {
        self.devtools_lost.get_or_insert(why);
    }
}

/// Fires when the browser of a session is gone: its process ended, or its
/// DevTools connection broke. A `kill -9` of Chromium is seen at once (the
/// process's exit is awaited, not polled). Cheap to clone; every clone
/// fires. Note that a graceful [`close`](super::Browser::close) fires it
/// too.
#[derive(Clone, Debug)]
pub struct ExitSignal {
    state: watch::Receiver<Liveness>,
}

impl ExitSignal {
    pub(crate) fn new(state: watch::Receiver<Liveness>) -> Self {
        Self { state }
    }

    /// Gone already? Does not wait.
    pub fn gone(&self) -> Option<BrowserGone> {
        self.state.borrow().gone()
    }

    /// Resolves when the browser is gone (at once if it is already).
    pub async fn wait(&mut self) -> BrowserGone {
        match self.state.wait_for(|l| l.gone().is_some()).await {
            Ok(l) => l.gone().unwrap_or(BrowserGone::Dropped),
            Err(_) => BrowserGone::Dropped,
        }
    }
}

pub(crate) struct Process {
    pid: u32,
    state: watch::Sender<Liveness>,
    waiter: JoinHandle<()>,
    stderr: Option<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Spawns Chromium in a new process group (so that closing can reach
    /// its renderers and zygotes, and a Ctrl-C in Vigil's terminal reaches
    /// Vigil, which then closes Chromium properly), with `env` added to
    /// Vigil's environment. Returns the process and where its DevTools
    /// address will arrive.
    pub(crate) fn spawn(
        executable: &Path,
        args: &[String],
        env: &[(&str, String)],
        session: &SessionId,
    ) -> std::io::Result<(Process, oneshot::Receiver<String>)> {
        let mut child = Command::new(executable)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let (state, _) = watch::channel(Liveness::default());
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (devtools_tx, devtools_rx) = oneshot::channel();
        let stderr = child.stderr.take().map(|stderr| {
            tokio::spawn(read_stderr(
                stderr,
                tail.clone(),
                devtools_tx,
                session.clone(),
            ))
        });
        let waiter = {
            let state = state.clone();
            let session = session.clone();
            tokio::spawn(async move {
                let exit = match child.wait().await {
                    Ok(status) => Exit::from(status),
                    Err(e) => {
                        tracing::error!(%session, pid, error = %e, "cannot wait for Chromium");
                        Exit {
                            code: None,
                            signal: None,
                        }
                    }
                };
                tracing::debug!(%session, pid, %exit, "Chromium process ended");
                state.send_modify(|l| l.exit = Some(exit));
            })
        };
        Ok((
            Process {
                pid,
                state,
                waiter,
                stderr,
                tail,
            },
            devtools_rx,
        ))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn liveness(&self) -> watch::Receiver<Liveness> {
        self.state.subscribe()
    }

    pub(crate) fn state_sender(&self) -> watch::Sender<Liveness> {
        self.state.clone()
    }

    pub(crate) fn exit(&self) -> Option<Exit> {
        self.state.borrow().exit
    }

    /// Waits up to `bound` for the process to end.
    pub(crate) async fn wait_exit(&self, bound: Duration) -> Option<Exit> {
        let mut state = self.state.subscribe();
        tokio::time::timeout(bound, state.wait_for(|l| l.exit.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|l| l.exit))
    }

    /// SIGKILL to the whole process group, unless the process was already
    /// reaped (its group id could then belong to someone else).
    pub(crate) fn kill(&self) {
        if self.exit().is_some() || self.pid == 0 {
            return;
        }
        let Ok(pgid) = i32::try_from(self.pid) else {
            return;
        };
        // SAFETY: kill(2) has no memory effects; a negative pid names our
        // own child's process group, created by `process_group(0)`.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }

    /// Chromium's last stderr lines; after an exit, waits (briefly) for the
    /// reader to reach the end so the final words are included.
    pub(crate) async fn stderr_tail(&mut self) -> String {
        if self.exit().is_some()
            && let Some(reader) = self.stderr.as_mut()
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for both tasks after the process ended (bounded).
    pub(crate) async fn reap(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.waiter).await;
        if let Some(reader) = self.stderr.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        self.waiter.abort();
        if let Some(reader) = &self.stderr {
            reader.abort();
        }
    }
}

async fn read_stderr(
    stderr: ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    devtools: oneshot::Sender<String>,
    session: SessionId,
) {
    let mut devtools = Some(devtools);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%session, error = %e, "cannot read Chromium's stderr");
                break;
            }
        };
        if let Some(url) = devtools_url(&line)
            && let Some(tx) = devtools.take()
        {
            let _ = tx.send(url.to_owned());
        }
        // Chromium is chatty on a server (D-Bus, GPU): debug, not info.
        tracing::debug!(%session, "chromium: {line}");
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

fn devtools_url(line: &str) -> Option<&str> {
    let url = line.split_once("DevTools listening on ")?.1.trim();
    (url.starts_with("ws://") && url.contains("/devtools/browser/")).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devtools_address_is_read_from_chromiums_banner() {
        assert_eq!(
            devtools_url("DevTools listening on ws://127.0.0.1:41525/devtools/browser/f520cb2e"),
            Some("ws://127.0.0.1:41525/devtools/browser/f520cb2e")
        );
        assert_eq!(
            devtools_url("[ERROR:dbus/bus.cc:405] Failed to connect"),
            None
        );
    }

    #[test]
    fn exits_read_like_a_person_would_say_them() {
        let e = Exit {
            code: Some(21),
            signal: None,
        };
        assert_eq!(e.to_string(), "exit code 21");
        let k = Exit {
            code: None,
            signal: Some(9),
        };
        assert_eq!(k.to_string(), "killed (SIGKILL)");
    }
}
