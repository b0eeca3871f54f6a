//! The fixture web app for tests: started in-process, driven over its HTTP
//! admin API the way an end-to-end test or an operator with curl would.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil_fixture::{Fixture, FixtureOptions, FixtureReport};

pub async fn start(idle_after: Option<Duration>) -> (Fixture, FixtureClient) {
    let fixture = Fixture::start(FixtureOptions {
        idle_after,
        ..FixtureOptions::default()
    })
    .await
    .expect("fixture starts");
    let client = FixtureClient::new(&fixture.url());
    (fixture, client)
}

/// The fixture app showing a new login code every `rotation`.
pub async fn start_rotating(rotation: Duration) -> (Fixture, FixtureClient) {
    let fixture = Fixture::start(FixtureOptions {
        code_rotation: rotation,
        ..FixtureOptions::default()
    })
    .await
    .expect("fixture starts");
    let client = FixtureClient::new(&fixture.url());
    (fixture, client)
}

/// The fixture's HTTP API.
pub struct FixtureClient {
    base: String,
    http: reqwest::Client,
}

impl FixtureClient {
    /// `base` is the fixture's URL, ending in `/`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    pub async fn report(&self) -> FixtureReport {
        self.http
            .get(self.url("admin/state"))
            .send()
            .await
            .expect("GET /admin/state")
            .json()
            .await
            .expect("a fixture report")
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// Pairs `code` like a phone scanning it; returns the device id.
    pub async fn pair(&self, code: &str) -> String {
        let (status, body) = self.try_pair(code).await;
        assert_eq!(status, 200, "pairing {code}: {body}");
        body["device"].as_str().expect("device id").to_owned()
    }

    /// `POST /api/pair` with `code`: the status and the JSON answer.
    pub async fn try_pair(&self, code: &str) -> (u16, Value) {
        self.post("api/pair", json!({ "code": code })).await
    }

    /// Waits for a login screen to show a code, then pairs it.
    pub async fn pair_shown_code(&self) -> String {
        let code = wait_until(Duration::from_secs(15), "a login code", || async {
            self.report().await.pending_codes.last().cloned()
        })
        .await;
        self.pair(&code).await
    }

    pub async fn drop_connections(&self) -> u64 {
        let (status, body) = self.post("admin/drop", json!({})).await;
        assert_eq!(status, 200, "{body}");
        body["dropped"].as_u64().unwrap_or_default()
    }

    pub async fn logout(&self, device: &str) {
        let (status, body) = self.post("admin/logout", json!({ "device": device })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["revoked"], 1, "{body}");
    }
}

/// Polls `check` every 100 ms until it yields a value; panics after
/// `timeout`, naming `what` it waited for.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
