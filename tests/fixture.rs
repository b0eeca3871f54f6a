//! The fixture web app's server, over plain HTTP (no browser): pairing,
//! live connections and what the admin endpoint reports about them, idle
//! marking, logout, the state file, and the `vigil fixture` command.

mod common;

use std::time::Duration;

use common::fixture::{self, FixtureClient, wait_until};
use serde_json::{Value, json};
use vigil_fixture::{Fixture, FixtureError, FixtureOptions};

/// One page's live connection, read as a stream of server-sent events.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(app: &FixtureClient, device: &str, token: &str) -> Events {
        let response = reqwest::get(app.url(&format!("api/connect?device={device}&token={token}")))
            .await
            .expect("GET /api/connect");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next named event `(name, data)`, or `None` when the server ended
    /// the stream. Panics if nothing happens for 5 s.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                };
                // Keep-alive comments carry no event name.
                if let Some(event) = field("event:") {
                    return Some((event, field("data:").unwrap_or_default()));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event or the end of the stream within 5 s")
                .expect("reading the event stream");
            self.buffer.push_str(std::str::from_utf8(&chunk?).unwrap());
        }
    }
}

async fn post(app: &FixtureClient, path: &str, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Shows a login screen, pairs it, and picks up the credential as the page
/// would; returns (device, token).
async fn paired_device(app: &FixtureClient) -> (String, String) {
    let (status, body) = post(app, "api/login", "").await;
    assert_eq!(status, 200);
    let code = body["code"].as_str().unwrap().to_owned();
    let device = app.pair(&code).await;
    let status: Value = reqwest::get(app.url(&format!("api/login/{code}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "paired", "{status}");
    assert_eq!(status["device"], device.as_str());
    (device, status["token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_page_and_its_script_are_served() {
    let (_fx, app) = fixture::start(None).await;
    let page = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("data-state=\"loading\"") && html.contains("/app.js"));
    let script = reqwest::get(app.url("app.js")).await.unwrap();
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.text().await.unwrap().contains("indexedDB.open"));
}

#[tokio::test]
async fn a_paired_code_hands_its_credential_to_the_page_once() {
    let (_fx, app) = fixture::start(None).await;
    let (status, body) = post(&app, "api/login", "").await;
    assert_eq!(status, 200);
    let code = body["code"].as_str().unwrap().to_owned();
    let login = |code: String| {
        let url = app.url(&format!("api/login/{code}"));
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(login(code.clone()).await, json!({ "status": "pending" }));
    assert_eq!(app.report().await.pending_codes, vec![code.clone()]);

    let device = app.pair(&code).await;
    let paired = login(code.clone()).await;
    assert_eq!(paired["status"], "paired");
    assert_eq!(paired["device"], device.as_str());
    assert!(paired["token"].as_str().unwrap().len() >= 32);
    assert_eq!(login(code.clone()).await, json!({ "status": "unknown" }));

    let report = app.report().await;
    assert_eq!(report.pairings, 1);
    assert!(report.pending_codes.is_empty());
    let d = report.device(&device).unwrap();
    assert!(!d.connected && !d.revoked);

    let (status, body) = post(&app, "api/pair", r#"{"code":"NOPE"}"#).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("NOPE"), "{body}");
    let (status, body) = post(&app, "api/pair", "{not json").await;
    assert_eq!(status, 400, "{body}");
    // No body pairs the newest pending code; there is none left.
    let (status, _) = post(&app, "api/pair", "").await;
    assert_eq!(status, 404);
}

/// The login screen's code comes with its QR code, and rotates: once the
/// rotation period is over, the page learns its code expired (and asks
/// for another), and a phone pairing it is refused with 410.
#[tokio::test]
async fn a_login_code_comes_as_a_qr_code_and_expires_after_the_rotation() {
    let (_fx, app) = fixture::start_rotating(Duration::from_millis(800)).await;
    let (status, body) = post(&app, "api/login", "").await;
    assert_eq!(status, 200);
    let code = body["code"].as_str().unwrap().to_owned();
    assert_eq!(body["expires_in_ms"], 800);
    let svg = body["qr_svg"].as_str().unwrap();
    assert!(svg.starts_with("<svg ") && svg.contains("<path"), "{svg}");
    // The QR code of the code's text, module for module, as Vigil's
    // encoder makes it (the fixture draws it with its own code).
    let expected = vigil::qr::Modules::encode(&code).unwrap();
    let drawn = svg_modules(svg);
    let side = expected.width() + 2 * vigil::qr::QUIET_ZONE;
    assert_eq!(drawn.len(), side * side, "{svg}");
    let edge = vigil::qr::QUIET_ZONE as isize;
    for y in 0..side {
        for x in 0..side {
            assert_eq!(
                drawn[y * side + x],
                expected.is_dark(x as isize - edge, y as isize - edge),
                "module ({x}, {y}) of {svg}"
            );
        }
    }

    let status_of = |code: String| {
        let url = app.url(&format!("api/login/{code}"));
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        status_of(code.clone()).await,
        json!({ "status": "pending" })
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        status_of(code.clone()).await,
        json!({ "status": "expired" })
    );
    assert!(app.report().await.pending_codes.is_empty());
    let (status, body) = post(&app, "api/pair", &json!({ "code": code }).to_string()).await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // The newest code pairs as before.
    let (_, fresh) = post(&app, "api/login", "").await;
    let fresh = fresh["code"].as_str().unwrap().to_owned();
    assert_ne!(fresh, code);
    app.pair(&fresh).await;
}

#[tokio::test]
async fn a_live_connection_is_reported_and_ends_when_dropped() {
    let (_fx, app) = fixture::start(None).await;
    let (device, token) = paired_device(&app).await;
    let mut events = Events::open(&app, &device, &token).await;
    let (name, data) = events.next().await.expect("hello");
    assert_eq!(name, "hello");
    assert!(serde_json::from_str::<Value>(&data).unwrap()["connection"].is_u64());
    let d = app.report().await.device(&device).unwrap().clone();
    assert!(
        d.connected && d.connections == 1 && d.connects == 1,
        "{d:?}"
    );

    assert_eq!(app.drop_connections().await, 1);
    assert_eq!(events.next().await, None, "the stream ends with no message");
    assert!(!app.report().await.device(&device).unwrap().connected);
}

#[tokio::test]
async fn a_page_that_goes_away_is_no_longer_connected() {
    let (_fx, app) = fixture::start(None).await;
    let (device, token) = paired_device(&app).await;
    let mut events = Events::open(&app, &device, &token).await;
    events.next().await.expect("hello");
    drop(events);
    wait_until(
        Duration::from_secs(5),
        "the connection to be forgotten",
        || async { (!app.report().await.device(&device).unwrap().connected).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn logout_tells_the_live_page_and_refuses_the_credential_after() {
    let (_fx, app) = fixture::start(None).await;
    let (device, token) = paired_device(&app).await;
    let mut events = Events::open(&app, &device, &token).await;
    events.next().await.expect("hello");

    app.logout(&device).await;
    assert_eq!(events.next().await.map(|e| e.0), Some("revoked".into()));
    assert_eq!(events.next().await, None);

    let mut again = Events::open(&app, &device, &token).await;
    assert_eq!(again.next().await.map(|e| e.0), Some("revoked".into()));
    assert_eq!(again.next().await, None);
    let mut forged = Events::open(&app, &device, "not-the-token").await;
    assert_eq!(forged.next().await.map(|e| e.0), Some("revoked".into()));
    assert!(app.report().await.device(&device).unwrap().revoked);
}

#[tokio::test]
async fn a_connection_without_activity_goes_idle_and_activity_wakes_it() {
    let (_fx, app) = fixture::start(Some(Duration::from_secs(1))).await;
    let (device, token) = paired_device(&app).await;
    let mut events = Events::open(&app, &device, &token).await;
    let (_, hello) = events.next().await.expect("hello");
    let connection = serde_json::from_str::<Value>(&hello).unwrap()["connection"].clone();

    assert_eq!(events.next().await.map(|e| e.0), Some("idle".into()));
    let d = app.report().await.device(&device).unwrap().clone();
    assert!(d.idle && d.connected && d.idle_count == 1, "{d:?}");

    let activity = json!({ "connection": connection, "token": token }).to_string();
    let (status, _) = post(&app, "api/activity", &activity).await;
    assert_eq!(status, 204);
    assert_eq!(events.next().await.map(|e| e.0), Some("active".into()));
    let d = app.report().await.device(&device).unwrap().clone();
    assert!(!d.idle && d.activity_reports == 1, "{d:?}");
    assert!(d.last_activity_ms_ago.unwrap() < 5_000);

    let wrong = json!({ "connection": connection, "token": "x" }).to_string();
    assert_eq!(post(&app, "api/activity", &wrong).await.0, 404);

    // The idle limit can be changed, or lifted, while running.
    let (status, report) = post(&app, "admin/idle-after", r#"{"secs": null}"#).await;
    assert_eq!(status, 200);
    assert_eq!(report["idle_after_secs"], Value::Null);
    assert_eq!(
        post(&app, "admin/idle-after", r#"{"secs": -1}"#).await.0,
        400
    );
}

#[tokio::test]
async fn paired_devices_survive_a_restart_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fixture-state.json");
    let options = FixtureOptions {
        state_file: Some(state.clone()),
        ..FixtureOptions::default()
    };
    let fx = Fixture::start(options.clone()).await.unwrap();
    let app = FixtureClient::new(&fx.url());
    let (device, token) = paired_device(&app).await;
    fx.shutdown().await;

    let fx = Fixture::start(options).await.unwrap();
    let app = FixtureClient::new(&fx.url());
    let report = app.report().await;
    assert_eq!(report.pairings, 1);
    assert!(report.device(&device).is_some());
    let mut events = Events::open(&app, &device, &token).await;
    assert_eq!(events.next().await.map(|e| e.0), Some("hello".into()));
    fx.shutdown().await;

    std::fs::write(&state, "{ broken").unwrap();
    let err = Fixture::start(FixtureOptions {
        state_file: Some(state.clone()),
        ..FixtureOptions::default()
    })
    .await
    .err()
    .expect("a broken state file is refused");
    assert!(matches!(err, FixtureError::BadState { .. }));
    assert!(err.to_string().contains("fixture-state.json"), "{err}");
}

#[tokio::test]
async fn vigil_fixture_serves_until_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["fixture", "--listen", "127.0.0.1:0", "--idle-after", "5"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the URL is printed")
        .unwrap()
        .expect("a line");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    let app = FixtureClient::new(&url);
    assert_eq!(app.report().await.idle_after_secs, Some(5.0));
    assert_eq!(reqwest::get(app.url("/")).await.unwrap().status(), 200);

    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// The dark modules of the fixture's QR SVG, row by row over its whole
/// `viewBox` (quiet zone included), read from its one path of
/// `M{x} {y}h{run}v1h-{run}z` runs.
fn svg_modules(svg: &str) -> Vec<bool> {
    let view_box = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
    let side: usize = view_box.split(' ').next().unwrap().parse().unwrap();
    let path = svg
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut dark = vec![false; side * side];
    for run in path.split('M').filter(|r| !r.is_empty()) {
        let (at, rest) = run.split_once('h').unwrap();
        let (x, y) = at.split_once(' ').unwrap();
        let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
        let len: usize = rest.split('v').next().unwrap().parse().unwrap();
        assert_eq!(rest, format!("{len}v1h-{len}z"), "{run}");
        dark[y * side + x..y * side + x + len].fill(true);
    }
    dark
}
