//! The task that drives one session through its phases:
//!
//! - **prepare**: claim the profile, ask the restore policy (disk, a backup,
//!   fresh, or wait), restore if so decided, clear stale browser locks;
//! - **launch**: start Chromium (a few sessions at a time), open the page,
//!   probe until connected / needs-login / timeout;
//! - **watch**: probe on an interval, run the keepalive and watchdog
//!   policies on theirs, carry out their answers, serve commands, and
//!   notice at once when the browser process dies;
//! - **retry**: the session cannot go on now (its profile is held, the
//!   browser will not start); wait with a growing pause, capped at 15 min,
//!   serving commands, then try again. Never an end state;
//! - **idle**: a policy gave up on the session (the only way it becomes
//!   `failed`); wait for an operator's restart or restore;
//! - **stop**: on shutdown, close the browser gracefully and take the
//!   shutdown backup.
//!
//! Decisions about *what* to do come from policies; this file only carries
//! them out and keeps the facts policies are given.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::status::{
    BackupSummary, DecisionSummary, ProbeSummary, RestoreSource, RestoreSummary, SessionCounters,
    SessionStatus,
};
use super::{Command, SessionDeps, SessionError, SessionEvent, SessionSpec};
use crate::archive::Progress;
use crate::backup::{
    BackupEntry, BackupError, BackupId, HookFuture, Manifest, Quiesce, RestoreReport,
};
use crate::browser::{self, Browser, BrowserError, ExitSignal, PageState, ProbeOutcome};
use crate::config::BackupMode;
use crate::id::SessionId;
use crate::policy::{
    Action, BackupFacts, CriticalFile, Facts, Inventory, LockState, Plan, Role, ServedBy, Verdict,
};
use crate::session::state::{Lifeline, SessionState};
use crate::volume::{self, Presence, Profile, ProfileClaim};

/// Restore decisions asked at one start before Vigil gives up on the
/// policy and launches on what is on disk.
const MAX_RESTORE_DECISIONS: usize = 8;
/// The longest pause between two tries of a session that cannot start:
/// slow, but never given up.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(15 * 60);
/// How long the page may take to settle after a watchdog's reload.
const RELOAD_SETTLE: Duration = Duration::from_secs(20);
/// Browser deaths within an hour tolerated before relaunches back off.
const FREE_RESTARTS_PER_HOUR: u32 = 3;
const MAX_RELAUNCH_BACKOFF: Duration = Duration::from_secs(60);

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
    lifeline: Lifeline,
    profile: Profile,
    claim: Option<ProfileClaim>,
    browser: Option<Browser>,
    exit: Option<ExitSignal>,
    probe_failures: u32,
    last_probe: Option<ProbeSummary>,
    restarts: VecDeque<Instant>,
    /// Launches in a row in which the browser did not start.
    launch_failures: u32,
    /// Tries in a row that found the session unable to start (profile
    /// held, unreadable, not claimable); paces [`Phase::Retry`].
    blocked_tries: u32,
    /// The last probe that saw the page connected.
    last_connected: Option<Instant>,
    /// Critical profile files missing or empty, looked at before each
    /// watchdog call while not connected.
    missing_critical: Vec<String>,
    last_activity: Option<Instant>,
    last_backup: Option<BackupSummary>,
    last_backup_error: Option<String>,
    last_restore: Option<RestoreSummary>,
    last_decision: Option<DecisionSummary>,
    counters: SessionCounters,
    /// Backups whose restore failed during this run, so the restore policy
    /// moves on even when the failure was not the archive's fault.
    failed_restores: HashSet<String>,
    /// The page asked for a login during this run: reaching connected
    /// afterwards is a new login, worth a backup at once.
    saw_needs_login: bool,
    backup_due: bool,
}

impl Runner {
    pub(super) fn new(
        spec: SessionSpec,
        deps: SessionDeps,
        shutdown: watch::Receiver<bool>,
        commands: mpsc::Receiver<Command>,
    ) -> (Self, watch::Receiver<SessionStatus>) {
        let lifeline = Lifeline::new(spec.id.clone());
        let profile = Profile::new(spec.profile_dir.clone(), spec.critical.clone());
        let initial = SessionStatus {
            id: spec.id.clone(),
            url: spec.url.clone(),
            state: lifeline.state(),
            since: lifeline.since(),
            reason: "starting".into(),
            browser_pid: None,
            last_probe: None,
            consecutive_probe_failures: 0,
            restarts_last_hour: 0,
            last_backup: None,
            last_backup_error: None,
            last_restore: None,
            last_decision: None,
            history: Vec::new(),
            counters: SessionCounters::default(),
        };
        let (status, status_rx) = watch::channel(initial);
        let runner = Self {
            spec,
            deps,
            shutdown,
            commands,
            status,
            lifeline,
            profile,
            claim: None,
            browser: None,
            exit: None,
            probe_failures: 0,
            last_probe: None,
            restarts: VecDeque::new(),
            launch_failures: 0,
            blocked_tries: 0,
            last_connected: None,
            missing_critical: Vec::new(),
            last_activity: None,
            last_backup: None,
            last_backup_error: None,
            last_restore: None,
            last_decision: None,
            counters: SessionCounters::default(),
            failed_restores: HashSet::new(),
            saw_needs_login: false,
            backup_due: false,
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

    // ------------------------------------------------------------ prepare

    async fn prepare(&mut self) -> Phase {
        self.set_state(
            SessionState::Starting,
            "choosing where the profile comes from",
        );
        if let Err(reason) = self.ensure_claim().await {
            return self.blocked(reason);
        }
        let started = Instant::now();
        for _ in 0..MAX_RESTORE_DECISIONS {
            let inventory = match self.inventory().await {
                Ok(i) => i,
                Err(e) => return self.blocked(format!("cannot read the profile: {e}")),
            };
            if let volume::LockState::Held { host, pid } = &inventory.lock {
                return self.blocked(format!(
                    "profile {} is held by a running browser (pid {pid} on this host, {host}); Vigil does not touch it until that browser is gone",
                    self.spec.profile_dir.display()
                ));
            }
            let entries = self.list_backups().await;
            let backups = backup_facts(&entries, &self.failed_restores, SystemTime::now());
            let decision = self
                .deps
                .policies
                .restore(&self.spec.id, &policy_inventory(&inventory), &backups)
                .await;
            self.record_decision(
                Role::Restore,
                decision.value.to_string(),
                &decision.served_by,
                decision.took,
            );
            match decision.value {
                Plan::UseDisk { reason } => {
                    self.note_restore(RestoreSource::Disk, None, started.elapsed());
                    return self
                        .launch_on_disk(format!("profile on disk: {reason}"), inventory.exists)
                        .await;
                }
                Plan::StartFresh { reason } => {
                    self.note_restore(RestoreSource::Fresh, None, started.elapsed());
                    return self
                        .launch_on_disk(format!("fresh profile: {reason}"), inventory.exists)
                        .await;
                }
                Plan::RestoreBackup { id, reason } => {
                    let Ok(backup) = id.parse::<BackupId>() else {
                        self.failed_restores.insert(id);
                        continue;
                    };
                    self.set_state(
                        SessionState::Restoring,
                        format!("restoring backup {backup}: {reason}"),
                    );
                    if self.restore_backup(Some(backup.clone())).await.is_ok() {
                        return Phase::Launch(format!("restored backup {backup}"));
                    }
                }
                Plan::Wait { after, reason } => {
                    tracing::info!(session = %self.spec.id, wait_ms = after.as_millis() as u64, %reason, "restore policy asks to wait");
                    if self.sleep_or_shutdown(after).await {
                        return Phase::Stop;
                    }
                }
            }
        }
        let exists = self.profile.dir().exists();
        self.launch_on_disk(
            format!("no usable restore decision after {MAX_RESTORE_DECISIONS} tries; starting on the profile on disk"),
            exists,
        )
        .await
    }

    async fn ensure_claim(&mut self) -> Result<(), String> {
        if self.claim.is_some() {
            return Ok(());
        }
        let profile = self.profile.clone();
        match blocking(move || profile.claim()).await {
            Ok(claim) => {
                self.claim = Some(claim);
                Ok(())
            }
            Err(e) => Err(format!("cannot claim the profile: {e}")),
        }
    }

    async fn inventory(&self) -> Result<volume::Inventory, volume::VolumeError> {
        let profile = self.profile.clone();
        blocking(move || profile.inventory()).await
    }

    /// The session's backups, newest first; an unreachable store is logged
    /// and counts as no backups (the restore policy then decides on the
    /// disk alone, and nothing is overwritten).
    async fn list_backups(&mut self) -> Vec<BackupEntry> {
        match self.deps.backups.list(&self.spec.id).await {
            Ok(entries) => {
                if self.last_backup.is_none()
                    && let Some(newest) = entries.iter().find(|e| e.is_good())
                {
                    self.last_backup = Some(BackupSummary {
                        id: newest.id().to_string(),
                        at: newest.manifest.created.into(),
                        size_bytes: newest.manifest.size,
                        took: None,
                        downtime: None,
                    });
                }
                entries
            }
            Err(e) => {
                tracing::warn!(session = %self.spec.id, error = %e, "cannot list backups; deciding without them");
                Vec::new()
            }
        }
    }

    /// Clears stale browser locks and the crash flag, then launches.
    async fn launch_on_disk(&mut self, reason: String, exists: bool) -> Phase {
        if exists {
            self.relaunch(reason).await
        } else {
            Phase::Launch(reason)
        }
    }

    /// Tidies the profile (see [`Runner::tidy_profile`]) and launches,
    /// saying in the reason what was tidied.
    async fn relaunch(&mut self, reason: String) -> Phase {
        match self.tidy_profile().await {
            Ok(tidied) if tidied.is_empty() => Phase::Launch(reason),
            Ok(tidied) => Phase::Launch(format!("{reason} ({})", tidied.join(", "))),
            Err(e) => self.blocked(format!("cannot tidy the profile: {e}")),
        }
    }

    /// Removes `Singleton*` links left by a browser that is gone and marks
    /// the last exit clean, so the next launch neither refuses the profile
    /// nor shows a "restore pages?" bubble. Returns what it did, in words.
    async fn tidy_profile(&mut self) -> Result<Vec<String>, String> {
        let Some(claim) = self.claim.clone() else {
            return Ok(Vec::new());
        };
        blocking(move || {
            let mut tidied = Vec::new();
            let cleared = claim.clear_stale_locks()?.removed.len();
            if cleared > 0 {
                tidied.push(format!("cleared {cleared} stale browser lock(s)"));
            }
            if claim.reset_crash_exit_type()? {
                tidied.push("marked the last exit clean".to_string());
            }
            Ok::<_, volume::VolumeError>(tidied)
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn restore_backup(
        &mut self,
        backup: Option<BackupId>,
    ) -> Result<RestoreReport, SessionError> {
        self.ensure_claim().await.map_err(|_| {
            self.not_now("restore", "the profile is claimed by another Vigil process")
        })?;
        let claim = self.claim.clone().expect("claimed above");
        let started = Instant::now();
        let progress = Progress::default();
        let result = match &backup {
            Some(id) => {
                self.deps
                    .backups
                    .restore(&self.spec.id, id, &claim, true, &progress)
                    .await
            }
            None => {
                self.deps
                    .backups
                    .restore_newest(&self.spec.id, &claim, true, &progress)
                    .await
            }
        };
        match result {
            Ok(report) => {
                let took = started.elapsed();
                for (id, _) in &report.skipped {
                    self.failed_restores.insert(id.to_string());
                }
                self.note_restore(RestoreSource::Backup, Some(report.id.to_string()), took);
                tracing::info!(session = %self.spec.id, backup = %report.id, files = report.files, bytes = report.bytes, took_ms = took.as_millis() as u64, "profile restored from backup");
                Ok(report)
            }
            Err(e) => {
                self.counters.restore_failures += 1;
                if let Some(id) = &backup {
                    self.failed_restores.insert(id.to_string());
                }
                tracing::warn!(session = %self.spec.id, error = %e, "restore failed; the profile on disk is unchanged");
                self.emit(SessionEvent::RestoreFailed {
                    session: self.spec.id.clone(),
                    backup: backup.map(|b| b.to_string()),
                    error: e.to_string(),
                });
                self.publish();
                Err(e.into())
            }
        }
    }

    fn note_restore(&mut self, source: RestoreSource, backup: Option<String>, took: Duration) {
        match source {
            RestoreSource::Disk => self.counters.restores_from_disk += 1,
            RestoreSource::Backup => self.counters.restores_from_backup += 1,
            RestoreSource::Fresh => self.counters.restores_fresh += 1,
        }
        self.counters.restore_time_total += took;
        self.last_restore = Some(RestoreSummary {
            at: SystemTime::now(),
            source,
            backup: backup.clone(),
            took,
        });
        self.emit(SessionEvent::Restored {
            session: self.spec.id.clone(),
            source,
            backup,
            took,
        });
        self.publish();
    }

    // ------------------------------------------------------------- launch

    async fn launch(&mut self, reason: String) -> Phase {
        self.set_state(SessionState::Launching, reason);
        let permit = tokio::select! {
            permit = Arc::clone(&self.deps.launches).acquire_owned() => permit.ok(),
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
        self.launch_failures = 0;
        self.blocked_tries = 0;
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
    /// session starts over after a growing pause, capped at
    /// [`MAX_RETRY_WAIT`]. Only the watchdog's give-up ends it.
    async fn launch_failed(&mut self, e: BrowserError) -> Phase {
        if matches!(e, BrowserError::ProfileInUse { .. }) {
            // Another browser holds the profile: the restore decision looks
            // at its lock again, and nothing is restored under it.
            return self.blocked(e.to_string());
        }
        self.launch_failures += 1;
        self.set_state(SessionState::Degraded, format!("launch failed: {e}"));
        if let Some(phase) = self.watchdog().await {
            return phase;
        }
        let wait = backoff(self.launch_failures, MAX_RETRY_WAIT);
        self.set_state(
            SessionState::Degraded,
            format!(
                "launch failed {} time(s) in a row ({e}); trying again in {}",
                self.launch_failures,
                humantime::format_duration(wait)
            ),
        );
        Phase::Retry(wait)
    }

    /// The session cannot start now, for `reason`: it stays `degraded`,
    /// says so, and tries again after a growing pause (capped at
    /// [`MAX_RETRY_WAIT`]) or at an operator's restart.
    fn blocked(&mut self, reason: String) -> Phase {
        self.blocked_tries += 1;
        let wait = backoff(self.blocked_tries, MAX_RETRY_WAIT);
        tracing::warn!(session = %self.spec.id, %reason, tries = self.blocked_tries, wait_s = wait.as_secs(), "session cannot start; trying again later");
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
            if let Some(phase) = self.serve_without_browser(command).await {
                return phase;
            }
        }
    }

    // -------------------------------------------------------------- watch

    async fn watch(&mut self) -> Phase {
        let start = tokio::time::Instant::now();
        let mut probes =
            tokio::time::interval_at(start + self.spec.probe_interval, self.spec.probe_interval);
        probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keepalive_at = self.next_call(Role::Keepalive);
        let mut watchdog_at = self.next_call(Role::Watchdog);
        let mut reloads = self.deps.policies.subscribe();
        let mut reloads_open = true;
        let mut seen = self.lifeline.state();
        loop {
            let now = self.lifeline.state();
            if now != seen && (seen == SessionState::Connected || now == SessionState::Connected) {
                // A drop is judged now, not at the watchdog's next interval
                // (a reload brings most sessions back in seconds); a
                // reconnect too, so the watchdog ends its outage before the
                // next one begins.
                watchdog_at = tokio::time::Instant::now();
            }
            seen = now;
            if self.backup_due {
                self.backup_due = false;
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
                    if let Some(phase) = self.keepalive().await {
                        return phase;
                    }
                    keepalive_at = self.next_call(Role::Keepalive);
                }
                _ = tokio::time::sleep_until(watchdog_at) => {
                    if let Some(phase) = self.watchdog().await {
                        return phase;
                    }
                    watchdog_at = self.next_call(Role::Watchdog);
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

    /// When the policy bound to `role` wants its next call. The binding is
    /// read each time, so a hot-reloaded interval applies from the next
    /// call on.
    fn next_call(&self, role: Role) -> tokio::time::Instant {
        let interval = self
            .deps
            .policies
            .binding(&self.spec.id, role)
            .interval
            .unwrap_or(Duration::from_secs(24 * 3600));
        tokio::time::Instant::now() + interval
    }

    async fn probe(&self) -> Result<ProbeOutcome, BrowserError> {
        match &self.browser {
            Some(browser) => browser.probe(&self.spec.probe).await,
            None => Ok(ProbeOutcome {
                state: PageState::Other,
                detail: "no browser".into(),
            }),
        }
    }

    fn apply_probe(&mut self, outcome: Result<ProbeOutcome, BrowserError>) {
        let (state, detail) = match outcome {
            Ok(o) => (o.state, o.detail),
            Err(e) => (PageState::Other, e.to_string()),
        };
        let name = match state {
            PageState::Connected => "connected",
            PageState::NeedsLogin => "needs-login",
            PageState::Other => "other",
        };
        self.last_probe = Some(ProbeSummary {
            at: SystemTime::now(),
            outcome: name.into(),
            detail: detail.clone(),
        });
        match state {
            PageState::Connected => {
                self.probe_failures = 0;
                self.last_connected = Some(Instant::now());
                self.missing_critical.clear();
                let new_login = self.saw_needs_login;
                if self.set_state(SessionState::Connected, "probe: connected")
                    && self.spec.backup_after_login
                    && (new_login || self.last_backup.is_none())
                {
                    self.backup_due = true;
                }
                self.saw_needs_login = false;
            }
            PageState::NeedsLogin => {
                self.probe_failures = 0;
                self.saw_needs_login = true;
                self.set_state(
                    SessionState::NeedsLogin,
                    format!("probe: needs-login ({detail})"),
                );
            }
            PageState::Other => {
                self.probe_failures += 1;
                self.counters.probe_failures += 1;
                self.set_state(SessionState::Degraded, format!("probe: {detail}"));
            }
        }
        self.publish();
    }

    async fn keepalive(&mut self) -> Option<Phase> {
        let decision = self.deps.policies.keepalive(&self.facts()).await;
        let summary = if decision.value.is_empty() {
            "nothing".to_string()
        } else {
            decision
                .value
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.record_decision(Role::Keepalive, summary, &decision.served_by, decision.took);
        let scripts_allowed = self
            .deps
            .policies
            .binding(&self.spec.id, Role::Keepalive)
            .permissions
            .run_script;
        for action in decision.value {
            if action == Action::BackupNow {
                let (phase, _) = self.backup("asked by the keepalive policy").await;
                if phase.is_some() {
                    return phase;
                }
                continue;
            }
            let Some(act) = browser_action(&action, scripts_allowed) else {
                if !matches!(action, Action::Nothing) {
                    tracing::warn!(session = %self.spec.id, %action, "keepalive action not carried out (unknown key, or a script the policy may not run)");
                }
                continue;
            };
            let Some(browser) = &self.browser else {
                break;
            };
            match browser.act(&act).await {
                Ok(done) => {
                    tracing::debug!(session = %self.spec.id, action = act.name(), done, "keepalive action");
                    self.last_activity = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(session = %self.spec.id, action = act.name(), error = %e, "keepalive action failed")
                }
            }
        }
        None
    }

    async fn watchdog(&mut self) -> Option<Phase> {
        self.look_for_damage().await;
        let decision = self.deps.policies.watchdog(&self.facts()).await;
        self.record_decision(
            Role::Watchdog,
            decision.value.to_string(),
            &decision.served_by,
            decision.took,
        );
        match decision.value {
            Verdict::Healthy => None,
            // Reported (status, log) but not acted on: the probe owns the
            // connected / degraded state.
            Verdict::Degraded { reason } => {
                tracing::warn!(session = %self.spec.id, %reason, "watchdog: degraded");
                if self.lifeline.state() == SessionState::Degraded {
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
                self.note_restart();
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
        }
    }

    /// The critical files the profile lacks now, for the watchdog; only
    /// looked at while the session is not connected.
    async fn look_for_damage(&mut self) {
        if self.lifeline.state() == SessionState::Connected && self.probe_failures == 0 {
            self.missing_critical.clear();
            return;
        }
        let profile = self.profile.clone();
        self.missing_critical = match blocking(move || profile.critical_missing()).await {
            Ok(missing) => missing.iter().map(|p| p.as_str().to_string()).collect(),
            Err(e) => {
                tracing::warn!(session = %self.spec.id, error = %e, "cannot look at the profile's critical files");
                Vec::new()
            }
        };
    }

    /// The watchdog's reload: reload the page, then probe until it settles
    /// (at most [`RELOAD_SETTLE`]), so a reconnect shows at once.
    async fn reload_page(&mut self) {
        let Some(browser) = &self.browser else {
            return;
        };
        let settle = RELOAD_SETTLE.min(self.spec.connect_timeout);
        let outcome = match browser.act(&browser::Action::Reload).await {
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
                .find(|e| e.is_good() && !self.failed_restores.contains(e.id().as_str()))
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
        if self.missing_critical.is_empty() && self.profile.dir().exists() {
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
        self.note_restart();
        self.set_state(SessionState::Degraded, format!("browser exited: {why}"));
        let recent = self.restarts_last_hour();
        if recent > FREE_RESTARTS_PER_HOUR {
            let wait = backoff(recent - FREE_RESTARTS_PER_HOUR, MAX_RELAUNCH_BACKOFF);
            tracing::warn!(session = %self.spec.id, restarts_last_hour = recent, wait_s = wait.as_secs(), "browser keeps dying; waiting before the relaunch");
            if self.sleep_or_shutdown(wait).await {
                return Phase::Stop;
            }
        }
        self.relaunch("relaunching after the browser exited".into())
            .await
    }

    fn note_restart(&mut self) {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600))
        {
            self.restarts.pop_front();
        }
        self.counters.restarts += 1;
    }

    fn restarts_last_hour(&self) -> u32 {
        let hour = Duration::from_secs(3600);
        self.restarts.iter().filter(|t| t.elapsed() <= hour).count() as u32
    }

    /// Before an operator's restore closes a working browser: the backup
    /// asked for exists (or, when none is named, some good one does), and
    /// the session is not connected, unless `force` says to replace its
    /// working login anyway.
    async fn check_restorable(
        &self,
        backup: Option<&BackupId>,
        force: bool,
    ) -> Result<(), SessionError> {
        let session = &self.spec.id;
        let entries = self.deps.backups.list(session).await?;
        match backup {
            Some(id) if !entries.iter().any(|e| e.id() == id) => {
                return Err(BackupError::NotFound {
                    session: session.clone(),
                    id: id.clone(),
                }
                .into());
            }
            None if !entries.iter().any(BackupEntry::is_good) => {
                return Err(BackupError::NoGoodBackup {
                    session: session.clone(),
                    tried: Vec::new(),
                }
                .into());
            }
            _ => {}
        }
        if !force && self.lifeline.state() == SessionState::Connected {
            return Err(SessionError::Refused {
                session: session.clone(),
                what: "restore over it",
                why: "it is connected, with a working login; pass force to replace its profile with a backup",
            });
        }
        Ok(())
    }

    /// Closes the browser, restores `backup` (or the newest good one) over
    /// the profile, and relaunches, on the restored profile or, if the
    /// restore failed, on the untouched old one.
    async fn restore_now(
        &mut self,
        backup: Option<BackupId>,
        reason: String,
    ) -> (Phase, Result<RestoreReport, SessionError>) {
        self.close_browser().await;
        let which = backup
            .as_ref()
            .map_or("the newest good backup".to_string(), |b| {
                format!("backup {b}")
            });
        self.set_state(
            SessionState::Restoring,
            format!("restoring {which}: {reason}"),
        );
        let result = self.restore_backup(backup).await;
        let reason = match &result {
            Ok(report) => format!("restored backup {}", report.id),
            Err(e) => format!("restore failed ({e}); relaunching on the profile on disk"),
        };
        (self.relaunch(reason).await, result)
    }

    // ------------------------------------------------------------- backup

    /// Backs the profile up. In quiesce mode a running browser is closed
    /// first and relaunched as soon as the archive has read the profile,
    /// while the upload finishes. Returns the phase to go to when the
    /// relaunch did not lead back to watching.
    async fn backup(&mut self, reason: &str) -> (Option<Phase>, Result<Manifest, SessionError>) {
        if self.lifeline.state() == SessionState::NeedsLogin {
            return (
                None,
                Err(self.not_now(
                    "back up",
                    "the page asks for a login; such a profile would hide the last logged-in backup",
                )),
            );
        }
        let Some(claim) = self.claim.clone() else {
            return (
                None,
                Err(self.not_now("back up", "the profile is not claimed by this host")),
            );
        };
        let quiesce = self.spec.backup_mode == BackupMode::Quiesce && self.browser.is_some();
        tracing::info!(session = %self.spec.id, reason, quiesce, "backup starts");
        let started = Instant::now();
        if quiesce {
            self.close_browser().await;
        }
        let (profile_read, read) = oneshot::channel();
        let hook: Arc<dyn Quiesce> = Arc::new(AlreadyQuiet(Mutex::new(Some(profile_read))));
        let backups = Arc::clone(&self.deps.backups);
        let session = self.spec.id.clone();
        let upload = async move {
            backups
                .backup(&session, &claim, hook, &Progress::default())
                .await
        };
        tokio::pin!(upload);
        let mut phase = None;
        let mut downtime = None;
        let result = if quiesce {
            let finished = tokio::select! {
                result = &mut upload => Some(result),
                _ = read => None,
            };
            let relaunch = self.launch("relaunching after the backup".into());
            let (result, next) = match finished {
                Some(result) => (result, relaunch.await),
                None => tokio::join!(&mut upload, relaunch),
            };
            downtime = Some(started.elapsed());
            if !matches!(next, Phase::Watch) {
                phase = Some(next);
            }
            result
        } else {
            upload.await
        };
        let took = started.elapsed();
        // The relaunch inside may have reached connected again; that is not
        // a new login, and a failed backup must not retry in a loop.
        self.backup_due = false;
        match result {
            Ok(manifest) => {
                self.counters.backups += 1;
                self.counters.backup_time_total += took;
                self.last_backup_error = None;
                self.last_backup = Some(BackupSummary {
                    id: manifest.id.to_string(),
                    at: SystemTime::now(),
                    size_bytes: manifest.size,
                    took: Some(took),
                    downtime,
                });
                tracing::info!(session = %self.spec.id, id = %manifest.id, size = manifest.size, took_ms = took.as_millis() as u64, downtime_ms = downtime.map(|d| d.as_millis() as u64), "backup saved");
                self.emit(SessionEvent::BackupSaved {
                    session: self.spec.id.clone(),
                    id: manifest.id.to_string(),
                    size_bytes: manifest.size,
                    took,
                });
                self.publish();
                (phase, Ok(manifest))
            }
            Err(e) => {
                self.counters.backup_failures += 1;
                self.last_backup_error = Some(e.to_string());
                tracing::error!(session = %self.spec.id, error = %e, "backup failed; the previous backup stays the newest");
                self.emit(SessionEvent::BackupFailed {
                    session: self.spec.id.clone(),
                    error: e.to_string(),
                });
                self.publish();
                (phase, Err(e.into()))
            }
        }
    }

    // ------------------------------------------------- commands, idle, stop

    /// Serves an operator's command while the browser runs. Returns the
    /// next phase when the command changed it.
    async fn serve(&mut self, command: Command) -> Option<Phase> {
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
                let _ = reply.send(result);
                Some(phase)
            }
            Command::Restart { reply } => {
                self.close_browser().await;
                let _ = reply.send(Ok(()));
                Some(self.relaunch("restart asked by the operator".into()).await)
            }
            Command::Screenshot { reply } => {
                let result = match &self.browser {
                    Some(browser) => browser.screenshot().await.map_err(SessionError::from),
                    None => Err(self.no_browser("take a screenshot")),
                };
                let _ = reply.send(result);
                None
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
            if let Some(phase) = self.serve_without_browser(command).await {
                return phase;
            }
        }
    }

    /// Serves an operator's command while no browser runs (idle, or
    /// waiting to retry). Returns the next phase when the command changed
    /// it.
    async fn serve_without_browser(&mut self, command: Command) -> Option<Phase> {
        match command {
            Command::Restart { reply } => {
                let _ = reply.send(Ok(()));
                self.blocked_tries = 0;
                Some(Phase::Prepare)
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
                let ok = result.is_ok();
                let _ = reply.send(result);
                ok.then_some(phase)
            }
            Command::BackupNow { reply } => {
                let (_, result) = self.backup("asked by the operator").await;
                let _ = reply.send(result);
                None
            }
            Command::Screenshot { reply } => {
                let _ = reply.send(Err(self.no_browser("take a screenshot")));
                None
            }
        }
    }

    async fn stop(&mut self) {
        let was_connected = self.lifeline.state() == SessionState::Connected;
        self.close_browser().await;
        if was_connected && self.spec.backup_on_shutdown && self.claim.is_some() {
            let _ = self.backup("the host is shutting down").await;
        }
        self.set_state(SessionState::Stopped, "the host is shutting down");
        self.commands.close();
    }

    /// The session cannot `what` in its current state, because `why`.
    fn not_now(&self, what: &'static str, why: &'static str) -> SessionError {
        SessionError::NotNow {
            session: self.spec.id.clone(),
            what,
            state: self.lifeline.state(),
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

    // ----------------------------------------------------- facts, status

    fn facts(&self) -> Facts {
        Facts {
            session: self.spec.id.clone(),
            state: self.lifeline.state(),
            time_in_state: self.lifeline.time_in_state(),
            consecutive_probe_failures: self.probe_failures,
            restarts_last_hour: self.restarts_last_hour(),
            since_activity: self.last_activity.map(|t| t.elapsed()),
            since_backup: self
                .last_backup
                .as_ref()
                .map(|b| SystemTime::now().duration_since(b.at).unwrap_or_default()),
            last_probe_detail: self
                .last_probe
                .as_ref()
                .map(|p| p.detail.clone())
                .unwrap_or_default(),
            since_connected: self.last_connected.map(|t| t.elapsed()),
            launch_failures: self.launch_failures,
            missing_critical_files: self.missing_critical.clone(),
        }
    }

    fn record_decision(&mut self, role: Role, decision: String, by: &ServedBy, took: Duration) {
        tracing::debug!(session = %self.spec.id, %role, %decision, served_by = %by, "policy decision");
        self.last_decision = Some(DecisionSummary {
            at: SystemTime::now(),
            role,
            decision,
            served_by: by.to_string(),
            fallback: by.is_fallback(),
            took,
        });
        self.publish();
    }

    /// Moves the state machine; returns whether the state changed.
    fn set_state(&mut self, to: SessionState, reason: impl Into<String>) -> bool {
        let from = self.lifeline.state();
        let reason = reason.into();
        if !self.lifeline.move_to(to, reason.clone()) {
            return false;
        }
        if let Some(i) = SessionState::ALL.iter().position(|s| *s == to) {
            self.counters.transitions[i] += 1;
        }
        self.emit(SessionEvent::StateChanged {
            session: self.spec.id.clone(),
            from,
            to,
            reason,
        });
        self.publish();
        true
    }

    fn emit(&self, event: SessionEvent) {
        // No subscriber is fine: events are for whoever listens.
        let _: Result<usize, broadcast::error::SendError<_>> = self.deps.events.send(event);
    }

    fn publish(&self) {
        let reason = self.lifeline.reason().to_string();
        self.status.send_replace(SessionStatus {
            id: self.spec.id.clone(),
            url: self.spec.url.clone(),
            state: self.lifeline.state(),
            since: self.lifeline.since(),
            reason,
            browser_pid: self.browser.as_ref().map(Browser::pid),
            last_probe: self.last_probe.clone(),
            consecutive_probe_failures: self.probe_failures,
            restarts_last_hour: self.restarts_last_hour(),
            last_backup: self.last_backup.clone(),
            last_backup_error: self.last_backup_error.clone(),
            last_restore: self.last_restore.clone(),
            last_decision: self.last_decision.clone(),
            history: self.lifeline.history().cloned().collect(),
            counters: self.counters.clone(),
        });
    }
}

/// The quiesce hook of a backup whose browser the session already closed:
/// `pause` has nothing left to do, and `resume` tells the session it may
/// relaunch (the archive has read the profile).
struct AlreadyQuiet(Mutex<Option<oneshot::Sender<()>>>);

impl Quiesce for AlreadyQuiet {
    fn pause<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn resume<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
        Box::pin(async { Ok(()) })
    }
}

/// What the browser does for a keepalive action; `None` for actions the
/// browser does not carry out (nothing, backup-now) and for scripts the
/// policy may not run.
fn browser_action(action: &Action, scripts_allowed: bool) -> Option<browser::Action> {
    Some(match action {
        Action::MouseMove { .. } => browser::Action::MouseMove,
        Action::KeyPress { key } => browser::Action::KeyPress(key.parse().ok()?),
        Action::Focus => browser::Action::Focus,
        Action::WakeLock => browser::Action::WakeLock,
        Action::Presence => browser::Action::Presence,
        Action::ReloadPage => browser::Action::Reload,
        Action::RunScript { script } if scripts_allowed => {
            browser::Action::RunScript(script.clone())
        }
        Action::RunScript { .. } | Action::BackupNow | Action::Nothing => return None,
    })
}

/// The profile as the restore policy sees it.
fn policy_inventory(inventory: &volume::Inventory) -> Inventory {
    Inventory {
        exists: inventory.exists,
        critical_files: inventory
            .critical
            .iter()
            .map(|c| CriticalFile {
                path: c.path.as_str().to_string(),
                present: !matches!(c.state, Presence::Missing),
                non_empty: matches!(c.state, Presence::Present { .. }),
            })
            .collect(),
        size_bytes: inventory.size_bytes,
        lock: match inventory.lock {
            volume::LockState::Free => LockState::None,
            volume::LockState::Stale { .. } => LockState::Stale,
            volume::LockState::Held { .. } => LockState::Held,
        },
    }
}

/// The backups as the restore policy sees them, newest first.
fn backup_facts(
    entries: &[BackupEntry],
    failed_here: &HashSet<String>,
    now: SystemTime,
) -> Vec<BackupFacts> {
    entries
        .iter()
        .map(|e| {
            let created: SystemTime = e.manifest.created.into();
            BackupFacts {
                id: e.id().to_string(),
                age: now.duration_since(created).unwrap_or_default(),
                size_bytes: e.manifest.size,
                verified: true,
                restore_failed: e.failure.is_some() || failed_here.contains(e.id().as_str()),
            }
        })
        .collect()
}

/// Resolves once the host is shutting down (or the supervisor is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// 1 s, 2 s, 4 s, ... up to `max`.
fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(16)).min(max)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn scripts_reach_the_browser_only_when_granted() {
        let script = Action::RunScript { script: "1".into() };
        assert_eq!(browser_action(&script, false), None);
        assert_eq!(
            browser_action(&script, true),
            Some(browser::Action::RunScript("1".into()))
        );
        assert_eq!(
            browser_action(
                &Action::KeyPress {
                    key: "Enter".into()
                },
                true
            ),
            None,
            "only keys that type nothing"
        );
        assert_eq!(browser_action(&Action::BackupNow, true), None);
    }

    #[test]
    fn the_policy_sees_critical_files_and_locks_in_its_own_words() {
        let inventory = volume::Inventory {
            dir: "/p".into(),
            exists: true,
            critical: vec![
                volume::CriticalFile {
                    path: "Default/IndexedDB".parse().unwrap(),
                    state: Presence::Present { bytes: 10 },
                },
                volume::CriticalFile {
                    path: "Default/Local Storage".parse().unwrap(),
                    state: Presence::Empty,
                },
            ],
            size_bytes: 10,
            files: 1,
            lock: volume::LockState::Stale {
                target: "elsewhere-1".into(),
                why: volume::StaleReason::OtherHost,
            },
        };
        let seen = policy_inventory(&inventory);
        assert_eq!(seen.lock, LockState::Stale);
        assert!(seen.critical_files[0].present && seen.critical_files[0].non_empty);
        assert!(seen.critical_files[1].present && !seen.critical_files[1].non_empty);
        assert!(!seen.is_complete());
    }
}
