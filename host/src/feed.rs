//! The host's event feed: every event an operator can be told about (the
//! events webhooks carry), numbered in the order they happened, each made
//! once into the very JSON body a webhook receives. Live subscribers (the
//! API's `GET /v1/events` stream) get them from a broadcast; the last
//! [`RECENT`] are kept in memory, for `vigil events` and for subscribers
//! that resume after a reconnect.
//!
//! Publishing never blocks and never fails: a subscriber that falls more
//! than [`LIVE_CAPACITY`] events behind loses the oldest and is told how
//! many ([`Item::Lagged`]); nobody else waits for it. Nothing is kept
//! across restarts (numbering starts again at 1).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::webhook::{Delivery, Event};

/// Events kept for `GET /v1/events/recent` and for resuming subscribers.
pub const RECENT: usize = 200;
/// Events a live subscriber may fall behind before it loses some.
pub const LIVE_CAPACITY: usize = 256;

/// One event as published: its number on this host and its body.
#[derive(Debug)]
pub struct Published {
    /// 1, 2, 3... in publishing order; the SSE `id`.
    pub seq: u64,
    pub delivery: Arc<Delivery>,
}

impl Published {
    /// The body as text (it is always UTF-8 JSON on one line).
    pub fn body(&self) -> &str {
        std::str::from_utf8(&self.delivery.body).expect("bodies are serialized JSON")
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Arc<Published>),
    /// This many events were lost before the next one: the subscriber
    /// fell behind, or asked to resume after events no longer kept.
    Lagged {
        missed: u64,
    },
}

pub struct EventFeed {
    host: String,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Published>>,
}

struct State {
    last_seq: u64,
    recent: VecDeque<Arc<Published>>,
}

impl EventFeed {
    /// A feed whose bodies name `host`.
    pub fn new(host: impl Into<String>) -> Self {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Self {
            host: host.into(),
            state: Mutex::new(State {
                last_seq: 0,
                recent: VecDeque::with_capacity(RECENT),
            }),
            live,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers `event`, makes its body, keeps it among the recent ones
    /// and hands it to every live subscriber.
    pub fn publish(&self, event: &Event) -> Arc<Published> {
        let delivery = Arc::new(Delivery::new(event, &self.host, chrono::Utc::now()));
        let mut state = self.state();
        state.last_seq += 1;
        let published = Arc::new(Published {
            seq: state.last_seq,
            delivery,
        });
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(published.clone());
        // Sent under the lock, so a new subscriber sees every event either
        // in its backlog or live, never in neither. No subscriber: fine.
        let _ = self.live.send(published.clone());
        published
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Arc<Published>> {
        self.state().recent.iter().cloned().collect()
    }

    /// The number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.state().last_seq
    }

    /// Events from now on; with `after`, first the kept events numbered
    /// above it (and a [`Item::Lagged`] for those no longer kept).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let state = self.state();
        let live = self.live.subscribe();
        let last_seq = state.last_seq;
        let Some(after) = after else {
            return Subscription {
                backlog: VecDeque::new(),
                seen: last_seq,
                live,
            };
        };
        // A number from before a restart of the host is above ours: there
        // is nothing to replay, and the numbers that follow are new.
        let after = after.min(last_seq);
        let mut backlog: VecDeque<Item> = state
            .recent
            .iter()
            .filter(|p| p.seq > after)
            .map(|p| Item::Event(p.clone()))
            .collect();
        let first_kept = state.recent.front().map_or(last_seq + 1, |p| p.seq);
        let missed = first_kept.saturating_sub(after + 1);
        if missed > 0 {
            backlog.push_front(Item::Lagged { missed });
        }
        Subscription {
            backlog,
            seen: last_seq,
            live,
        }
    }
}

/// One subscriber's place in the feed.
pub struct Subscription {
    backlog: VecDeque<Item>,
    /// The newest event already handed out (or in the backlog).
    seen: u64,
    live: broadcast::Receiver<Arc<Published>>,
}

impl Subscription {
    /// The next item; `None` once the feed is gone.
    pub async fn next(&mut self) -> Option<Item> {
        if let Some(item) = self.backlog.pop_front() {
            return Some(item);
        }
        loop {
            match self.live.recv().await {
                Ok(p) if p.seq <= self.seen => continue,
                Ok(p) => {
                    self.seen = p.seq;
                    return Some(Item::Event(p));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Item::Lagged { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;
    use std::path::PathBuf;

    fn event(n: usize) -> Event {
        Event::PolicyRemoved {
            file: PathBuf::from(format!("policies/{n}.toml")),
        }
    }

    fn seq(item: Option<Item>) -> u64 {
        match item {
            Some(Item::Event(p)) => p.seq,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn subscribers_get_the_same_bodies_in_order() {
        let feed = EventFeed::new("vigil-0");
        let mut sub = feed.subscribe(None);
        let session = SessionId::new("main").unwrap();
        let published = feed.publish(&Event::SessionNeedsLogin { session, qr: None });
        feed.publish(&event(2));
        let Some(Item::Event(first)) = sub.next().await else {
            panic!("an event")
        };
        assert_eq!(first.seq, 1);
        assert!(Arc::ptr_eq(&first.delivery, &published.delivery));
        let body: serde_json::Value = serde_json::from_str(first.body()).unwrap();
        assert_eq!(body["event"], "session.needs_login");
        assert_eq!(body["host"], "vigil-0");
        assert_eq!(seq(sub.next().await), 2);
    }

    #[tokio::test]
    async fn the_recent_ring_keeps_the_newest_and_a_resume_replays_them() {
        let feed = EventFeed::new("h");
        for n in 0..RECENT + 5 {
            feed.publish(&event(n));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].seq, 6);
        assert_eq!(feed.last_seq(), (RECENT + 5) as u64);

        // Resuming after event 2: events 3 to 5 are gone, said so first.
        let mut sub = feed.subscribe(Some(2));
        assert!(matches!(sub.next().await, Some(Item::Lagged { missed: 3 })));
        assert_eq!(seq(sub.next().await), 6);

        // Resuming after the newest: only what comes next, once.
        let mut sub = feed.subscribe(Some(feed.last_seq()));
        feed.publish(&event(0));
        assert_eq!(seq(sub.next().await), (RECENT + 6) as u64);

        // A number from a previous run of the host replays nothing.
        let mut sub = feed.subscribe(Some(1_000_000));
        feed.publish(&event(0));
        assert_eq!(seq(sub.next().await), (RECENT + 7) as u64);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_missed_and_stalls_nobody() {
        let feed = EventFeed::new("h");
        let mut slow = feed.subscribe(None);
        let mut quick = feed.subscribe(None);
        for n in 0..LIVE_CAPACITY + 10 {
            feed.publish(&event(n));
            assert_eq!(seq(quick.next().await), n as u64 + 1);
        }
        assert!(matches!(
            slow.next().await,
            Some(Item::Lagged { missed: 10 })
        ));
        assert_eq!(seq(slow.next().await), 11);
    }
}
