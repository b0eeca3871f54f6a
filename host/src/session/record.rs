//! The session's record: what a session has been through, as plain data.
//! Its state and history, the last probe and how many failed in a row,
//! browser restarts in the last hour and the back-off they earn, failed
//! launches and blocked starts and their pauses, whether a backup is due
//! after a login, the last backup, restore and policy decision, and the
//! counters for metrics. From it come the [`Facts`] policies are given
//! and the [`SessionStatus`] operators see.
//!
//! No I/O and no browser: the runner tells it what happened (with the
//! time, so tests choose the clock) and carries out what it says; every
//! rule here is unit-tested without Chromium.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use super::SessionEvent;
use super::spec::SessionSpec;
use super::state::{Lifeline, SessionState};
use super::status::{
    BackupSummary, DecisionSummary, ProbeSummary, RestoreSource, RestoreSummary, SessionCounters,
    SessionStatus,
};
use crate::browser::PageState;
use crate::id::SessionId;
use crate::policy::{Facts, Role, ServedBy};

/// The longest pause between two tries of a session that cannot start:
/// slow, but never given up.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(15 * 60);
/// Browser deaths within an hour tolerated before relaunches back off.
pub(crate) const FREE_RESTARTS_PER_HOUR: u32 = 3;
/// The longest pause before relaunching a browser that keeps dying.
pub(crate) const MAX_RELAUNCH_BACKOFF: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// 1 s, 2 s, 4 s, ... up to `max`.
pub(crate) fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(16)).min(max)
}

/// Everything one session's runner remembers about it.
#[derive(Debug)]
pub(crate) struct Record {
    session: SessionId,
    lifeline: Lifeline,
    probe_failures: u32,
    last_probe: Option<ProbeSummary>,
    /// When the browser was restarted (died, or a watchdog restart), the
    /// last hour's.
    restarts: VecDeque<Instant>,
    /// Launches in a row in which the browser did not start.
    launch_failures: u32,
    /// Tries in a row that found the session unable to start (profile
    /// held, unreadable, not claimable).
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

impl Record {
    pub fn new(session: SessionId) -> Self {
        Record {
            lifeline: Lifeline::new(session.clone()),
            session,
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
        }
    }

    pub fn state(&self) -> SessionState {
        self.lifeline.state()
    }

    /// Moves the state machine; the event to raise when the state changed.
    pub fn move_to(&mut self, to: SessionState, reason: impl Into<String>) -> Option<SessionEvent> {
        let from = self.lifeline.state();
        let reason = reason.into();
        if !self.lifeline.move_to(to, reason.clone()) {
            return None;
        }
        if let Some(i) = SessionState::ALL.iter().position(|s| *s == to) {
            self.counters.transitions[i] += 1;
        }
        Some(SessionEvent::StateChanged {
            session: self.session.clone(),
            from,
            to,
            reason,
        })
    }

    /// What a probe saw. Connected resets the failures, clears the
    /// missing files, and makes a backup due after a new login (or when
    /// the session has none yet) if `backup_after_login`; needs-login
    /// remembers that a login is coming; anything else is a failure.
    pub fn probed(
        &mut self,
        page: PageState,
        detail: String,
        now: Instant,
        at: SystemTime,
        backup_after_login: bool,
    ) -> Option<SessionEvent> {
        self.last_probe = Some(ProbeSummary {
            at,
            outcome: match page {
                PageState::Connected => "connected",
                PageState::NeedsLogin => "needs-login",
                PageState::Other => "other",
            }
            .into(),
            detail: detail.clone(),
        });
        match page {
            PageState::Connected => {
                self.probe_failures = 0;
                self.last_connected = Some(now);
                self.missing_critical.clear();
                let new_login = self.saw_needs_login;
                self.saw_needs_login = false;
                let moved = self.move_to(SessionState::Connected, "probe: connected");
                if moved.is_some()
                    && backup_after_login
                    && (new_login || self.last_backup.is_none())
                {
                    self.backup_due = true;
                }
                moved
            }
            PageState::NeedsLogin => {
                self.probe_failures = 0;
                self.saw_needs_login = true;
                self.move_to(
                    SessionState::NeedsLogin,
                    format!("probe: needs-login ({detail})"),
                )
            }
            PageState::Other => {
                self.probe_failures += 1;
                self.counters.probe_failures += 1;
                self.move_to(SessionState::Degraded, format!("probe: {detail}"))
            }
        }
    }

    /// Whether a backup is due (after a new login), clearing it.
    pub fn take_backup_due(&mut self) -> bool {
        std::mem::take(&mut self.backup_due)
    }

    /// A browser restart (it died, or a watchdog restarted it).
    pub fn restarted(&mut self, now: Instant) {
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > HOUR)
        {
            self.restarts.pop_front();
        }
        self.counters.restarts += 1;
    }

    pub fn restarts_last_hour(&self, now: Instant) -> u32 {
        self.restarts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= HOUR)
            .count() as u32
    }

    /// How long to wait before relaunching a browser that died: nothing
    /// for the first [`FREE_RESTARTS_PER_HOUR`] of an hour, then 1 s, 2 s,
    /// 4 s ... up to [`MAX_RELAUNCH_BACKOFF`].
    pub fn relaunch_wait(&self, now: Instant) -> Option<Duration> {
        let recent = self.restarts_last_hour(now);
        (recent > FREE_RESTARTS_PER_HOUR)
            .then(|| backoff(recent - FREE_RESTARTS_PER_HOUR, MAX_RELAUNCH_BACKOFF))
    }

    /// The browser started: the failed launches and blocked tries in a
    /// row are over.
    pub fn launched(&mut self) {
        self.launch_failures = 0;
        self.blocked_tries = 0;
    }

    /// The browser did not start; how long to wait before the next try.
    pub fn launch_failed(&mut self) -> Duration {
        self.launch_failures += 1;
        backoff(self.launch_failures, MAX_RETRY_WAIT)
    }

    pub fn launch_failures(&self) -> u32 {
        self.launch_failures
    }

    /// The session cannot start now; how long to wait before the next try.
    pub fn blocked(&mut self) -> Duration {
        self.blocked_tries += 1;
        backoff(self.blocked_tries, MAX_RETRY_WAIT)
    }

    pub fn blocked_tries(&self) -> u32 {
        self.blocked_tries
    }

    /// An operator asked for a restart: the next try is the first again.
    pub fn unblock(&mut self) {
        self.blocked_tries = 0;
    }

    /// The page was acted on (a keepalive action succeeded).
    pub fn active(&mut self, now: Instant) {
        self.last_activity = Some(now);
    }

    pub fn missing_critical(&self) -> &[String] {
        &self.missing_critical
    }

    /// Whether the profile's critical files need looking at before a
    /// watchdog call (only while the session is not plainly connected).
    pub fn should_look_for_damage(&mut self) -> bool {
        if self.state() == SessionState::Connected && self.probe_failures == 0 {
            self.missing_critical.clear();
            return false;
        }
        true
    }

    pub fn set_missing_critical(&mut self, missing: Vec<String>) {
        self.missing_critical = missing;
    }

    /// The facts a keepalive or watchdog policy is given now.
    pub fn facts(&self, now: Instant, at: SystemTime) -> Facts {
        Facts {
            session: self.session.clone(),
            state: self.state(),
            time_in_state: self.lifeline.time_in_state(),
            consecutive_probe_failures: self.probe_failures,
            restarts_last_hour: self.restarts_last_hour(now),
            since_activity: self.last_activity.map(|t| now.saturating_duration_since(t)),
            since_backup: self
                .last_backup
                .as_ref()
                .map(|b| at.duration_since(b.at).unwrap_or_default()),
            last_probe_detail: self
                .last_probe
                .as_ref()
                .map(|p| p.detail.clone())
                .unwrap_or_default(),
            since_connected: self
                .last_connected
                .map(|t| now.saturating_duration_since(t)),
            launch_failures: self.launch_failures,
            missing_critical_files: self.missing_critical.clone(),
        }
    }

    /// A policy decided, in words.
    pub fn decided(
        &mut self,
        role: Role,
        decision: String,
        served_by: &ServedBy,
        took: Duration,
        at: SystemTime,
    ) {
        self.last_decision = Some(DecisionSummary {
            at,
            role,
            decision,
            served_by: served_by.to_string(),
            fallback: served_by.is_fallback(),
            took,
        });
    }

    /// A backup that exists, found in the store at start (before any is
    /// taken here).
    pub fn found_backup(&mut self, backup: BackupSummary) {
        if self.last_backup.is_none() {
            self.last_backup = Some(backup);
        }
    }

    pub fn backup_saved(&mut self, backup: BackupSummary) {
        self.counters.backups += 1;
        if let Some(took) = backup.took {
            self.counters.backup_time_total += took;
        }
        self.last_backup_error = None;
        self.last_backup = Some(backup);
    }

    pub fn backup_failed(&mut self, error: String) {
        self.counters.backup_failures += 1;
        self.last_backup_error = Some(error);
    }

    /// Where the profile of this run came from; the event to raise.
    pub fn restored(
        &mut self,
        source: RestoreSource,
        backup: Option<String>,
        took: Duration,
        at: SystemTime,
    ) -> SessionEvent {
        match source {
            RestoreSource::Disk => self.counters.restores_from_disk += 1,
            RestoreSource::Backup => self.counters.restores_from_backup += 1,
            RestoreSource::Fresh => self.counters.restores_fresh += 1,
        }
        self.counters.restore_time_total += took;
        self.last_restore = Some(RestoreSummary {
            at,
            source,
            backup: backup.clone(),
            took,
        });
        SessionEvent::Restored {
            session: self.session.clone(),
            source,
            backup,
            took,
        }
    }

    /// A restore failed (of `backup`, when one was named).
    pub fn restore_failed(&mut self, backup: Option<&str>) {
        self.counters.restore_failures += 1;
        if let Some(id) = backup {
            self.failed_restores.insert(id.to_string());
        }
    }

    /// A restore skipped this backup (it failed to open).
    pub fn restore_skipped(&mut self, backup: &str) {
        self.failed_restores.insert(backup.to_string());
    }

    /// Backups whose restore failed during this run.
    pub fn failed_restores(&self) -> &HashSet<String> {
        &self.failed_restores
    }

    /// What operators see now.
    pub fn status(
        &self,
        spec: &SessionSpec,
        browser_pid: Option<u32>,
        now: Instant,
    ) -> SessionStatus {
        SessionStatus {
            id: spec.id.clone(),
            url: spec.url.clone(),
            state: self.lifeline.state(),
            since: self.lifeline.since(),
            reason: self.lifeline.reason().to_string(),
            browser_pid,
            last_probe: self.last_probe.clone(),
            consecutive_probe_failures: self.probe_failures,
            restarts_last_hour: self.restarts_last_hour(now),
            last_backup: self.last_backup.clone(),
            last_backup_error: self.last_backup_error.clone(),
            last_restore: self.last_restore.clone(),
            last_decision: self.last_decision.clone(),
            history: self.lifeline.history().cloned().collect(),
            counters: self.counters.clone(),
            owner: spec
                .tenure
                .as_ref()
                .map(|t| crate::session::status::OwnerSummary {
                    host: t.member().host.to_string(),
                    incarnation: t.member().incarnation.as_str().to_string(),
                    epoch: t.owned().epoch,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record::new(SessionId::new("main").unwrap())
    }

    fn probe(r: &mut Record, page: PageState, now: Instant) -> Option<SessionEvent> {
        r.probed(page, format!("{page:?}"), now, SystemTime::now(), true)
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn three_restarts_an_hour_are_free_then_relaunches_back_off_until_they_age_out() {
        let mut r = record();
        let t0 = Instant::now();
        for i in 0..3 {
            r.restarted(t0 + Duration::from_secs(i));
            assert_eq!(r.relaunch_wait(t0 + Duration::from_secs(i)), None);
        }
        let waits: Vec<u64> = (3..7)
            .map(|i| {
                let t = t0 + Duration::from_secs(i);
                r.restarted(t);
                r.relaunch_wait(t).unwrap().as_secs()
            })
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8]);
        assert_eq!(r.restarts_last_hour(t0 + Duration::from_secs(10)), 7);
        // An hour later the old restarts no longer count.
        let later = t0 + Duration::from_secs(3600 + 7);
        assert_eq!(r.restarts_last_hour(later), 0);
        r.restarted(later);
        assert_eq!(r.relaunch_wait(later), None);
        assert_eq!(r.status_counters().restarts, 8);
    }

    #[test]
    fn blocked_tries_pause_longer_each_time_up_to_15_minutes_and_a_launch_resets_them() {
        let mut r = record();
        let waits: Vec<u64> = (0..12).map(|_| r.blocked().as_secs()).collect();
        assert_eq!(&waits[..4], &[1, 2, 4, 8]);
        assert_eq!(*waits.last().unwrap(), 900, "capped at 15 min");
        r.launched();
        assert_eq!(r.blocked().as_secs(), 1);
        assert_eq!(r.launch_failed().as_secs(), 1);
        assert_eq!(r.launch_failed().as_secs(), 2);
        assert_eq!(
            r.facts(Instant::now(), SystemTime::now()).launch_failures,
            2
        );
        r.launched();
        assert_eq!(r.launch_failures(), 0);
    }

    #[test]
    fn a_backup_is_due_after_a_new_login_not_after_a_reconnect() {
        let mut r = record();
        let now = Instant::now();
        // First connected ever, with no backup: due.
        assert!(probe(&mut r, PageState::Connected, now).is_some());
        assert!(r.take_backup_due());
        assert!(!r.take_backup_due(), "taken once");
        r.backup_saved(summary());
        // A drop and a reconnect on the same login: not due.
        probe(&mut r, PageState::Other, now);
        probe(&mut r, PageState::Connected, now);
        assert!(!r.take_backup_due());
        // A login screen, then connected: a new login, due.
        probe(&mut r, PageState::NeedsLogin, now);
        probe(&mut r, PageState::Connected, now);
        assert!(r.take_backup_due());
        // Still connected: no move, nothing due.
        assert!(probe(&mut r, PageState::Connected, now).is_none());
        assert!(!r.take_backup_due());
    }

    #[test]
    fn no_backup_is_due_when_after_login_backups_are_off() {
        let mut r = record();
        r.probed(
            PageState::Connected,
            "connected".into(),
            Instant::now(),
            SystemTime::now(),
            false,
        );
        assert!(!r.take_backup_due());
    }

    #[test]
    fn facts_follow_the_probes() {
        let mut r = record();
        let t0 = Instant::now();
        probe(&mut r, PageState::Connected, t0);
        r.set_missing_critical(vec!["Default/IndexedDB".into()]);
        probe(&mut r, PageState::Other, t0 + Duration::from_secs(5));
        probe(&mut r, PageState::Other, t0 + Duration::from_secs(10));
        let facts = r.facts(t0 + Duration::from_secs(12), SystemTime::now());
        assert_eq!(facts.state, SessionState::Degraded);
        assert_eq!(facts.consecutive_probe_failures, 2);
        assert_eq!(facts.since_connected, Some(Duration::from_secs(12)));
        assert_eq!(facts.last_probe_detail, "Other");
        assert_eq!(facts.missing_critical_files, vec!["Default/IndexedDB"]);
        assert!(r.should_look_for_damage());
        // Connected again: failures and missing files are cleared.
        probe(&mut r, PageState::Connected, t0 + Duration::from_secs(15));
        assert!(!r.should_look_for_damage());
        let facts = r.facts(t0 + Duration::from_secs(15), SystemTime::now());
        assert_eq!(facts.consecutive_probe_failures, 0);
        assert!(facts.missing_critical_files.is_empty());
        assert_eq!(facts.since_activity, None);
        r.active(t0 + Duration::from_secs(15));
        assert_eq!(
            r.facts(t0 + Duration::from_secs(16), SystemTime::now())
                .since_activity,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_status_counts_moves_restores_and_backups() {
        let mut r = record();
        let now = Instant::now();
        let moved = r.move_to(SessionState::Launching, "profile on disk");
        assert!(matches!(
            moved,
            Some(SessionEvent::StateChanged {
                from: SessionState::Starting,
                to: SessionState::Launching,
                ..
            })
        ));
        assert!(r.move_to(SessionState::Launching, "again").is_none());
        probe(&mut r, PageState::Connected, now);
        r.restored(
            RestoreSource::Disk,
            None,
            Duration::from_millis(5),
            SystemTime::now(),
        );
        r.backup_failed("store down".into());
        r.restore_failed(Some("b-1"));
        r.decided(
            Role::Watchdog,
            "healthy".into(),
            &ServedBy::BuiltIn,
            Duration::from_micros(20),
            SystemTime::now(),
        );
        let spec = spec();
        let status = r.status(&spec, Some(42), now);
        assert_eq!(status.state, SessionState::Connected);
        assert_eq!(status.browser_pid, Some(42));
        assert_eq!(status.counters.transitions_into(SessionState::Launching), 1);
        assert_eq!(status.counters.transitions_into(SessionState::Connected), 1);
        assert_eq!(status.counters.restores_from_disk, 1);
        assert_eq!(status.counters.backup_failures, 1);
        assert_eq!(status.counters.restore_failures, 1);
        assert_eq!(status.last_backup_error.as_deref(), Some("store down"));
        assert!(r.failed_restores().contains("b-1"));
        assert_eq!(status.last_decision.unwrap().decision, "healthy");
        assert_eq!(status.history.len(), 2);
    }

    fn spec() -> SessionSpec {
        let config = crate::config::Config::parse(
            "[[session]]\nid = \"main\"\nurl = \"http://127.0.0.1:1/\"\n",
            std::path::Path::new("vigil.toml"),
            std::path::Path::new("/srv"),
        )
        .unwrap();
        SessionSpec::from_config(&config, &config.sessions[0])
    }

    fn summary() -> BackupSummary {
        BackupSummary {
            id: "b-1".into(),
            at: SystemTime::now(),
            size_bytes: 1,
            took: Some(Duration::from_millis(3)),
            downtime: None,
        }
    }

    impl Record {
        fn status_counters(&self) -> &SessionCounters {
            &self.counters
        }
    }
}
