//! The task that drives one session through its phases:
//!
//! - **prepare** (`prepare.rs`): claim the profile, ask the restore policy
//!   (disk, a backup, fresh, or wait), restore if so decided, clear stale
//!   browser locks;
//! - **launch**: start Chromium (a few sessions at a time), open the page,
//!   probe until connected / needs-login / timeout;
//! - **watch** (`watching.rs`): probe on an interval, run the keepalive and
//!   watchdog policies on theirs, carry out their answers, serve commands,
//!   and notice at once when the browser process dies;
//! - **retry**: the session cannot go on now (its profile is held, the
//!   browser will not start); wait with a growing pause, capped at 15 min,
//!   serving commands, then try again. Never an end state;
//! - **idle**: a policy gave up on the session (the only way it becomes
//!   `failed`); wait for an operator's restart or restore;
//! - **stop**: on shutdown, close the browser gracefully and take the
//!   shutdown backup (`backup.rs` has the backup itself).
//!
//! Decisions about *what* to do come from policies, asked in one place
//! ([`Runner::ask`]: every call journaled); what the session has been
//! through is its [`Record`]; operators' commands are served in one place
//! ([`Runner::serve`]). This module only carries things out.

mod backup;
mod prepare;
mod watching;

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};

use super::record::Record;
use super::{Command, SessionDeps, SessionError, SessionEvent, SessionSpec};
use crate::browser::{Browser, BrowserError, ExitSignal};
use crate::id::SessionId;
use crate::policy::role::PolicyRole;
use crate::policy::{Decision, Facts};
use crate::session::state::SessionState;
use crate::session::status::SessionStatus;
use crate::volume::{Profile, ProfileClaim};

/// Where the session's task goes next.
#[derive(Debug)]
enum Phase {
    Prepare,
    Launch(String),
    Watch,
    /// Wait this long (serving commands), then prepare again.
    Retry(Duration),
    Idle,
    Stop,
}

pub(super) struct Runner {
    spec: SessionSpec,
    deps: SessionDeps,
    shutdown: watch::Receiver<bool>,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<SessionStatus>,
    record: Record,
    profile: Profile,
    claim: Option<ProfileClaim>,
    browser: Option<Browser>,
    exit: Option<ExitSignal>,
}

impl Runner {
    pub(super) fn new(
        spec: SessionSpec,
        deps: SessionDeps,
        shutdown: watch::Receiver<bool>,
        commands: mpsc::Receiver<Command>,
    ) -> (Self, watch::Receiver<SessionStatus>) {
        let record = Record::new(spec.id.clone());
        let profile = Profile::new(spec.profile_dir.clone(), spec.critical.clone());
        let (status, status_rx) = watch::channel(record.status(&spec, None, Instant::now()));
        let runner = Self {
            spec,
            deps,
            shutdown,
            commands,
            status,
            record,
            profile,
            claim: None,
            browser: None,
            exit: None,
        };
        (runner, status_rx)
    }

    pub(super) fn id(&self) -> &SessionId {
        &self.spec.id
    }

    pub(super) async fn run(mut self) {
        let mut phase = Phase::Prepare;
        loop {
            if *self.shutdown.borrow() {
                phase = Phase::Stop;
            }
            phase = match phase {
                Phase::Prepare => self.prepare().await,
                Phase::Launch(reason) => self.launch(reason).await,
                Phase::Watch => self.watch().await,
                Phase::Retry(after) => self.retry(after).await,
                Phase::Idle => self.idle().await,
                Phase::Stop => break,
            };
        }
        self.stop().await;
    }

    // ------------------------------------------------------------- launch

    async fn launch(&mut self, reason: String) -> Phase {
        if !self.may_run() {
            return self.lost_ownership();
        }
        self.set_state(SessionState::Launching, reason);
        let permit = tokio::select! {
            permit = std::sync::Arc::clone(&self.deps.launches).acquire_owned() => permit.ok(),
            _ = stopping(&mut self.shutdown) => return Phase::Stop,
        };
        let launched = Browser::launch(
            self.spec.id.clone(),
            &self.spec.profile_dir,
            &self.spec.browser,
        )
        .await;
        let opened = match launched {
            Ok(browser) => {
                let page = browser.open(&self.spec.url).await;
                Ok((browser, page))
            }
            Err(e) => Err(e),
        };
        drop(permit);
        let (browser, page) = match opened {
            Ok(browser) => browser,
            // Boxed: a watchdog verdict there may lead back to a launch.
            Err(e) => return Box::pin(self.launch_failed(e)).await,
        };
        self.record.launched();
        self.exit = Some(browser.exit_signal());
        if let Err(e) = page {
            // The browser runs but the app did not load (down, unreachable):
            // a failed probe, for the watchdog to judge like any other,
            // rather than a launch failure that would end the session.
            self.browser = Some(browser);
            self.apply_probe(Err(e));
            return Phase::Watch;
        }
        let settled = tokio::select! {
            outcome = browser.wait_settled(&self.spec.probe, self.spec.connect_timeout) => Some(outcome),
            _ = stopping(&mut self.shutdown) => None,
        };
        self.browser = Some(browser);
        match settled {
            Some(outcome) => {
                self.apply_probe(outcome);
                Phase::Watch
            }
            None => Phase::Stop,
        }
    }

    /// Whether this host may drive the session's browser: always on a
    /// single host; in a fleet, while it owns the session and is not
    /// fenced.
    fn may_run(&self) -> bool {
        self.spec
            .tenure
            .as_ref()
            .is_none_or(crate::fleet::Tenure::may_run)
    }

    /// This host no longer owns the session (fenced, or another host took
    /// it): the browser is killed at once, without a graceful close (that
    /// would still drive it), and the session ends here.
    fn lost_ownership(&mut self) -> Phase {
        self.exit = None;
        let had_browser = self.browser.take().is_some();
        tracing::warn!(
            session = %self.spec.id,
            killed_browser = had_browser,
            "this host no longer owns the session (fenced, or taken over): its browser is stopped at once and never driven again here"
        );
        self.set_state(
            SessionState::Stopped,
            "this host no longer owns the session",
        );
        self.publish();
        Phase::Stop
    }

    async fn close_browser(&mut self) {
        self.exit = None;
        if let Some(browser) = self.browser.take() {
            let closed = browser.close().await;
            tracing::info!(session = %self.spec.id, graceful = closed.graceful, took_ms = closed.took.as_millis() as u64, "browser closed");
            self.publish();
        }
    }

    /// The browser did not start. The watchdog hears of it (a profile that
    /// Chromium keeps refusing is one it may restore); otherwise the
    /// session starts over after a growing pause, capped at 15 min. Only
    /// the watchdog's give-up ends it.
    async fn launch_failed(&mut self, e: BrowserError) -> Phase {
        if matches!(e, BrowserError::ProfileInUse { .. }) {
            // Another browser holds the profile: the restore decision looks
            // at its lock again, and nothing is restored under it.
            return self.blocked(e.to_string());
        }
        let wait = self.record.launch_failed();
        self.set_state(SessionState::Degraded, format!("launch failed: {e}"));
        if let Some(phase) = self.watchdog().await {
            return phase;
        }
        self.set_state(
            SessionState::Degraded,
            format!(
                "launch failed {} time(s) in a row ({e}); trying again in {}",
                self.record.launch_failures(),
                humantime::format_duration(wait)
            ),
        );
        Phase::Retry(wait)
    }

    /// The session cannot start now, for `reason`: it stays `degraded`,
    /// says so, and tries again after a growing pause (capped at 15 min)
    /// or at an operator's restart.
    fn blocked(&mut self, reason: String) -> Phase {
        let wait = self.record.blocked();
        tracing::warn!(session = %self.spec.id, %reason, tries = self.record.blocked_tries(), wait_s = wait.as_secs(), "session cannot start; trying again later");
        self.set_state(
            SessionState::Degraded,
            format!(
                "{reason}; trying again in {}",
                humantime::format_duration(wait)
            ),
        );
        Phase::Retry(wait)
    }

    /// Waits `after` while serving commands, then prepares again.
    async fn retry(&mut self, after: Duration) -> Phase {
        let deadline = tokio::time::Instant::now() + after;
        loop {
            let command = tokio::select! {
                _ = stopping(&mut self.shutdown) => return Phase::Stop,
                _ = tokio::time::sleep_until(deadline) => return Phase::Prepare,
                command = self.commands.recv() => command,
            };
            let Some(command) = command else {
                return Phase::Stop;
            };
            if let Some(phase) = self.serve(command).await {
                return phase;
            }
        }
    }

    /// A policy gave up: nothing runs until an operator restarts or
    /// restores the session, or the host stops.
    async fn idle(&mut self) -> Phase {
        loop {
            let command = tokio::select! {
                _ = stopping(&mut self.shutdown) => return Phase::Stop,
                command = self.commands.recv() => command,
            };
            let Some(command) = command else {
                return Phase::Stop;
            };
            if let Some(phase) = self.serve(command).await {
                return phase;
            }
        }
    }

    async fn stop(&mut self) {
        let was_connected = self.record.state() == SessionState::Connected;
        let owns = self.may_run();
        if !owns {
            // Killed, not closed: closing still drives the browser.
            self.exit = None;
            self.browser = None;
        }
        self.close_browser().await;
        if was_connected && owns && self.spec.backup_on_shutdown && self.claim.is_some() {
            let _ = self.backup("the host is shutting down").await;
        }
        self.set_state(SessionState::Stopped, "the host is shutting down");
        self.commands.close();
    }

    // ----------------------------------------------------------- commands

    /// Serves an operator's command, in any phase. Returns the next phase
    /// when the command changed it.
    async fn serve(&mut self, command: Command) -> Option<Phase> {
        let running = self.browser.is_some();
        match command {
            Command::BackupNow { reply } => {
                let (phase, result) = self.backup("asked by the operator").await;
                let _ = reply.send(result);
                phase
            }
            Command::Restore {
                backup,
                force,
                reply,
            } => {
                if let Err(e) = self.check_restorable(backup.as_ref(), force).await {
                    let _ = reply.send(Err(e));
                    return None;
                }
                let (phase, result) = self
                    .restore_now(backup, "asked by the operator".into())
                    .await;
                // Without a browser (idle, waiting to retry), a failed
                // restore leaves the session where it was.
                let go = running || result.is_ok();
                let _ = reply.send(result);
                go.then_some(phase)
            }
            Command::Restart { reply } if running => {
                self.close_browser().await;
                let _ = reply.send(Ok(()));
                Some(self.relaunch("restart asked by the operator".into()).await)
            }
            Command::Restart { reply } => {
                let _ = reply.send(Ok(()));
                self.record.unblock();
                Some(Phase::Prepare)
            }
            Command::Screenshot { reply } => {
                let result = match &self.browser {
                    Some(browser) => browser.screenshot().await.map_err(SessionError::from),
                    None => Err(self.no_browser("take a screenshot")),
                };
                let _ = reply.send(result);
                None
            }
            Command::Screencast { reply } => {
                let result = match &self.browser {
                    Some(browser) => browser.screencast().await.map_err(SessionError::from),
                    None => Err(self.no_browser("show its screen")),
                };
                let _ = reply.send(result);
                None
            }
        }
    }

    // ----------------------------------------------------------- policies

    /// Asks the policy of role `R`: the decision is journaled (with its
    /// input, clock, config and memory), logged, and shown in the status.
    async fn ask<R: PolicyRole>(&mut self, input: R::Input) -> Decision<R::Answer> {
        let decision = self.deps.policies.decide::<R>(input.clone()).await;
        self.deps
            .journal
            .record(&self.spec.id, R::ROLE, &input, &decision);
        // A policy's own words (a reason, a script) are cut for the status.
        let summary = crate::policy::answer::excerpt(&R::describe(&decision.value));
        tracing::debug!(session = %self.spec.id, role = %R::ROLE, decision = %summary, served_by = %decision.served_by, "policy decision");
        self.record.decided(
            R::ROLE,
            summary,
            &decision.served_by,
            decision.took,
            SystemTime::now(),
        );
        self.publish();
        decision
    }

    fn facts(&self) -> Facts {
        self.record.facts(Instant::now(), SystemTime::now())
    }

    // ----------------------------------------------------- status, events

    /// The session cannot `what` in its current state, because `why`.
    fn not_now(&self, what: &'static str, why: &'static str) -> SessionError {
        SessionError::NotNow {
            session: self.spec.id.clone(),
            what,
            state: self.record.state(),
            why,
        }
    }

    fn no_browser(&self, what: &'static str) -> SessionError {
        self.not_now(what, "no browser is running")
    }

    fn fail(&mut self, reason: String) -> Phase {
        self.set_state(SessionState::Failed, reason);
        Phase::Idle
    }

    /// Sleeps, or returns `true` early when the host is shutting down.
    async fn sleep_or_shutdown(&mut self, wait: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stopping(&mut self.shutdown) => true,
        }
    }

    /// Moves the state machine; returns whether the state changed.
    fn set_state(&mut self, to: SessionState, reason: impl Into<String>) -> bool {
        let moved = self.record.move_to(to, reason);
        self.raise(moved)
    }

    /// Raises the event of a move (if any) and publishes the status.
    fn raise(&mut self, event: Option<SessionEvent>) -> bool {
        let Some(event) = event else {
            return false;
        };
        self.emit(event);
        self.publish();
        true
    }

    fn emit(&self, event: SessionEvent) {
        // No subscriber is fine: events are for whoever listens.
        let _: Result<usize, broadcast::error::SendError<_>> = self.deps.events.send(event);
    }

    fn publish(&self) {
        let pid = self.browser.as_ref().map(Browser::pid);
        self.status
            .send_replace(self.record.status(&self.spec, pid, Instant::now()));
    }
}

/// Resolves once the host is shutting down (or the supervisor is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
