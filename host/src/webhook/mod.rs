//! Webhooks: tells an operator's own services what happens (a session
//! changed state, a backup was saved or failed, a restore, a policy reload)
//! by POSTing signed JSON to each `[[webhook]]` URL.
//!
//! Owns the webhooks' secrets, queues, worker tasks and delivery counters.
//! It must never block or fail its caller: [`WebhookSender::send`] only
//! queues (dropping the oldest event when a queue is full), and a slow or
//! dead receiver only ever delays its own queue. It knows nothing about
//! sessions beyond the [`Event`]s it is handed.
//!
//! - [`event`]: the events, their names and filters, the JSON body.
//! - [`signature`]: `X-Vigil-Signature` (HMAC-SHA256), signing and checking.
//! - [`outbox`]: the bounded, drop-oldest queue of one webhook.
//! - [`delivery`]: the worker that POSTs in order, with retries.
//! - `config`: `[[webhook]]` and `[webhooks]` of `vigil.toml`.

mod config;
pub mod delivery;
pub mod event;
pub mod outbox;
pub mod signature;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::secret::Secret;
pub use crate::secret::SecretSource;
pub use config::{WebhookConfig, WebhookDelivery};
pub use delivery::{Backoff, Retry};
pub use event::{Delivery, Event, EventKind, EventPattern, RestoreSource};
use outbox::{Outbox, Pushed};
pub use signature::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER, sign, sign_standard, standard_key, verify, verify_standard,
};

/// A full queue is logged at most this often per webhook (each drop is
/// counted): a dead receiver must not flood the log.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Why the webhooks cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("webhook {webhook}: its secret: {source}")]
    Secret {
        webhook: String,
        source: crate::secret::SecretError,
    },
    #[error("webhook {webhook}: its secret: {reason}")]
    StandardKey { webhook: String, reason: String },
    #[error("two webhooks are named {name:?}: give one of them another `name`")]
    DuplicateName { name: String },
    #[error("cannot set up the webhooks' HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The running webhooks: one worker task per `[[webhook]]`, owned here.
/// Dropping it stops the workers at once; [`Webhooks::shutdown`] lets them
/// flush first.
#[derive(Debug)]
pub struct Webhooks {
    sender: WebhookSender,
    workers: JoinSet<()>,
    flush_timeout: Duration,
}

/// The cheap, cloneable handle the rest of Vigil sends events through.
#[derive(Clone, Debug, Default)]
pub struct WebhookSender {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    hooks: Vec<Arc<Webhook>>,
    host: String,
}

/// One started `[[webhook]]`.
#[derive(Debug)]
struct Webhook {
    name: String,
    url: url::Url,
    /// The URL without credentials, query or fragment: safe to log.
    shown_url: String,
    secret: Secret,
    /// The Standard Webhooks key the secret stands for.
    standard_key: Secret,
    events: Vec<EventPattern>,
    outbox: Outbox<Arc<Delivery>>,
    counters: Counters,
    last_drop_warning: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// The event the worker holds (sending it or waiting to retry it).
    in_flight: Mutex<Option<Arc<Delivery>>>,
}

impl Counters {
    fn hold(&self, delivery: Option<Arc<Delivery>>) {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delivery;
    }

    fn take_in_flight(&self) -> Option<Arc<Delivery>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What one webhook has done since start, for `/metrics` and the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    pub name: String,
    /// Without credentials or query.
    pub url: String,
    /// Events the receiver accepted (2xx).
    pub delivered: u64,
    /// Tries after a failed one (a non-2xx answer or no answer).
    pub retried: u64,
    /// Events given up after `max_attempts` tries.
    pub failed: u64,
    /// Events dropped unsent: the oldest of a full queue, or still queued
    /// when the shutdown's `flush_timeout` ran out.
    pub dropped: u64,
    /// Events waiting now (the one being sent not included).
    pub queued: u64,
}

/// What was left behind by [`Webhooks::shutdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events still queued or being retried when `flush_timeout` ran out.
    pub abandoned: u64,
}

impl Webhooks {
    /// Reads every webhook's secret and starts one worker task per webhook.
    /// Call it inside the tokio runtime. With no webhook configured, nothing
    /// is started and sending costs nothing.
    pub fn start(
        hooks: &[WebhookConfig],
        delivery: &WebhookDelivery,
    ) -> Result<Self, WebhookError> {
        let mut started: Vec<Arc<Webhook>> = Vec::with_capacity(hooks.len());
        for config in hooks {
            let name = config
                .name
                .clone()
                .unwrap_or_else(|| default_name(config.url.get()));
            if started.iter().any(|h| h.name == name) {
                return Err(WebhookError::DuplicateName { name });
            }
            let secret = read_secret(&name, &config.secret)?;
            let standard_key = signature::standard_key(secret.expose())
                .map(Secret::from)
                .map_err(|reason| WebhookError::StandardKey {
                    webhook: name.clone(),
                    reason,
                })?;
            started.push(Arc::new(Webhook {
                shown_url: shown_url(config.url.get()),
                url: config.url.get().clone(),
                name,
                secret,
                standard_key,
                events: config.events.clone(),
                outbox: Outbox::new(delivery.queue_capacity.get()),
                counters: Counters::default(),
                last_drop_warning: Mutex::new(None),
            }));
        }
        let mut workers = JoinSet::new();
        if !started.is_empty() {
            let client = reqwest::Client::builder()
                .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
                .timeout(delivery.timeout)
                .connect_timeout(delivery.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(WebhookError::Client)?;
            let retry = Retry {
                max_attempts: delivery.max_attempts.get(),
                backoff: Backoff {
                    base: delivery.backoff_base,
                    max: delivery.backoff_max,
                },
            };
            for hook in &started {
                let events: Vec<String> = hook.events.iter().map(ToString::to_string).collect();
                tracing::info!(
                    webhook = %hook.name,
                    url = %hook.shown_url,
                    "webhook: sending {} to {}",
                    events.join(", "),
                    hook.shown_url
                );
                workers.spawn(delivery::run(hook.clone(), client.clone(), retry));
            }
        }
        Ok(Self {
            sender: WebhookSender {
                shared: Arc::new(Shared {
                    hooks: started,
                    host: host_name(),
                }),
            },
            workers,
            flush_timeout: delivery.flush_timeout,
        })
    }

    /// A handle for the parts of Vigil that report events.
    pub fn sender(&self) -> WebhookSender {
        self.sender.clone()
    }

    /// Same as [`WebhookSender::send`].
    pub fn send(&self, event: Event) {
        self.sender.send(event);
    }

    pub fn stats(&self) -> Vec<WebhookStats> {
        self.sender.stats()
    }

    /// Stops accepting events, lets the workers deliver what is queued for
    /// up to `flush_timeout`, then stops them. Events left are counted as
    /// dropped and logged.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.close();
        let workers = &mut self.workers;
        let flushed = tokio::time::timeout(self.flush_timeout, async {
            while let Some(ended) = workers.join_next().await {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    tracing::error!("webhook: a worker panicked: {e}");
                }
            }
        })
        .await
        .is_ok();
        if !flushed {
            self.workers.shutdown().await;
        }
        let mut abandoned = 0;
        for hook in &self.sender.shared.hooks {
            let held = hook.counters.take_in_flight();
            let left: Vec<Arc<Delivery>> = held.into_iter().chain(hook.outbox.drain()).collect();
            for delivery in &left {
                tracing::warn!(
                    webhook = %hook.name,
                    url = %hook.shown_url,
                    event = %delivery.kind,
                    delivery = %delivery.id,
                    flush_timeout_ms = self.flush_timeout.as_millis() as u64,
                    "webhook: event not delivered before shutdown"
                );
            }
            let left = left.len() as u64;
            hook.counters.dropped.fetch_add(left, Ordering::Relaxed);
            abandoned += left;
        }
        ShutdownReport { abandoned }
    }

    fn close(&self) {
        for hook in &self.sender.shared.hooks {
            hook.outbox.close();
        }
    }
}

impl Drop for Webhooks {
    /// Senders that outlive the webhooks queue nothing more; the JoinSet
    /// aborts the workers.
    fn drop(&mut self) {
        self.close();
    }
}

impl WebhookSender {
    /// Queues `event` for every webhook whose `events` filter matches it and
    /// returns at once. Never blocks and never fails: a full queue drops its
    /// oldest event (counted, logged), and after shutdown events are ignored.
    pub fn send(&self, event: Event) {
        if !self.wants(event.kind()) {
            return;
        }
        let delivery = Delivery::new(&event, &self.shared.host, chrono::Utc::now());
        self.send_delivery(Arc::new(delivery));
    }

    /// Like [`send`](Self::send), for an event already made into a body
    /// (the event feed makes each body once, so webhooks and the API's
    /// event stream carry the very same bytes).
    pub fn send_delivery(&self, delivery: Arc<Delivery>) {
        for hook in &self.shared.hooks {
            if hook.events.iter().any(|p| p.matches(delivery.kind)) {
                hook.enqueue(delivery.clone());
            }
        }
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.shared
            .hooks
            .iter()
            .any(|h| h.events.iter().any(|p| p.matches(kind)))
    }

    /// The `host` field of every body: this machine's host name.
    pub fn host(&self) -> &str {
        &self.shared.host
    }

    /// Counters of every webhook, in config order.
    pub fn stats(&self) -> Vec<WebhookStats> {
        self.shared
            .hooks
            .iter()
            .map(|h| WebhookStats {
                name: h.name.clone(),
                url: h.shown_url.clone(),
                delivered: h.counters.delivered.load(Ordering::Relaxed),
                retried: h.counters.retried.load(Ordering::Relaxed),
                failed: h.counters.failed.load(Ordering::Relaxed),
                dropped: h.counters.dropped.load(Ordering::Relaxed),
                queued: h.outbox.len() as u64,
            })
            .collect()
    }
}

impl Webhook {
    fn enqueue(&self, delivery: Arc<Delivery>) {
        match self.outbox.push(delivery) {
            Pushed::Queued => {}
            Pushed::DroppedOldest(oldest) => {
                let total = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = self
                    .last_drop_warning
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        webhook = %self.name,
                        url = %self.shown_url,
                        event = %oldest.kind,
                        delivery = %oldest.id,
                        dropped_total = total,
                        "webhook: queue full (receiver slow or down); dropped the oldest event"
                    );
                }
            }
            Pushed::Closed(late) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    webhook = %self.name,
                    event = %late.kind,
                    delivery = %late.id,
                    "webhook: event raised after the webhooks shut down; not delivered"
                );
            }
        }
    }
}

fn read_secret(webhook: &str, source: &SecretSource) -> Result<Secret, WebhookError> {
    source.read().map_err(|source| WebhookError::Secret {
        webhook: webhook.to_string(),
        source,
    })
}

/// `hooks.example.com/vigil` for `https://user:pw@hooks.example.com/vigil?t=1`.
fn default_name(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    match url.port() {
        Some(port) => format!("{host}:{port}{path}"),
        None => format!("{host}{path}"),
    }
}

fn shown_url(url: &url::Url) -> String {
    format!("{}://{}", url.scheme(), default_name(url))
}

/// This machine's host name as receivers see it in `host` (a pod's name
/// under Kubernetes).
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: Option<&str>, secret: SecretSource) -> WebhookConfig {
        WebhookConfig {
            name: name.map(str::to_string),
            url: "https://hooks.example.com/vigil/".parse().unwrap(),
            secret,
            events: EventPattern::every_event(),
        }
    }

    #[tokio::test]
    async fn a_missing_secret_names_the_webhook_and_where_it_looked() {
        let delivery = WebhookDelivery::default();
        let err = Webhooks::start(
            &[hook(
                None,
                SecretSource::File("/nonexistent/webhook.secret".into()),
            )],
            &delivery,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("webhook hooks.example.com/vigil"), "{err}");
        assert!(err.contains("/nonexistent/webhook.secret"), "{err}");

        let var = "VIGIL_TEST_WEBHOOK_SECRET_THAT_IS_NEVER_SET";
        let err = Webhooks::start(
            &[hook(Some("pager"), SecretSource::Env(var.into()))],
            &delivery,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("webhook pager"), "{err}");
        assert!(err.contains(var), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.secret");
        std::fs::write(&empty, "\n").unwrap();
        let err = Webhooks::start(&[hook(None, SecretSource::File(empty))], &delivery)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[tokio::test]
    async fn secrets_lose_their_trailing_newline_and_names_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("webhook.secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let secret = read_secret("w", &SecretSource::File(file.clone())).unwrap();
        assert_eq!(secret.expose(), b"s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(..)");

        let same = [
            hook(None, SecretSource::File(file.clone())),
            hook(None, SecretSource::File(file)),
        ];
        let err = Webhooks::start(&same, &WebhookDelivery::default()).unwrap_err();
        assert!(matches!(err, WebhookError::DuplicateName { .. }), "{err}");
    }

    #[test]
    fn shown_urls_hide_credentials_and_queries() {
        let url: url::Url = "https://u:pw@hooks.example.com:8443/in/?token=abc"
            .parse()
            .unwrap();
        assert_eq!(default_name(&url), "hooks.example.com:8443/in");
        assert_eq!(shown_url(&url), "https://hooks.example.com:8443/in");
    }

    #[tokio::test]
    async fn with_no_webhook_sending_does_nothing() {
        let webhooks = Webhooks::start(&[], &WebhookDelivery::default()).unwrap();
        webhooks.send(Event::PolicyRemoved {
            file: "policies/a.toml".into(),
        });
        assert!(webhooks.stats().is_empty());
        assert_eq!(webhooks.shutdown().await, ShutdownReport { abandoned: 0 });
        WebhookSender::default().send(Event::PolicyRemoved {
            file: "policies/a.toml".into(),
        });
    }
}
