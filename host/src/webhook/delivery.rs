//! One webhook's worker: takes events from its outbox in order and POSTs
//! each one, retrying with exponential backoff and jitter until it is
//! accepted or the attempts run out. The wait between tries is a plain
//! function ([`Backoff::delay`]); the worker only sleeps it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::Webhook;
use super::event::Delivery;
use super::signature::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign};

/// How a failed delivery is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries per event, the first included (at least 1).
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// Exponential backoff: `base`, `2 base`, `4 base`... capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failed try number `attempt` (1-based). `jitter` in
    /// [0, 1) picks a point in the upper half of the step, so webhooks that
    /// failed together (a receiver restarting) do not retry in lockstep,
    /// while a wait never falls below half its step.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let step = self.base.saturating_mul(factor).min(self.max);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A random number in [0, 1) from the process's CSPRNG (through uuid,
/// already a dependency), for [`Backoff::delay`].
fn jitter() -> f64 {
    let (bits, _) = uuid::Uuid::new_v4().as_u64_pair();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Why one try failed.
#[derive(Debug)]
enum Failure {
    /// The receiver answered, but not with 2xx (redirects are not followed:
    /// a POST must not turn into a GET elsewhere).
    Status(reqwest::StatusCode),
    /// No answer: refused, reset, TLS, or longer than the timeout.
    Transport(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "answered {status}"),
            Failure::Transport(why) => f.write_str(why),
        }
    }
}

/// The worker task: runs until the outbox is closed and empty.
pub(super) async fn run(hook: Arc<Webhook>, client: reqwest::Client, retry: Retry) {
    while let Some(delivery) = hook.outbox.next().await {
        hook.counters.hold(Some(delivery.clone()));
        deliver(&hook, &client, retry, &delivery).await;
        hook.counters.hold(None);
    }
}

async fn deliver(hook: &Webhook, client: &reqwest::Client, retry: Retry, delivery: &Delivery) {
    let signature = sign(hook.secret.expose(), &delivery.body);
    let max = retry.max_attempts.max(1);
    for attempt in 1..=max {
        let failure = match post(hook, client, delivery, &signature).await {
            Ok(()) => {
                hook.counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    webhook = %hook.name,
                    event = %delivery.kind,
                    delivery = %delivery.id,
                    attempt,
                    "webhook: delivered"
                );
                return;
            }
            Err(failure) => failure,
        };
        if attempt == max {
            hook.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                webhook = %hook.name,
                url = %hook.shown_url,
                event = %delivery.kind,
                delivery = %delivery.id,
                attempts = attempt,
                "webhook: gave up on the event after {attempt} attempt(s): {failure}"
            );
            return;
        }
        hook.counters.retried.fetch_add(1, Ordering::Relaxed);
        let wait = retry.backoff.delay(attempt, jitter());
        tracing::warn!(
            webhook = %hook.name,
            url = %hook.shown_url,
            event = %delivery.kind,
            delivery = %delivery.id,
            "webhook: attempt {attempt}/{max} failed: {failure}; retrying in {} ms",
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
    }
}

async fn post(
    hook: &Webhook,
    client: &reqwest::Client,
    delivery: &Delivery,
    signature: &str,
) -> Result<(), Failure> {
    let response = client
        .post(hook.url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(EVENT_HEADER, delivery.kind.as_str())
        .header(DELIVERY_HEADER, delivery.id.as_str())
        .header(SIGNATURE_HEADER, signature)
        .body(delivery.body.clone())
        .send()
        .await
        // The URL may carry a token in its query: never in a log line.
        .map_err(|e| Failure::Transport(describe(&e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::Status(status))
    }
}

/// An error with its causes ("error sending request: connection refused"),
/// since reqwest's own message rarely says what went wrong.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_from_base_to_max() {
        let b = Backoff {
            base: 100 * MS,
            max: 1000 * MS,
        };
        // The top of each step (jitter just under 1).
        let top: Vec<u128> = (1..=6).map(|a| b.delay(a, 0.999_999).as_millis()).collect();
        assert_eq!(top, [99, 199, 399, 799, 999, 999]);
        // The bottom: half the step.
        assert_eq!(b.delay(1, 0.0), 50 * MS);
        assert_eq!(b.delay(4, 0.0), 400 * MS);
        assert_eq!(b.delay(30, 0.0), 500 * MS);
    }

    #[test]
    fn backoff_never_overflows() {
        let b = Backoff {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(86_400),
        };
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(43_200));
    }

    #[test]
    fn jitter_stays_in_its_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
