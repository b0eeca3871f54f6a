//! A webhook receiver for tests: a real HTTP server on 127.0.0.1 that checks
//! every delivery's signatures the way an operator's service would (its own
//! HMAC, not Vigil's code): `X-Vigil-Signature`, and the Standard Webhooks
//! headers as the spec's libraries check them. It records what arrived and
//! answers as told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use tokio::sync::{Notify, watch};

/// How the receiver answers a correctly signed delivery. A delivery whose
/// signatures (either of them) do not check out always gets 401.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Accept,
    /// 500 for the first `n` attempts of each delivery id, then 200.
    FailFirst(usize),
    /// Holds every request until [`Receiver::release`], then 200.
    HoldUntilReleased,
    /// Never answers.
    Never,
    /// Waits this long, then 200.
    Slowly(Duration),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub path: String,
    pub event: String,
    pub delivery: String,
    pub signature: String,
    /// The receiver's own check of `signature` against `body`.
    pub signature_valid: bool,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    pub webhook_id: String,
    pub webhook_timestamp: String,
    pub standard_signature: String,
    /// The receiver's own Standard Webhooks check of those three against
    /// `body`, the timestamp within 5 minutes of now included.
    pub standard_valid: bool,
    pub body: Bytes,
}

impl Attempt {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub struct Receiver {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    secret: Vec<u8>,
    standard_key: Vec<u8>,
    answer: Answer,
    attempts: Mutex<Vec<Attempt>>,
    arrived: Notify,
    gate: watch::Sender<bool>,
}

impl Receiver {
    /// Starts a receiver that checks signatures with `secret`.
    pub async fn start(secret: &str, answer: Answer) -> Receiver {
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            standard_key: standard_key(secret),
            answer,
            attempts: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            gate: watch::channel(false).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a port for the receiver");
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Receiver {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (panics after 10 s).
    pub async fn wait_for_attempts(&self, n: usize) -> Vec<Attempt> {
        let waiting = async {
            loop {
                let arrived = self.shared.arrived.notified();
                let attempts = self.attempts();
                if attempts.len() >= n {
                    return attempts;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "waited 10 s for {n} webhook requests; got {}",
                    self.attempts().len()
                )
            })
    }

    /// Lets held requests (and later ones) be answered.
    pub fn release(&self) {
        self.shared.gate.send_replace(true);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let signature = header("x-vigil-signature");
    let (webhook_id, webhook_timestamp, standard_signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let attempt = Attempt {
        path: uri.path().to_string(),
        event: header("x-vigil-event"),
        delivery: header("x-vigil-delivery"),
        signature_valid: signature_is_valid(&shared.secret, &body, &signature),
        signature,
        standard_valid: standard_signature_is_valid(
            &shared.standard_key,
            &webhook_id,
            &webhook_timestamp,
            &body,
            &standard_signature,
        ),
        webhook_id,
        webhook_timestamp,
        standard_signature,
        body,
    };
    let valid = attempt.signature_valid && attempt.standard_valid;
    let earlier_tries = {
        let mut attempts = shared.attempts.lock().unwrap();
        let earlier = attempts
            .iter()
            .filter(|a| a.delivery == attempt.delivery)
            .count();
        attempts.push(attempt);
        earlier
    };
    shared.arrived.notify_waiters();
    if !valid {
        return StatusCode::UNAUTHORIZED;
    }
    match shared.answer {
        Answer::Accept => StatusCode::OK,
        Answer::FailFirst(n) if earlier_tries < n => StatusCode::INTERNAL_SERVER_ERROR,
        Answer::FailFirst(_) => StatusCode::OK,
        Answer::HoldUntilReleased => {
            let mut gate = shared.gate.subscribe();
            let _ = gate.wait_for(|open| *open).await;
            StatusCode::OK
        }
        Answer::Never => std::future::pending().await,
        Answer::Slowly(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK
        }
    }
}

/// What a receiver does with `X-Vigil-Signature`: recompute the HMAC of the
/// raw body and compare in constant time.
pub fn signature_is_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return false;
    }
    let Ok(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// The Standard Webhooks key of a secret, as the spec says: `whsec_` then
/// the key in base64; any other secret is its own bytes (Vigil's documented
/// choice for secrets not in the spec's form).
pub fn standard_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("a whsec_ secret holds base64"),
        None => secret.as_bytes().to_vec(),
    }
}

/// What a Standard Webhooks receiver does: the timestamp is recent (5
/// minutes either way), and some `v1,` entry of the signature header is
/// the base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"`, compared in
/// constant time.
pub fn standard_signature_is_valid(
    key: &[u8],
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if id.is_empty() || (now - seconds).abs() > 300 {
        return false;
    }
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    header.split(' ').any(|entry| {
        let Some(tag) = entry
            .strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        else {
            return false;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(&signed);
        mac.verify_slice(&tag).is_ok()
    })
}
