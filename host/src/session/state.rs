//! The states of one session and the record of how it moved between them.
//! Owns the transition history and the log line an operator greps for; it
//! decides nothing about *when* to move (that is [`super`]'s loop).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::id::SessionId;

/// The session's states are the ones policies see: one enum, so a policy
/// and the status API never disagree on a name.
pub use crate::policy::SessionState;

/// One move of the state machine, as the operator sees it in the history.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    #[serde(with = "crate::session::state::rfc3339")]
    pub at: SystemTime,
    pub from: SessionState,
    pub to: SessionState,
    pub reason: String,
}

/// The current state, since when, and the last [`Lifeline::CAPACITY`]
/// transitions. Every move is logged as `session ID is STATE` with the
/// session id, the new and old states and the reason as fields, so `grep
/// 'state=connected'` finds it. The reason often comes from a policy or a
/// page: it stays a field (the log format escapes it), never the message.
#[derive(Debug)]
pub struct Lifeline {
    session: SessionId,
    state: SessionState,
    /// Why the session is in its state now: the last transition's reason,
    /// or a newer word on the same state (a retry counting down, say).
    reason: String,
    since: Instant,
    since_wall: SystemTime,
    history: VecDeque<Transition>,
    transitions: u64,
}

impl Lifeline {
    pub const CAPACITY: usize = 100;

    pub fn new(session: SessionId) -> Self {
        Self {
            session,
            state: SessionState::Starting,
            reason: "starting".into(),
            since: Instant::now(),
            since_wall: SystemTime::now(),
            history: VecDeque::with_capacity(16),
            transitions: 0,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Why the session is in its state, in the latest words.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn since(&self) -> SystemTime {
        self.since_wall
    }

    pub fn time_in_state(&self) -> Duration {
        self.since.elapsed()
    }

    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Transition> {
        self.history.iter()
    }

    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Moves to `to` and records why. Staying in the same state records
    /// nothing and returns `false`, so a probe that keeps saying
    /// "connected" does not flood the history; the new reason still
    /// becomes [`reason`](Self::reason).
    pub fn move_to(&mut self, to: SessionState, reason: impl Into<String>) -> bool {
        let reason = reason.into();
        if to == self.state {
            self.reason = reason;
            return false;
        }
        let from = self.state;
        if matches!(to, SessionState::Failed | SessionState::Degraded) {
            tracing::warn!(session = %self.session, state = %to, from = %from, reason = %reason, "session {} is {to}", self.session);
        } else {
            tracing::info!(session = %self.session, state = %to, from = %from, reason = %reason, "session {} is {to}", self.session);
        }
        let now = SystemTime::now();
        if self.history.len() == Self::CAPACITY {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            at: now,
            from,
            to,
            reason: reason.clone(),
        });
        self.reason = reason;
        self.state = to;
        self.since = Instant::now();
        self.since_wall = now;
        self.transitions += 1;
        true
    }
}

/// Timestamps in the API and `--json` output are RFC 3339 in UTC.
pub mod rfc3339 {
    use std::time::SystemTime;

    pub fn format(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifeline() -> Lifeline {
        Lifeline::new(SessionId::new("main").unwrap())
    }

    #[test]
    fn records_each_move_with_its_reason_and_ignores_repeats() {
        let mut l = lifeline();
        assert!(l.move_to(SessionState::Launching, "profile on disk"));
        assert!(!l.move_to(SessionState::Launching, "again"));
        assert!(l.move_to(SessionState::Connected, "probe: connected"));
        let moves: Vec<_> = l
            .history()
            .map(|t| (t.from, t.to, t.reason.as_str()))
            .collect();
        assert_eq!(
            moves,
            vec![
                (
                    SessionState::Starting,
                    SessionState::Launching,
                    "profile on disk"
                ),
                (
                    SessionState::Launching,
                    SessionState::Connected,
                    "probe: connected"
                ),
            ]
        );
        assert_eq!(l.state(), SessionState::Connected);
        assert_eq!(l.transitions(), 2);
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let mut l = lifeline();
        for i in 0..(Lifeline::CAPACITY + 10) {
            let to = if i % 2 == 0 {
                SessionState::Connected
            } else {
                SessionState::Degraded
            };
            l.move_to(to, format!("move {i}"));
        }
        assert_eq!(l.history().count(), Lifeline::CAPACITY);
        assert_eq!(
            l.history().next_back().map(|t| t.reason.clone()),
            Some(format!("move {}", Lifeline::CAPACITY + 9))
        );
        assert_eq!(l.transitions(), (Lifeline::CAPACITY + 10) as u64);
    }

    #[test]
    fn serializes_states_in_the_operator_s_words() {
        assert_eq!(
            serde_json::to_string(&SessionState::NeedsLogin).unwrap(),
            "\"needs-login\""
        );
        for s in SessionState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
