//! The watch phase: probe the page on an interval, call the keepalive and
//! watchdog policies on theirs (the watchdog at once when the session
//! drops or reconnects), carry out what they answer, serve commands, and
//! notice at once when the browser dies.

use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{Phase, Runner, blocking, stopping};
use crate::browser::{BrowserError, ProbeOutcome};
use crate::policy::role::{Keepalive, Watchdog};
use crate::policy::{Action, Role, Verdict};
use crate::session::SessionState;
use crate::session::translate;

/// How long the page may take to settle after a watchdog's reload.
const RELOAD_SETTLE: Duration = Duration::from_secs(20);
/// When a role has no interval (never for keepalive and watchdog files).
const NO_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl Runner {
    pub(super) async fn watch(&mut self) -> Phase {
        let start = tokio::time::Instant::now();
        let mut probes =
            tokio::time::interval_at(start + self.spec.probe_interval, self.spec.probe_interval);
        probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keepalive_at = self.next_call(Role::Keepalive);
        let mut watchdog_at = self.next_call(Role::Watchdog);
        let mut reloads = self.deps.policies.subscribe();
        let mut reloads_open = true;
        let mut seen = self.record.state();
        loop {
            if !self.may_run() {
                return self.lost_ownership();
            }
            let now = self.record.state();
            if now != seen && (seen == SessionState::Connected || now == SessionState::Connected) {
                // A drop is judged now, not at the watchdog's next interval
                // (a reload brings most sessions back in seconds); a
                // reconnect too, so the watchdog ends its outage before the
                // next one begins.
                watchdog_at = tokio::time::Instant::now();
            }
            seen = now;
            if self.record.take_backup_due() {
                let (phase, _) = self.backup("first connected after a login").await;
                if let Some(phase) = phase {
                    return phase;
                }
            }
            let Some(exit) = self.exit.as_mut() else {
                return Phase::Launch("the browser is not running".into());
            };
            tokio::select! {
                _ = stopping(&mut self.shutdown) => return Phase::Stop,
                gone = exit.wait() => return self.browser_died(gone.to_string()).await,
                Some(command) = self.commands.recv() => {
                    if let Some(phase) = self.serve(command).await {
                        return phase;
                    }
                }
                _ = probes.tick() => {
                    let outcome = self.probe().await;
                    self.apply_probe(outcome);
                }
                _ = tokio::time::sleep_until(keepalive_at) => {
                    let (phase, every) = self.keepalive().await;
                    if let Some(phase) = phase {
                        return phase;
                    }
                    keepalive_at = tokio::time::Instant::now() + every;
                }
                _ = tokio::time::sleep_until(watchdog_at) => {
                    let (phase, every) = self.watchdog_every().await;
                    if let Some(phase) = phase {
                        return phase;
                    }
                    watchdog_at = tokio::time::Instant::now() + every;
                }
                reload = reloads.recv(), if reloads_open => {
                    // A reloaded policy with a shorter interval takes effect
                    // now, not after the old, longer wait.
                    if matches!(reload, Err(broadcast::error::RecvError::Closed)) {
                        reloads_open = false;
                    }
                    keepalive_at = keepalive_at.min(self.next_call(Role::Keepalive));
                    watchdog_at = watchdog_at.min(self.next_call(Role::Watchdog));
                }
            }
        }
    }

    /// When the policy bound to `role` wants its first call, or its next
    /// after a reload. After a call, the decision's own binding says.
    fn next_call(&self, role: Role) -> tokio::time::Instant {
        let interval = self
            .deps
            .policies
            .binding(&self.spec.id, role)
            .interval
            .unwrap_or(NO_INTERVAL);
        tokio::time::Instant::now() + interval
    }

    async fn probe(&self) -> Result<ProbeOutcome, BrowserError> {
        match &self.browser {
            Some(browser) => browser.probe(&self.spec.probe).await,
            None => Ok(ProbeOutcome::other("no browser")),
        }
    }

    pub(super) fn apply_probe(&mut self, outcome: Result<ProbeOutcome, BrowserError>) {
        let (page, detail) = translate::probe_seen(outcome);
        let moved = self.record.probed(
            page,
            detail,
            Instant::now(),
            std::time::SystemTime::now(),
            self.spec.backup_after_login,
        );
        self.raise(moved);
        self.publish();
    }

    /// One keepalive call, carried out; the phase to go to if an action
    /// changed it, and when the policy that answered wants the next call.
    async fn keepalive(&mut self) -> (Option<Phase>, Duration) {
        let decision = self.ask::<Keepalive>(self.facts()).await;
        let every = decision.binding.interval.unwrap_or(NO_INTERVAL);
        for action in decision.value {
            match action {
                Action::BackupNow => {
                    let (phase, _) = self.backup("asked by the keepalive policy").await;
                    if phase.is_some() {
                        return (phase, every);
                    }
                }
                Action::Nothing => {}
                action => {
                    let Some(browser) = &self.browser else {
                        break;
                    };
                    match browser.act(&action).await {
                        Ok(done) => {
                            tracing::debug!(session = %self.spec.id, action = action.kind(), done, "keepalive action");
                            self.record.active(Instant::now());
                        }
                        Err(e) => {
                            tracing::warn!(session = %self.spec.id, action = action.kind(), error = %e, "keepalive action failed")
                        }
                    }
                }
            }
        }
        (None, every)
    }

    /// A watchdog call from the watch loop: its phase, and when the policy
    /// that answered wants the next call.
    async fn watchdog_every(&mut self) -> (Option<Phase>, Duration) {
        let (phase, every) = self.judge().await;
        (phase, every.unwrap_or(NO_INTERVAL))
    }

    /// Asks the watchdog and acts on its verdict; the phase to go to when
    /// the verdict changed it.
    pub(super) async fn watchdog(&mut self) -> Option<Phase> {
        self.judge().await.0
    }

    async fn judge(&mut self) -> (Option<Phase>, Option<Duration>) {
        self.look_for_damage().await;
        let decision = self.ask::<Watchdog>(self.facts()).await;
        let every = decision.binding.interval;
        let phase = match decision.value {
            Verdict::Healthy => None,
            // Reported (status, log) but not acted on: the probe owns the
            // connected / degraded state.
            Verdict::Degraded { reason } => {
                tracing::warn!(session = %self.spec.id, %reason, "watchdog: degraded");
                if self.record.state() == SessionState::Degraded {
                    self.set_state(SessionState::Degraded, format!("watchdog: {reason}"));
                }
                None
            }
            Verdict::ReloadPage { reason } => {
                tracing::warn!(session = %self.spec.id, %reason, "watchdog: reloading the page");
                self.reload_page().await;
                None
            }
            Verdict::RestartBrowser { reason } => {
                tracing::warn!(session = %self.spec.id, %reason, "watchdog: restarting the browser");
                self.record.restarted(Instant::now());
                self.close_browser().await;
                Some(self.relaunch(format!("watchdog: {reason}")).await)
            }
            Verdict::RestoreFromBackup { reason } => {
                tracing::warn!(session = %self.spec.id, %reason, "watchdog: restoring from a backup");
                Some(
                    self.restore_for_watchdog(format!("watchdog: {reason}"))
                        .await,
                )
            }
            Verdict::GiveUp { reason } => {
                self.close_browser().await;
                Some(self.fail(format!("watchdog gave up: {reason}")))
            }
        };
        (phase, every)
    }

    /// The critical files the profile lacks now, for the watchdog; only
    /// looked at while the session is not connected.
    async fn look_for_damage(&mut self) {
        if !self.record.should_look_for_damage() {
            return;
        }
        let profile = self.profile.clone();
        let missing = match blocking(move || profile.critical_missing()).await {
            Ok(missing) => missing.iter().map(|p| p.as_str().to_string()).collect(),
            Err(e) => {
                tracing::warn!(session = %self.spec.id, error = %e, "cannot look at the profile's critical files");
                Vec::new()
            }
        };
        self.record.set_missing_critical(missing);
    }

    /// The watchdog's reload: reload the page, then probe until it settles
    /// (at most [`RELOAD_SETTLE`]), so a reconnect shows at once.
    async fn reload_page(&mut self) {
        let Some(browser) = &self.browser else {
            return;
        };
        let settle = RELOAD_SETTLE.min(self.spec.connect_timeout);
        let outcome = match browser.act(&Action::ReloadPage).await {
            Ok(_) => tokio::select! {
                outcome = browser.wait_settled(&self.spec.probe, settle) => outcome,
                _ = stopping(&mut self.shutdown) => return,
            },
            Err(e) => Err(e),
        };
        self.apply_probe(outcome);
    }

    /// The watchdog's restore: the newest good backup replaces the profile.
    /// When the profile still has its critical files it is backed up
    /// first, so nothing newer than that backup is lost; if that backup
    /// fails, nothing is restored.
    async fn restore_for_watchdog(&mut self, reason: String) -> Phase {
        self.close_browser().await;
        let target = match self.deps.backups.list(&self.spec.id).await {
            Ok(entries) => entries
                .iter()
                .find(|e| e.is_good() && !self.record.failed_restores().contains(e.id().as_str()))
                .map(|e| e.id().clone()),
            Err(e) => {
                tracing::warn!(session = %self.spec.id, error = %e, "cannot list backups for the watchdog's restore");
                None
            }
        };
        let Some(target) = target else {
            return self
                .relaunch(format!(
                    "{reason}; no good backup to restore, relaunching on the profile on disk"
                ))
                .await;
        };
        if self.record.missing_critical().is_empty() && self.profile.dir().exists() {
            let (_, saved) = self
                .backup("the watchdog restores an older backup over this profile")
                .await;
            if let Err(e) = saved {
                return self
                    .relaunch(format!(
                        "{reason}; not restoring, because the backup of the current profile failed ({e})"
                    ))
                    .await;
            }
        }
        let (phase, _) = self.restore_now(Some(target), reason).await;
        phase
    }

    async fn browser_died(&mut self, why: String) -> Phase {
        if let Some(browser) = self.browser.take() {
            // Reaps the process and ends the DevTools task.
            browser.close().await;
        }
        self.exit = None;
        let now = Instant::now();
        self.record.restarted(now);
        self.set_state(SessionState::Degraded, format!("browser exited: {why}"));
        if let Some(wait) = self.record.relaunch_wait(now) {
            tracing::warn!(session = %self.spec.id, restarts_last_hour = self.record.restarts_last_hour(now), wait_s = wait.as_secs(), "browser keeps dying; waiting before the relaunch");
            if self.sleep_or_shutdown(wait).await {
                return Phase::Stop;
            }
        }
        self.relaunch("relaunching after the browser exited".into())
            .await
    }
}
