//! One session's life: from start-up (restore decision, profile, launch) to
//! connected and back, driven by probes and policies. Owns the state machine
//! and the session's browser; never touches another session.
//!
//! Each session is one tokio task (see `runner`), which keeps what the
//! session has been through in its `record` (plain data, tested without a
//! browser) and uses `translate` between the volume's, the store's and the
//! browser's words and the policies'. Other layers talk to it
//! through a [`SessionClient`]: commands go in over a channel, and the
//! [`SessionStatus`] snapshot comes out over a `watch`, so reading a
//! session's status never waits for the session. Notable moments
//! (transitions, backups, restores) are also broadcast as [`SessionEvent`]s
//! for metrics and webhooks.

mod record;
mod runner;
pub mod spec;
pub mod state;
pub mod status;
mod translate;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::backup::{BackupError, BackupId, Backups, Manifest, RestoreReport};
use crate::browser::{BrowserError, Screencast};
use crate::id::SessionId;
use crate::journal::Journal;
use crate::policy::PolicyRuntime;
use crate::qr::{FoundQr, QrError};
use crate::volume::VolumeError;

pub use spec::{DEFAULT_PROBE, SessionSpec};
pub use state::{Lifeline, SessionState, Transition};
pub use status::{
    BackupSummary, DecisionSummary, OwnerSummary, ProbeSummary, RestoreSource, RestoreSummary,
    SessionCounters, SessionStatus,
};

/// What sessions share: the policy runtime and the journal of its
/// decisions, the backup store, the launch limit, and where events go.
#[derive(Clone)]
pub struct SessionDeps {
    pub policies: Arc<PolicyRuntime>,
    pub journal: Journal,
    pub backups: Arc<Backups>,
    /// Browsers allowed to launch at the same time.
    pub launches: Arc<Semaphore>,
    pub events: broadcast::Sender<SessionEvent>,
}

/// A notable moment of a session, for metrics and webhooks.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEvent {
    StateChanged {
        session: SessionId,
        from: SessionState,
        to: SessionState,
        reason: String,
    },
    BackupSaved {
        session: SessionId,
        id: String,
        size_bytes: u64,
        #[serde(serialize_with = "ser_millis")]
        took: Duration,
    },
    BackupFailed {
        session: SessionId,
        error: String,
    },
    Restored {
        session: SessionId,
        source: RestoreSource,
        backup: Option<String>,
        #[serde(serialize_with = "ser_millis")]
        took: Duration,
    },
    RestoreFailed {
        session: SessionId,
        backup: Option<String>,
        error: String,
    },
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Why a request to a session failed. Every message names the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("session {session}: cannot {what} while it is {state}: {why}")]
    NotNow {
        session: SessionId,
        what: &'static str,
        state: SessionState,
        why: &'static str,
    },
    #[error("session {session} is not running (the host is shutting down)")]
    Stopped { session: SessionId },
    /// Refused to protect a working login (the API's `refused`, the CLI's
    /// exit code 3).
    #[error("session {session}: refused to {what}: {why}")]
    Refused {
        session: SessionId,
        what: &'static str,
        why: &'static str,
    },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Browser(#[from] BrowserError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("session {session}: cannot look for a QR code in its screenshot: {source}")]
    Qr { session: SessionId, source: QrError },
}

impl SessionError {
    /// The request could not be served in the session's current state (as
    /// opposed to a failure while serving it).
    pub fn is_conflict(&self) -> bool {
        matches!(self, SessionError::NotNow { .. })
    }
}

/// What other layers may ask of a session.
enum Command {
    BackupNow {
        reply: oneshot::Sender<Result<Manifest, SessionError>>,
    },
    Restore {
        backup: Option<BackupId>,
        /// Replace the profile even while the session is connected.
        force: bool,
        reply: oneshot::Sender<Result<RestoreReport, SessionError>>,
    },
    Restart {
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Screenshot {
        reply: oneshot::Sender<Result<Vec<u8>, SessionError>>,
    },
    Screencast {
        reply: oneshot::Sender<Result<Screencast, SessionError>>,
    },
}

/// A cheap, cloneable way to read and command one session.
#[derive(Clone)]
pub struct SessionClient {
    id: SessionId,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<SessionStatus>,
}

impl SessionClient {
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The latest snapshot.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    pub fn state(&self) -> SessionState {
        self.status.borrow().state
    }

    /// A receiver that wakes on every change of the snapshot.
    pub fn watch(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Backs the session up now (closing its browser for the copy in
    /// quiesce mode) and returns the new backup's manifest.
    pub async fn backup_now(&self) -> Result<Manifest, SessionError> {
        self.ask(|reply| Command::BackupNow { reply }).await
    }

    /// Replaces the profile with backup `backup` (or the newest good one)
    /// and relaunches. A failed restore leaves the profile as it was. A
    /// connected session holds a working login: without `force` it is
    /// refused ([`SessionError::Refused`]), wherever the request comes from.
    pub async fn restore(
        &self,
        backup: Option<BackupId>,
        force: bool,
    ) -> Result<RestoreReport, SessionError> {
        self.ask(|reply| Command::Restore {
            backup,
            force,
            reply,
        })
        .await
    }

    /// Closes the browser and starts again (from the restore decision when
    /// the session had failed).
    pub async fn restart(&self) -> Result<(), SessionError> {
        self.ask(|reply| Command::Restart { reply }).await
    }

    /// A PNG of the page as it is now.
    pub async fn screenshot(&self) -> Result<Vec<u8>, SessionError> {
        self.ask(|reply| Command::Screenshot { reply }).await
    }

    /// The page's screen as it changes (at most about 2 frames a second),
    /// while the returned [`Screencast`] is kept; it ends when the browser
    /// closes (a restart, a backup in quiesce mode), and the watcher asks
    /// again.
    pub async fn screencast(&self) -> Result<Screencast, SessionError> {
        self.ask(|reply| Command::Screencast { reply }).await
    }

    /// The QR code the page shows now (a login code, typically), read from
    /// a screenshot as a phone would read it; `None` when none is visible.
    /// The decoding runs off the session's task and off the async workers.
    pub async fn login_qr(&self) -> Result<Option<FoundQr>, SessionError> {
        let png = self.screenshot().await?;
        // The decoder's own panics are caught inside; a join error is the
        // runtime shutting down.
        tokio::task::spawn_blocking(move || crate::qr::find_in_png(&png))
            .await
            .map_err(|_| SessionError::Stopped {
                session: self.id.clone(),
            })?
            .map_err(|source| SessionError::Qr {
                session: self.id.clone(),
                source,
            })
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SessionError>>) -> Command,
    ) -> Result<T, SessionError> {
        let stopped = || SessionError::Stopped {
            session: self.id.clone(),
        };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A running session: its client and the task that drives it.
pub struct SessionHandle {
    client: SessionClient,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Starts the session's task. It runs until `shutdown` turns true, then
    /// closes its browser gracefully (and backs up, if configured) before
    /// ending.
    pub fn spawn(spec: SessionSpec, deps: SessionDeps, shutdown: watch::Receiver<bool>) -> Self {
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let (runner, status) = runner::Runner::new(spec, deps, shutdown, commands_rx);
        let client = SessionClient {
            id: runner.id().clone(),
            commands: commands_tx,
            status,
        };
        let task = tokio::spawn(runner.run());
        Self { client, task }
    }

    pub fn client(&self) -> &SessionClient {
        &self.client
    }

    /// Waits for the task to end (after shutdown was signalled).
    pub async fn join(self) {
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(session = %self.client.id, "session task panicked: {e}");
        }
    }

    /// Whether the task has ended (it ends by itself only when this host
    /// lost the session's ownership).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ends the task at once, without a graceful close (after a shutdown
    /// that overran its bound); the browser is killed with it.
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }
}
