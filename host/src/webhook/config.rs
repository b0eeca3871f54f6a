//! `[[webhook]]` and `[webhooks]` in `vigil.toml`: where events are sent,
//! with which secret, and how deliveries are retried. Owned here, with the
//! webhooks they configure; `config` only places the sections in the file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::EventPattern;
use crate::fields::{AppUrl, opt_path, secs};
use crate::secret::SecretSource;

/// One `[[webhook]]`: a receiver of signed event notifications. Its secret
/// is read when the webhooks start (`crate::webhook::Webhooks::start`), so
/// a missing file or variable is reported then, with this webhook's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WebhookFields")]
pub struct WebhookConfig {
    /// Names it in logs and metrics; default: the URL's host, port and path.
    pub name: Option<String>,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: AppUrl,
    /// The HMAC-SHA256 key receivers check signatures with.
    pub secret: SecretSource,
    /// Which events it receives; default every one.
    pub events: Vec<EventPattern>,
}

/// `[[webhook]]` as written, checked into a [`WebhookConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFields {
    #[serde(default)]
    name: Option<String>,
    url: AppUrl,
    #[serde(default, deserialize_with = "opt_path")]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default = "EventPattern::every_event")]
    events: Vec<EventPattern>,
}

impl TryFrom<WebhookFields> for WebhookConfig {
    type Error = String;
    fn try_from(f: WebhookFields) -> Result<Self, String> {
        let secret = match (f.secret_file, f.secret_env) {
            (Some(file), None) => SecretSource::File(file),
            (None, Some(var)) if !var.is_empty() => SecretSource::Env(var),
            (None, Some(_)) => return Err(format!("webhook {}: secret_env is empty", f.url)),
            (None, None) => {
                return Err(format!(
                    "webhook {}: set secret_file or secret_env (the key its signatures are made with)",
                    f.url
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "webhook {}: set only one of secret_file and secret_env",
                    f.url
                ));
            }
        };
        if f.events.is_empty() {
            return Err(format!(
                "webhook {}: events is empty; leave it out to receive every event",
                f.url
            ));
        }
        if f.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(format!("webhook {}: name is empty", f.url));
        }
        Ok(Self {
            name: f.name,
            url: f.url,
            secret,
            events: f.events,
        })
    }
}

/// `[webhooks]`: how events reach every `[[webhook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDelivery {
    /// Events waiting per webhook; when full, the oldest is dropped.
    pub queue_capacity: std::num::NonZeroUsize,
    /// Tries per event, the first included, before it is given up.
    pub max_attempts: std::num::NonZeroU32,
    /// The wait after the first failed try; it doubles after each one
    /// (with jitter) up to `backoff_max_secs`.
    #[serde(rename = "backoff_base_secs", deserialize_with = "secs")]
    pub backoff_base: Duration,
    #[serde(rename = "backoff_max_secs", deserialize_with = "secs")]
    pub backoff_max: Duration,
    /// A request (connect, send, answer) taking longer has failed.
    #[serde(rename = "timeout_secs", deserialize_with = "secs")]
    pub timeout: Duration,
    /// On shutdown, how long queued events may still be delivered.
    #[serde(rename = "flush_timeout_secs", deserialize_with = "secs")]
    pub flush_timeout: Duration,
}

impl Default for WebhookDelivery {
    fn default() -> Self {
        Self {
            queue_capacity: std::num::NonZeroUsize::new(1000).expect("non-zero"),
            max_attempts: std::num::NonZeroU32::new(10).expect("non-zero"),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(5),
        }
    }
}
