//! One webhook's queue of events waiting to be sent: bounded, dropping the
//! oldest when full, so a sender never waits and memory never grows with a
//! dead receiver. Owns no task; the webhook's worker drains it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// What [`Outbox::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    Queued,
    /// Queued, after making room by dropping this, the oldest.
    DroppedOldest(T),
    /// The outbox is closed (shutting down): the item was not queued.
    Closed(T),
}

/// A bounded FIFO with one consumer.
#[derive(Debug)]
pub struct Outbox<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Wakes the consumer on a push or a close. `notify_one` keeps a permit
    /// when the consumer is not waiting yet, so no wake-up is lost.
    ready: Notify,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
            }),
            capacity,
            ready: Notify::new(),
        }
    }

    /// Queues `item` at once, whatever the consumer is doing.
    pub fn push(&self, item: T) -> Pushed<T> {
        let outcome = {
            let mut state = self.lock();
            if state.closed {
                return Pushed::Closed(item);
            }
            let dropped = if state.queue.len() >= self.capacity {
                state.queue.pop_front()
            } else {
                None
            };
            state.queue.push_back(item);
            dropped.map_or(Pushed::Queued, Pushed::DroppedOldest)
        };
        self.ready.notify_one();
        outcome
    }

    /// The oldest item, waiting for one if needed; `None` once the outbox is
    /// closed and empty.
    pub async fn next(&self) -> Option<T> {
        loop {
            {
                let mut state = self.lock();
                if let Some(item) = state.queue.pop_front() {
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Refuses new items; what is queued can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Empties the queue, returning what it held, oldest first.
    pub fn drain(&self) -> Vec<T> {
        self.lock().queue.drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // The lock guards plain pushes and pops that cannot panic midway,
        // so a poisoned lock still holds a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_full_outbox_drops_the_oldest_and_keeps_the_newest_in_order() {
        let outbox = Outbox::new(3);
        for i in 0..3 {
            assert_eq!(outbox.push(i), Pushed::Queued);
        }
        assert_eq!(outbox.push(3), Pushed::DroppedOldest(0));
        assert_eq!(outbox.push(4), Pushed::DroppedOldest(1));
        assert_eq!(outbox.len(), 3);
        outbox.close();
        assert_eq!(outbox.push(5), Pushed::Closed(5));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let drained: Vec<i32> = rt.block_on(async {
            let mut out = Vec::new();
            while let Some(i) = outbox.next().await {
                out.push(i);
            }
            out
        });
        assert_eq!(drained, [2, 3, 4]);
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_push_and_on_close() {
        let outbox = Arc::new(Outbox::new(8));
        let consumer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut got = Vec::new();
                while let Some(i) = outbox.next().await {
                    got.push(i);
                }
                got
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.push(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.push(2);
        outbox.close();
        let got = tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .expect("the consumer ends once closed and empty")
            .unwrap();
        assert_eq!(got, [1, 2]);
    }
}
