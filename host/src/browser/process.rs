//! The Chromium process of one session: spawned in its own process group,
//! its stderr read (the DevTools address, and the last lines for error
//! messages), its exit noticed the moment it happens. Owns the two tasks
//! that do this; dropping a [`Process`] kills the whole group.
//!
//! Chromium dies with Vigil, even with a `kill -9`: it is started with a
//! parent-death signal (`PR_SET_PDEATHSIG`, SIGKILL). Linux sends it when
//! the *thread* that forked the child ends, and tokio's threads come and
//! go, so every Chromium is forked by one launcher thread that lives as
//! long as the process. A Chromium left by an older Vigil is stopped with
//! [`stop_orphan`].

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
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
    pub(crate) async fn spawn(
        executable: &Path,
        args: &[String],
        env: &[(&str, String)],
        session: &SessionId,
    ) -> std::io::Result<(Process, oneshot::Receiver<String>)> {
        let mut command = Command::new(executable);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = spawn_dying_with_vigil(command).await?;
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

/// A spawn for the launcher thread, and where to send the child.
struct LaunchRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The thread that forks every Chromium. It never ends, so a child's
/// parent-death signal fires only when Vigil itself ends.
fn launcher() -> &'static mpsc::Sender<LaunchRequest> {
    static LAUNCHER: OnceLock<mpsc::Sender<LaunchRequest>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<LaunchRequest>();
        let started = std::thread::Builder::new()
            .name("vigil-launcher".into())
            .spawn(move || {
                // The sender lives in a static: this loop never ends.
                for mut request in rx {
                    // tokio watches the child from the runtime it was
                    // spawned in.
                    let _runtime = request.runtime.enter();
                    let _ = request.reply.send(request.command.spawn());
                }
            });
        if let Err(e) = started {
            // Without its own thread no browser can start: say why at each
            // launch rather than panic here.
            tracing::error!(error = %e, "cannot start the browser launcher thread");
        }
        tx
    })
}

/// Spawns `command` from the launcher thread, with SIGKILL as the child's
/// parent-death signal.
async fn spawn_dying_with_vigil(mut command: Command) -> io::Result<Child> {
    let vigil = rustix::process::getpid();
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are plain
    // system calls, and the error is built without allocating.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // Vigil may have died between fork and prctl: the signal would
            // then never come, so do not start at all.
            if rustix::process::getppid() != Some(vigil) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, child) = oneshot::channel();
    let request = LaunchRequest {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    let gone = || io::Error::other("the browser launcher thread is not running");
    launcher().send(request).map_err(|_| gone())?;
    child.await.map_err(|_| gone())?
}

/// How [`stop_orphan`] ended a browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanStop {
    /// It closed itself after SIGTERM (profile flushed).
    Closed,
    /// It had to be killed after the grace time.
    Killed,
    /// It was gone already.
    Gone,
}

/// Stops a Chromium that an earlier Vigil left running (the volume judges
/// which one that is: `ProfileClaim::orphan_browser`): SIGTERM so it can
/// flush the profile, up to `grace` for it to end, then SIGKILL. Its
/// process group (zygotes, renderers) is killed with it when the browser
/// leads one, as Vigil's do. Fails only when it is still alive after
/// SIGKILL.
pub async fn stop_orphan(pid: u32, grace: Duration) -> io::Result<OrphanStop> {
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(OrphanStop::Gone);
    };
    // A pidfd keeps naming this process even if its pid is reused.
    let pidfd = match rustix::process::pidfd_open(target, PidfdFlags::empty()) {
        Ok(fd) => Arc::new(fd),
        Err(rustix::io::Errno::SRCH) => return Ok(OrphanStop::Gone),
        Err(e) => return Err(e.into()),
    };
    let leads_group = rustix::process::getpgid(Some(target)).is_ok_and(|g| g == target);
    let kill_group = || {
        if leads_group {
            let _ = rustix::process::kill_process_group(target, Signal::KILL);
        }
    };
    match rustix::process::pidfd_send_signal(&*pidfd, Signal::TERM) {
        Ok(()) => {}
        Err(rustix::io::Errno::SRCH) => {
            kill_group();
            return Ok(OrphanStop::Gone);
        }
        Err(e) => return Err(e.into()),
    }
    if wait_exit(pidfd.clone(), grace).await? {
        // Its helpers end by themselves when it closes; make sure.
        kill_group();
        return Ok(OrphanStop::Closed);
    }
    kill_group();
    let _ = rustix::process::pidfd_send_signal(&*pidfd, Signal::KILL);
    if wait_exit(pidfd, Duration::from_secs(5)).await? {
        Ok(OrphanStop::Killed)
    } else {
        Err(io::Error::other(format!(
            "pid {pid} is still alive 5 s after SIGKILL"
        )))
    }
}

/// Waits up to `bound` for the process behind `pidfd` to end (a zombie
/// counts as ended: it is the parent's to reap, not ours).
async fn wait_exit(pidfd: Arc<OwnedFd>, bound: Duration) -> io::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let timeout = rustix::event::Timespec {
            tv_sec: bound.as_secs() as i64,
            tv_nsec: i64::from(bound.subsec_nanos()),
        };
        loop {
            let mut fds = [rustix::event::PollFd::new(
                &*pidfd,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    })
    .await
    .map_err(io::Error::other)?
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
        tracing::debug!(%session, %line, "chromium says");
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

    /// The parent-death signal fires when the thread that forked the child
    /// ends: a child asked for by a thread that then ends must live on,
    /// because the launcher thread forked it.
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut sleep = Command::new("sleep");
            sleep.arg("30");
            let child = runtime
                .block_on(spawn_dying_with_vigil(sleep))
                .expect("sleep starts");
            child.id().expect("a pid")
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(
            state.is_some_and(|s| s.starts_with('S') || s.starts_with('R')),
            "the child died with the thread: {stat:?}"
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
