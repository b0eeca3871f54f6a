//! The admin API as an operator meets it: over real HTTP, against a real
//! host (supervisor, Chromium, the fixture app). One host serves the
//! in-process story, one `vigil run` child the command-line story, so at
//! most two browsers run.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::api::{
    Answer, Arrived, ChildSetup, OpenApi, READ_TOKEN, StreamRecorder, TOKEN, TestHost, call,
    parse_prometheus, png_size,
};
use common::chromium::browser_slot;
use common::fixture::wait_until;
use common::webhook::{Answer as HookAnswer, Receiver};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(60);
const HOOK_SECRET: &str = "api-test-hook-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_and_commands_a_running_host() {
    let _slot = browser_slot().await;
    // Live backups keep the browser open, and no backup is taken behind
    // the test's back: each step sees only what it did.
    // A receiver that fails each delivery twice before taking it.
    let receiver = Receiver::start(HOOK_SECRET, HookAnswer::FailFirst(2)).await;
    let secret = tempfile::NamedTempFile::new().expect("a secret file");
    std::fs::write(secret.path(), HOOK_SECRET).unwrap();
    let hook = format!(
        "[[webhook]]\nname = \"ops\"\nurl = {:?}\nsecret_file = {:?}\n\n[webhooks]\nbackoff_base_secs = 0.1\n",
        receiver.url("/hook"),
        secret.path().display().to_string()
    );
    let host = TestHost::start(
        "mode = \"live\"\nafter_login = false\non_shutdown = false",
        &hook,
    )
    .await;
    let login = wait_for_state(&host.base, "needs-login").await;
    assert_eq!(login["id"], "main");

    every_route_but_the_health_checks_needs_the_token(&host.base).await;
    the_read_only_token_reads_but_never_commands(&host.base).await;
    readiness_follows_the_sessions(&host.base).await;
    the_screenshot_shows_the_login_screen(&host).await;
    let code = the_login_qr_code_reads_as_the_shown_code(&host).await;
    let stream = StreamRecorder::open(&host.base, "/v1/events").await;
    metrics_move_when_the_session_logs_in(&host).await;
    let connected = the_stream_tells_the_login_within_a_second(&host, &stream).await;
    the_stream_replays_kept_events_and_says_who_needed_a_login(&host, &code).await;
    let backup = a_backup_made_through_the_api_is_listed(&host.base).await;
    a_refused_policy_shows_with_its_reason(&host).await;
    the_api_and_its_openapi_document_agree(&host.base, &backup).await;
    webhook_deliveries_show_in_the_metrics(&host.base, &receiver).await;
    webhooks_carry_the_streams_bodies_and_the_qr_text(&receiver, &connected, &code).await;

    // /healthz answers with the host's liveness check, the one the systemd
    // watchdog uses: once the session's task has ended (here drained; in
    // production, a panic) it is 503 with the reason.
    let TestHost {
        supervisor,
        api,
        fixture,
        base,
        root: _root,
    } = host;
    supervisor.shutdown(Duration::from_secs(30)).await;
    let health = call(&base, "GET", "/healthz", None, None).await;
    assert_eq!(health.status, 503, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "unhealthy");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("session main")),
        "{body}"
    );
    OpenApi::load()
        .check("GET", "/healthz", &health)
        .unwrap_or_else(|e| panic!("{e}"));
    // An open event stream does not hold the API's shutdown open.
    let closing = std::time::Instant::now();
    api.shutdown().await;
    assert!(
        closing.elapsed() < Duration::from_secs(2),
        "the API took {:?} to stop with a stream open",
        closing.elapsed()
    );
    wait_until(Duration::from_secs(5), "the stream to end", || async {
        stream.ended().then_some(())
    })
    .await;
    fixture.shutdown().await;
}

async fn get(base: &str, path: &str) -> Answer {
    call(base, "GET", path, Some(TOKEN), None).await
}

/// Polls the session until it is in `state`; returns its detail.
async fn wait_for_state(base: &str, state: &str) -> Value {
    wait_until(SETTLE, &format!("session main to be {state}"), || async {
        let detail = get(base, "/v1/sessions/main").await.json();
        (detail["state"] == state).then_some(detail)
    })
    .await
}

async fn every_route_but_the_health_checks_needs_the_token(base: &str) {
    let routes = vigil::api::routes();
    assert!(routes.len() >= 11, "{routes:?}");
    for route in routes {
        let path = route.path.replace("{id}", "main");
        let method = route.method.as_str();
        if !route.needs_token {
            assert!(
                [
                    "/healthz",
                    "/readyz",
                    "/",
                    "/console/app.js",
                    "/console/style.css"
                ]
                .contains(&route.path),
                "{} is open",
                route.path
            );
            let open = call(base, method, &path, None, None).await;
            assert!(
                [200, 503].contains(&open.status),
                "{method} {path}: {open:?}"
            );
            continue;
        }
        for (token, why) in [
            (None, "without a token"),
            (Some("not-the-token-0123456789"), "with a wrong token"),
            (Some(&TOKEN[..TOKEN.len() - 1]), "with the token cut short"),
        ] {
            let answer = call(base, method, &path, token, None).await;
            assert_eq!(
                answer.status,
                401,
                "{method} {path} {why}: {}",
                answer.text()
            );
            assert_eq!(answer.error_code(), "unauthorized", "{method} {path} {why}");
            assert_eq!(
                answer.headers.get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{method} {path} {why}"
            );
        }
    }
    // The scheme is case-insensitive; the token is not.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let lower = http
        .get(format!("{base}/v1/sessions"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let upper = http
        .get(format!("{base}/v1/sessions"))
        .header("authorization", format!("Bearer {}", TOKEN.to_uppercase()))
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status(), 401);
}

/// A dashboard's token: every GET answers, `/metrics` included; anything
/// that would change something is refused before it is tried.
async fn the_read_only_token_reads_but_never_commands(base: &str) {
    let doc = OpenApi::load();
    let before = get(base, "/v1/sessions/main").await.json();
    for route in vigil::api::routes().into_iter().filter(|r| r.needs_token) {
        let path = route.path.replace("{id}", "main");
        let method = route.method.as_str();
        if path == "/v1/events" || path.ends_with("/screencast") {
            // A stream that never ends: its status line is the answer.
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let stream = http
                .get(format!("{base}{path}"))
                .bearer_auth(READ_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(stream.status(), 200, "GET {path}");
            continue;
        }
        let answer = call(base, method, &path, Some(READ_TOKEN), None).await;
        if method == "GET" && path.ends_with("/qr") && answer.status == 404 {
            // Read, and nothing to show yet: the login screen is still
            // being drawn.
            assert_eq!(answer.error_code(), "no_qr_code", "{}", answer.text());
        } else if method == "GET" {
            assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
        } else {
            assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text());
            assert_eq!(answer.error_code(), "forbidden", "{method} {path}");
            assert!(answer.text().contains("admin token"), "{}", answer.text());
            doc.check(method, route.path, &answer)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // Nothing happened: no backup, the browser not restarted.
    let after = get(base, "/v1/sessions/main").await.json();
    assert_eq!(after["since"], before["since"], "{after}");
    let backups = get(base, "/v1/sessions/main/backups").await.json();
    assert_eq!(backups["backups"], json!([]), "{backups}");
    // A read-only token cut short is no token at all.
    let cut = call(base, "GET", "/metrics", Some(&READ_TOKEN[1..]), None).await;
    assert_eq!(cut.status, 401);
}

async fn readiness_follows_the_sessions(base: &str) {
    // needs-login is past start-up: the host is ready.
    let ready = call(base, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json(), json!({ "ready": true, "waiting": [] }));
    let health = call(base, "GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}

async fn the_screenshot_shows_the_login_screen(host: &TestHost) {
    let base = host.base.as_str();
    let shot = get(base, "/v1/sessions/main/screenshot").await;
    assert_eq!(shot.status, 200, "{}", shot.text());
    assert_eq!(shot.content_type, "image/png");
    // The window is 1280x800 CSS pixels (the default [browser] size).
    assert_eq!(png_size(&shot.body), Ok((1280, 800)));
    assert!(
        shot.body.len() > 5_000,
        "a nearly empty PNG: {} bytes",
        shot.body.len()
    );
    // Still the login screen when it was taken: the page shows a code and
    // nothing pairs by itself.
    assert_eq!(
        get(base, "/v1/sessions/main").await.json()["state"],
        "needs-login"
    );
    assert!(!host.fixture.report().pending_codes.is_empty());
    let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-login-screen.png");
    std::fs::write(&saved, &shot.body).unwrap();
    eprintln!("login screen saved to {}", saved.display());
}

/// The API reads the login screen's QR code as a phone would: the text is
/// the code the fixture handed out, and the PNG cut out of the screenshot
/// reads the same.
async fn the_login_qr_code_reads_as_the_shown_code(host: &TestHost) -> String {
    use base64::Engine as _;
    let answer = get(&host.base, "/v1/sessions/main/qr").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    OpenApi::load()
        .check("GET", "/v1/sessions/{id}/qr", &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    let body = answer.json();
    let text = body["text"].as_str().expect("the code's text").to_owned();
    let pending = host.fixture.report().pending_codes;
    assert_eq!(pending.last(), Some(&text), "read {text:?}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["png"].as_str().expect("a png"))
        .expect("base64");
    let (w, h) = png_size(&png).expect("a PNG");
    assert!(w < 600 && h < 600, "the code alone, not the page: {w}x{h}");
    let again = vigil::qr::find_in_png(&png)
        .unwrap()
        .expect("the cut-out reads");
    assert_eq!(again.text, text);
    text
}

/// Subscribed before the phone paired: the change to connected reaches the
/// stream within a second of the host recording it.
async fn the_stream_tells_the_login_within_a_second(
    host: &TestHost,
    stream: &StreamRecorder,
) -> Arrived {
    assert!(
        stream.content_type.starts_with("text/event-stream"),
        "{}",
        stream.content_type
    );
    let connected = stream
        .wait_for(
            "the change to connected on the stream",
            Duration::from_secs(10),
            |a| a.event == "session.state_changed" && a.json()["data"]["to"] == "connected",
        )
        .await;
    let detail = get(&host.base, "/v1/sessions/main").await.json();
    assert_eq!(detail["state"], "connected");
    let since = humantime::parse_rfc3339(detail["since"].as_str().unwrap()).unwrap();
    let latency = connected.at.duration_since(since).unwrap_or(Duration::ZERO);
    eprintln!("the change to connected reached the stream {latency:?} after the host recorded it");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    let body = connected.json();
    assert_eq!(body["event"], "session.state_changed");
    assert_eq!(body["data"]["session"], "main");
    // A probe may catch the page between screens ("loading": degraded).
    assert!(
        ["needs-login", "degraded"].contains(&body["data"]["from"].as_str().unwrap()),
        "{body}"
    );
    assert!(connected.id.is_some_and(|id| id > 1), "{connected:?}");
    // Without `after`, nothing from before the subscription is replayed.
    let earlier = stream
        .arrived()
        .into_iter()
        .find(|a| a.event == "session.state_changed" && a.json()["data"]["to"] == "needs-login");
    assert!(earlier.is_none(), "{earlier:?}");
    connected
}

/// A client resuming from the start gets the kept events first, in
/// order, among them the needs-login event with the code that was shown;
/// `/v1/events/recent` lists the same.
async fn the_stream_replays_kept_events_and_says_who_needed_a_login(host: &TestHost, code: &str) {
    let replay = StreamRecorder::open(&host.base, "/v1/events?after=0").await;
    let needs_login = replay
        .wait_for("the needs-login event", Duration::from_secs(10), |a| {
            a.event == "session.needs_login"
        })
        .await;
    assert_eq!(
        needs_login.json()["data"],
        json!({ "session": "main", "qr": code })
    );
    replay
        .wait_for("the change to connected", Duration::from_secs(10), |a| {
            a.event == "session.state_changed" && a.json()["data"]["to"] == "connected"
        })
        .await;
    let ids: Vec<u64> = replay.arrived().iter().filter_map(|a| a.id).collect();
    assert_eq!(ids.first(), Some(&1), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");

    let recent = get(&host.base, "/v1/events/recent").await;
    OpenApi::load()
        .check("GET", "/v1/events/recent", &recent)
        .unwrap_or_else(|e| panic!("{e}"));
    let recent = recent.json();
    let events: Vec<&str> = recent["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(events.contains(&"session.needs_login"), "{events:?}");
    assert!(recent["last_id"].as_u64().unwrap() >= ids.len() as u64);

    let bad = call(
        &host.base,
        "GET",
        "/v1/events?after=soon",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.error_code(), "bad_request");
}

/// Webhooks received the very bodies the stream carried, and the
/// needs-login event with the code's text.
async fn webhooks_carry_the_streams_bodies_and_the_qr_text(
    receiver: &Receiver,
    streamed: &Arrived,
    code: &str,
) {
    let body = streamed.json();
    let delivery = body["delivery"].as_str().unwrap().to_owned();
    let attempts = wait_until(SETTLE, "the streamed event at the webhook", || async {
        let attempts = receiver.attempts();
        attempts
            .iter()
            .any(|a| a.delivery == delivery)
            .then_some(attempts)
    })
    .await;
    let hooked = attempts.iter().find(|a| a.delivery == delivery).unwrap();
    assert_eq!(hooked.json(), body, "the same body on both ways");
    let needs_login = attempts
        .iter()
        .find(|a| a.event == "session.needs_login")
        .expect("a session.needs_login delivery");
    assert_eq!(
        needs_login.json()["data"],
        json!({ "session": "main", "qr": code })
    );
}

async fn scrape(base: &str) -> common::api::Scrape {
    let answer = get(base, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        answer.content_type
    );
    parse_prometheus(&answer.text())
        .unwrap_or_else(|e| panic!("the scrape does not parse: {e}\n{}", answer.text()))
}

async fn metrics_move_when_the_session_logs_in(host: &TestHost) {
    let state = |s: &common::api::Scrape, st: &str| {
        s.value("vigil_session_state", &[("session", "main"), ("state", st)])
    };
    let before = scrape(&host.base).await;
    assert_eq!(state(&before, "needs-login"), Some(1.0));
    assert_eq!(state(&before, "connected"), Some(0.0));
    let one_hot: f64 = before
        .samples
        .iter()
        .filter(|s| s.name == "vigil_session_state")
        .map(|s| s.value)
        .sum();
    assert_eq!(one_hot, 1.0, "exactly one state per session");
    let connects = |s: &common::api::Scrape| {
        s.value(
            "vigil_session_transitions_total",
            &[("session", "main"), ("to", "connected")],
        )
        .expect("a transitions sample")
    };
    let connected_before = connects(&before);
    for family in [
        "vigil_session_restarts_total",
        "vigil_session_probe_failures_total",
        "vigil_backup_failures_total",
        "vigil_restores_total",
        "vigil_restore_duration_seconds",
        "vigil_policy_calls_total",
        "vigil_policy_call_duration_seconds",
        "vigil_policy_reloads_total",
        "vigil_backup_duration_seconds",
        "vigil_backup_newest_age_seconds",
    ] {
        assert!(before.families.contains_key(family), "{family} is missing");
    }
    // The restore policy chose a fresh profile: one start, from "fresh".
    assert_eq!(
        before.value(
            "vigil_restores_total",
            &[("session", "main"), ("source", "fresh")]
        ),
        Some(1.0)
    );
    assert!(
        before
            .value(
                "vigil_policy_calls_total",
                &[("plugin", "builtin"), ("role", "restore")]
            )
            .is_some_and(|n| n >= 1.0),
        "the restore decision is counted"
    );

    // A phone scans the code.
    host.fixture.pair(None).expect("a login code is shown");
    wait_for_state(&host.base, "connected").await;

    let after = scrape(&host.base).await;
    assert_eq!(state(&after, "connected"), Some(1.0));
    assert_eq!(state(&after, "needs-login"), Some(0.0));
    assert_eq!(connects(&after), connected_before + 1.0);
}

async fn a_backup_made_through_the_api_is_listed(base: &str) -> String {
    let made = call(base, "POST", "/v1/sessions/main/backups", Some(TOKEN), None).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let backup = made.json();
    let id = backup["id"].as_str().expect("an id").to_owned();
    assert!(
        backup["size_bytes"].as_u64().is_some_and(|n| n > 0),
        "{backup}"
    );
    assert!(backup["damaged"].is_null());

    let listed = get(base, "/v1/sessions/main/backups").await.json();
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{listed}");

    let detail = get(base, "/v1/sessions/main").await.json();
    assert_eq!(detail["last_backup"]["id"], id.as_str());
    let metrics = scrape(base).await;
    assert_eq!(
        metrics.value("vigil_backups_total", &[("session", "main")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("vigil_backup_newest_size_bytes", &[("session", "main")]),
        backup["size_bytes"].as_f64()
    );
    id
}

async fn a_refused_policy_shows_with_its_reason(host: &TestHost) {
    let before = get(&host.base, "/v1/policies").await.json();
    assert_eq!(
        before["policies"],
        json!([]),
        "no policy files: built-in defaults"
    );
    assert_eq!(before["rejected"], json!([]));

    // An operator drops a broken policy file into the watched folder.
    let file = host.root.path().join("policies/broken.toml");
    std::fs::write(&file, "role = \"watchdog\"\nplugin = 42\n").unwrap();
    let status = wait_until(
        Duration::from_secs(20),
        "the reload to be refused",
        || async {
            let status = get(&host.base, "/v1/policies").await.json();
            (status["rejected"].as_array().is_some_and(|r| !r.is_empty())).then_some(status)
        },
    )
    .await;
    let rejection = &status["rejected"][0];
    assert!(
        rejection["reason"]
            .as_str()
            .is_some_and(|r| r.contains("broken.toml:2:10")),
        "{rejection}"
    );
    assert!(status["last_reload"]["events"].is_array(), "{status}");
    let metrics = scrape(&host.base).await;
    assert_eq!(
        metrics.value("vigil_policy_reloads_total", &[("outcome", "rejected")]),
        Some(1.0)
    );
    assert_eq!(metrics.value("vigil_policies_rejected", &[]), Some(1.0));
    std::fs::remove_file(&file).unwrap();
}

/// The receiver saw signed events, each tried three times, and `/metrics`
/// counts the deliveries and the retries under the webhook's name.
async fn webhook_deliveries_show_in_the_metrics(base: &str, receiver: &Receiver) {
    let connected = |a: &common::webhook::Attempt| {
        a.event == "session.state_changed" && a.json()["data"]["to"] == "connected"
    };
    let attempts = wait_until(SETTLE, "a connected event, tried three times", || async {
        let attempts = receiver.attempts();
        let first = attempts.iter().find(|a| connected(a))?;
        let tries = attempts
            .iter()
            .filter(|a| a.delivery == first.delivery)
            .count();
        (tries == 3).then_some(attempts)
    })
    .await;
    assert!(attempts.iter().all(|a| a.signature_valid), "{attempts:?}");
    let metrics = scrape(base).await;
    let delivered = metrics
        .value("vigil_webhook_deliveries_total", &[("webhook", "ops")])
        .expect("deliveries counted");
    let retried = metrics
        .value("vigil_webhook_retries_total", &[("webhook", "ops")])
        .expect("retries counted");
    assert!(delivered >= 1.0, "the connected event was delivered");
    assert!(
        retried >= 2.0 * delivered,
        "each delivery failed twice first: {retried} retries for {delivered} deliveries"
    );
    assert_eq!(
        metrics.value("vigil_webhook_failures_total", &[("webhook", "ops")]),
        Some(0.0)
    );
}

async fn the_api_and_its_openapi_document_agree(base: &str, backup: &str) {
    let doc = OpenApi::load();
    let documented: BTreeSet<(String, String, bool)> = doc
        .operations()
        .into_iter()
        .map(|o| (o.method, o.path, o.needs_token))
        .collect();
    let served: BTreeSet<(String, String, bool)> = vigil::api::routes()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_owned(), r.needs_token))
        .collect();
    assert_eq!(
        served, documented,
        "routes served (left) and documented (right) differ, or differ on needing the token"
    );

    // Every documented operation answers, with a documented status and
    // body; mutating ones last, restore before restart, and the session
    // the sweep adds is the one it removes.
    let mut operations = doc.operations();
    operations.sort_by_key(|o| {
        (
            o.method != "GET",
            o.method == "DELETE",
            o.path.ends_with("/restart"),
        )
    });
    let added = json!({ "id": "added", "url": "http://127.0.0.1:9/" });
    for op in &operations {
        let id = if op.method == "DELETE" {
            "added"
        } else {
            "main"
        };
        let path = op.path.replace("{id}", id);
        if op.path == "/v1/events" {
            // A stream never ends: its answer is checked by its headers.
            let stream = StreamRecorder::open(base, &path).await;
            let answer = Answer {
                status: 200,
                content_type: stream.content_type.clone(),
                headers: Default::default(),
                body: Vec::new(),
            };
            doc.check(&op.method, &op.path, &answer)
                .unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        if op.path.ends_with("/screencast") {
            // The page's screen at once, as a base64 JPEG, while we watch.
            use base64::Engine as _;
            let stream = StreamRecorder::open(base, &path).await;
            let frame = stream
                .wait_for("a screencast frame", Duration::from_secs(20), |a| {
                    a.event == "frame"
                })
                .await;
            let jpeg = base64::engine::general_purpose::STANDARD
                .decode(&frame.data)
                .expect("a frame is base64");
            assert_eq!(&jpeg[..3], b"\xff\xd8\xff", "a frame is a JPEG");
            let answer = Answer {
                status: 200,
                content_type: stream.content_type.clone(),
                headers: Default::default(),
                body: Vec::new(),
            };
            doc.check(&op.method, &op.path, &answer)
                .unwrap_or_else(|e| panic!("{e}"));
            let missing = call(
                base,
                &op.method,
                &op.path.replace("{id}", "nobody"),
                Some(TOKEN),
                None,
            )
            .await;
            assert_eq!(missing.status, 404, "{path} of nobody");
            continue;
        }
        let body = if op.path.ends_with("/restore") {
            // The session is connected: replacing its profile needs force.
            Some(json!({ "backup": backup, "force": true }))
        } else if op.method == "POST" && op.path == "/v1/sessions" {
            Some(added.clone())
        } else {
            None
        };
        let answer = call(base, &op.method, &path, Some(TOKEN), body).await;
        if op.path.ends_with("/qr") {
            // Connected: the page shows no QR code.
            assert_eq!(answer.status, 404, "{path}: {}", answer.text());
            assert_eq!(answer.error_code(), "no_qr_code");
        } else if op.path == "/v1/host/drain" {
            // A host alone has nothing to hand over, and says so.
            assert_eq!(answer.status, 409, "{path}: {}", answer.text());
            assert!(
                answer.text().contains("not in a fleet"),
                "{}",
                answer.text()
            );
        } else {
            assert!(
                (200..300).contains(&answer.status),
                "{} {path}: {} {}",
                op.method,
                answer.status,
                answer.text()
            );
        }
        doc.check(&op.method, &op.path, &answer)
            .unwrap_or_else(|e| panic!("{e}"));
        if op.path.contains("{id}") {
            let path = op.path.replace("{id}", "nobody");
            let missing = call(base, &op.method, &path, Some(TOKEN), None).await;
            assert_eq!(missing.status, 404, "{} {path}", op.method);
            assert_eq!(missing.error_code(), "session_not_found");
            doc.check(&op.method, &op.path, &missing)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    // Adding and removing sessions: the refusals are documented too.
    for (method, path, body, status, code) in [
        (
            "POST",
            "/v1/sessions",
            Some(json!({ "id": "main", "url": "http://127.0.0.1:9/" })),
            409,
            "session_exists",
        ),
        (
            "POST",
            "/v1/sessions",
            Some(json!({ "id": "../x", "url": "http://127.0.0.1:9/" })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/sessions",
            Some(json!({ "id": "x" })),
            400,
            "bad_request",
        ),
        (
            // The proxy rules of vigil.toml hold for the API too.
            "POST",
            "/v1/sessions",
            Some(json!({
                "id": "x",
                "url": "http://127.0.0.1:9/",
                "proxy_credentials_env": "PROXY_AUTH",
            })),
            400,
            "bad_request",
        ),
        (
            "DELETE",
            "/v1/sessions/main",
            None,
            409,
            "defined_in_config",
        ),
        (
            "DELETE",
            "/v1/sessions/added",
            None,
            404,
            "session_not_found",
        ),
    ] {
        let answer = call(base, method, path, Some(TOKEN), body.clone()).await;
        assert_eq!(
            answer.status,
            status,
            "{method} {path} {body:?}: {}",
            answer.text()
        );
        assert_eq!(answer.error_code(), code, "{method} {path}");
        let documented = if method == "POST" {
            "/v1/sessions"
        } else {
            "/v1/sessions/{id}"
        };
        doc.check(method, documented, &answer)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let listed = get(base, "/v1/sessions").await.json();
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["main"], "the added session is gone again");

    // Error answers are documented too. A restore that has nothing to
    // restore answers before it touches the running browser.
    let before = wait_for_state(base, "connected").await;
    let path = "/v1/sessions/{id}/restore";
    let concrete = path.replace("{id}", "main");
    for (body, status, code) in [
        (
            json!({ "backup": "20000101T000000Z-00000000", "force": true }),
            404,
            "backup_not_found",
        ),
        (json!({ "backup": "not a backup id" }), 400, "bad_request"),
        (json!({ "from": "yesterday" }), 400, "bad_request"),
        // The same guard as the CLI: a connected session's working login
        // is replaced only with force.
        (json!({}), 409, "refused"),
        (json!({ "backup": backup }), 409, "refused"),
        (json!({ "backup": backup, "force": false }), 409, "refused"),
    ] {
        let answer = call(base, "POST", &concrete, Some(TOKEN), Some(body.clone())).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text());
        assert_eq!(answer.error_code(), code);
        doc.check("POST", path, &answer)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let after = get(base, "/v1/sessions/main").await.json();
    assert_eq!(after["state"], "connected", "{after}");
    assert_eq!(
        after["since"], before["since"],
        "the browser was not closed"
    );
    // The restore of the sweep shows in the metrics with its source.
    let metrics = scrape(base).await;
    assert!(
        metrics
            .value(
                "vigil_restores_total",
                &[("session", "main"), ("source", "backup")]
            )
            .is_some_and(|n| n >= 1.0),
        "a restore from a backup is counted"
    );
    assert!(
        metrics
            .value(
                "vigil_restore_last_duration_seconds",
                &[("session", "main"), ("source", "backup")]
            )
            .is_some()
    );

    let unauthorized = call(base, "GET", "/v1/policies", None, None).await;
    doc.check("GET", "/v1/policies", &unauthorized)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(doc.error_codes().contains("state_conflict"));
}

/// `vigil run` as systemd would start it, and the commands an operator
/// types next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_status_and_systemd_follow_a_running_vigil_run() {
    let _slot = browser_slot().await;
    let setup = ChildSetup::new([127, 0, 0, 1]);
    let notify_path = setup.root.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let log = std::fs::File::create(setup.root.path().join("vigil.log")).unwrap();
    let mut run = setup.command(&["run"]);
    const CHILD_READ_TOKEN: &str = "child-read-token-0123456789";
    run.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("VIGIL_API_READ_TOKEN", CHILD_READ_TOKEN)
        .stderr(log);
    let child = Child(Some(
        tokio::process::Command::from(run)
            .spawn()
            .expect("spawn vigil run"),
    ));
    let messages = Messages::new(notify);

    let ready = messages.wait_for("READY=1", SETTLE).await;
    assert!(ready.contains("STATUS=1 session: "), "{ready}");

    // The fixture pairs the login code by itself after a second. The new
    // login is backed up at once (closing the browser for the copy), so
    // wait for that backup: until then "connected" may turn "launching".
    let sessions = wait_until(SETTLE, "vigil status to show main connected", || async {
        let (code, stdout, stderr) = vigil(&setup, &["status", "--json"]).await;
        assert_eq!(code, 0, "{stderr}");
        let value: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
        let main = &value["sessions"][0];
        (main["state"] == "connected" && main["last_backup"].is_object()).then_some(value)
    })
    .await;
    let main = &sessions["sessions"][0];
    assert_eq!(main["id"], "main");
    assert!(main["since"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(main["last_decision"]["decision"].is_string(), "{main}");

    let (code, table, _) = vigil(&setup, &["status"]).await;
    assert_eq!(code, 0);
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("SESSION  STATE")),
        "{table}"
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(&row[..2], ["main", "connected"], "{table}");

    // VIGIL_API_READ_TOKEN: a scraper reads, and cannot command.
    let base = format!("http://{}", setup.api);
    let metrics = call(&base, "GET", "/metrics", Some(CHILD_READ_TOKEN), None).await;
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    parse_prometheus(&metrics.text()).expect("the scrape parses");
    let restart = call(
        &base,
        "POST",
        "/v1/sessions/main/restart",
        Some(CHILD_READ_TOKEN),
        None,
    )
    .await;
    assert_eq!(restart.status, 403, "{}", restart.text());
    assert_eq!(restart.error_code(), "forbidden");

    // The watchdog is pinged at half of WATCHDOG_USEC while all is well.
    messages
        .wait_for("WATCHDOG=1", Duration::from_secs(5))
        .await;
    messages
        .wait_for("WATCHDOG=1", Duration::from_secs(5))
        .await;

    // The running host holds the profile: the backup goes through it.
    let (code, stdout, stderr) = vigil(&setup, &["backup", "main"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("holds the profile; asking it"), "{stderr}");
    let id = stdout.trim().to_owned();
    let (code, listed, stderr) = vigil(&setup, &["backups", "main", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == id.as_str()),
        "{id} not in {listed}"
    );

    let png = setup.root.path().join("main.png");
    let (code, _, stderr) =
        vigil(&setup, &["screenshot", "main", "-o", png.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), Ok((1280, 800)));

    // SIGTERM: systemd hears STOPPING=1 and the host exits cleanly.
    let exit = child.terminate().await;
    let stopping = messages
        .wait_for("STOPPING=1", Duration::from_secs(5))
        .await;
    assert!(stopping.contains("STATUS="), "{stopping}");
    assert_eq!(exit.code(), Some(0), "vigil run: {exit}");

    let (code, _, stderr) = vigil(&setup, &["status"]).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("no Vigil host answers"), "{stderr}");
}

/// An operator at home logs a session in from the terminal: `vigil login`
/// draws the page's QR code (redrawn when the page rotates it), a phone
/// pairs with what the code says, and `vigil login` returns 0. Without a
/// phone it gives up with its timeout code. `vigil events` then tells what
/// happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_login_draws_the_qr_code_until_a_phone_pairs() {
    use tokio::io::AsyncBufReadExt;
    let _slot = browser_slot().await;
    // Codes rotate every 4 s, so a rotation happens while the test watches.
    let setup = ChildSetup::with_fixture([127, 0, 0, 1], "code_rotation_secs = 4\n");
    let log = std::fs::File::create(setup.root.path().join("vigil.log")).unwrap();
    let mut run = setup.command(&["run"]);
    run.stderr(log);
    let _child = Child(Some(
        tokio::process::Command::from(run)
            .spawn()
            .expect("spawn vigil run"),
    ));
    wait_until(SETTLE, "main to need a login", || async {
        let (code, stdout, _) = vigil(&setup, &["status", "--json"]).await;
        let value: Value = serde_json::from_str(&stdout).ok()?;
        (code == 0 && value["sessions"][0]["state"] == "needs-login").then_some(())
    })
    .await;

    let (code, _, stderr) = vigil(&setup, &["login", "nobody", "--timeout", "5"]).await;
    assert_eq!(code, 8, "{stderr}");
    assert!(stderr.contains("no session \"nobody\""), "{stderr}");
    // One cause, one code, whichever command meets it (README "Exit codes").
    for (args, want) in [
        (&["screenshot", "nobody", "-o", "x.png"][..], 8),
        (&["restart", "nobody"][..], 8),
        (&["session", "remove", "nobody"][..], 8),
        (
            &["session", "add", "main", "--url", "http://127.0.0.1:9/"][..],
            11,
        ),
        (&["session", "remove", "main"][..], 12),
    ] {
        let (code, _, stderr) = vigil(&setup, args).await;
        assert_eq!(code, want, "vigil {args:?}: {stderr}");
    }

    // Nobody scans: it draws the code, then gives up with code 9.
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = vigil(&setup, &["login", "main", "--timeout", "2"]).await;
    assert_eq!(code, 9, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(stderr.contains("not connected after 2 s"), "{stderr}");
    let drawn = common::api::read_terminal_qr_codes(&stdout);
    assert_eq!(drawn.len(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("Code text: {}", drawn[0])),
        "the drawing reads as the text it names: {stdout}"
    );

    // Now with a phone: vigil login keeps drawing until the session is
    // connected.
    let mut login =
        tokio::process::Command::from(setup.command(&["login", "main", "--timeout", "120"]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn vigil login");
    let mut lines = tokio::io::BufReader::new(login.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let mut next_drawing = async || loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("vigil login draws a code within 30 s")
            .expect("read its stdout")
            .expect("vigil login is still running");
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Code text: ") {
            return common::api::read_terminal_qr_codes(&printed)
                .pop()
                .expect("a drawing before its text");
        }
    };
    let first = next_drawing().await;
    // The page rotates its code; vigil login draws the new one.
    let second = next_drawing().await;
    assert_ne!(first, second, "a rotated code is drawn anew");

    // A phone scans the code the API reads off the page (scanning again
    // if the page rotated it in between, as a person would).
    let token = setup.generated_token();
    let api = format!("http://{}", setup.api);
    let fixture = common::fixture::FixtureClient::new(&setup.app);
    loop {
        let qr = call(&api, "GET", "/v1/sessions/main/qr", Some(&token), None).await;
        assert_eq!(qr.status, 200, "{}", qr.text());
        let text = qr.json()["text"].as_str().unwrap().to_owned();
        let (status, body) = fixture.try_pair(&text).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 410, "{body}");
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), login.wait())
        .await
        .expect("vigil login returns once the session is connected")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut login.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("main: connected"), "{stderr}");
    let after = call(&api, "GET", "/v1/sessions/main/qr", Some(&token), None).await;
    assert_eq!(
        after.status,
        404,
        "no QR code once connected: {}",
        after.text()
    );
    assert_eq!(after.error_code(), "no_qr_code");

    // Already connected: nothing to draw.
    let (code, stdout, stderr) = vigil(&setup, &["login", "main", "--timeout", "5"]).await;
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");

    vigil_events_tell_what_happened(&setup).await;
}

/// `vigil events` lists the kept events; `--follow` goes on with new ones.
async fn vigil_events_tell_what_happened(setup: &ChildSetup) {
    use tokio::io::AsyncBufReadExt;
    // The new login is backed up at once, closing the browser for the
    // copy: let that settle, so the events below are all there is.
    wait_until(SETTLE, "the after-login backup", || async {
        let (_, stdout, _) = vigil(setup, &["status", "--json"]).await;
        let value: Value = serde_json::from_str(&stdout).ok()?;
        let main = &value["sessions"][0];
        (main["state"] == "connected" && main["last_backup"].is_object()).then_some(())
    })
    .await;
    let (code, stdout, stderr) = vigil(setup, &["events"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("session.needs_login  main: needs a login; QR code: ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("session.state_changed  main: ") && l.contains(" -> connected (")),
        "{stdout}"
    );
    let (code, stdout, stderr) = vigil(setup, &["events", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let bodies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON body a line"))
        .collect();
    assert!(
        bodies
            .iter()
            .all(|b| b["version"] == 1 && b["delivery"].is_string())
    );
    assert!(
        bodies
            .iter()
            .any(|b| b["event"] == "session.state_changed" && b["data"]["to"] == "connected")
    );

    let mut follow =
        tokio::process::Command::from(setup.command(&["events", "--follow", "--json"]))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn vigil events --follow");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut next = async || {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("an event within 30 s")
            .unwrap()
            .expect("still following");
        serde_json::from_str::<Value>(&line).expect("a JSON body")
    };
    // The kept events first, as without --follow...
    for body in &bodies {
        assert_eq!(&next().await, body);
    }
    // ...then what happens next.
    let (code, _, stderr) = vigil(setup, &["restart", "main"]).await;
    assert_eq!(code, 0, "{stderr}");
    let restarted = next().await;
    assert_eq!(restarted["event"], "session.state_changed", "{restarted}");
    assert_eq!(restarted["data"]["from"], "connected", "{restarted}");
    sigterm(&follow);
    let exit = tokio::time::timeout(Duration::from_secs(10), follow.wait())
        .await
        .expect("vigil events stops on SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit}");
}

#[test]
fn vigil_run_refuses_a_public_address_without_a_token() {
    let setup = ChildSetup::new([0, 0, 0, 0]);
    let out = setup.command(&["run"]).output().expect("run vigil");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a loopback address"), "{stderr}");
    assert!(stderr.contains("[api] token_file"), "{stderr}");
    assert!(stderr.contains("VIGIL_API_TOKEN"), "{stderr}");
    // It stopped before any session started.
    assert!(!setup.root.path().join("data/profiles").exists());
    assert!(!setup.root.path().join("data/api-token").exists());
}

/// Runs `vigil ARGS --config ...`; exit code, stdout, stderr.
async fn vigil(setup: &ChildSetup, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::from(setup.command(args))
        .output()
        .await
        .expect("run vigil");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vigil run`, stopped with SIGTERM when the test ends (even by a panic).
struct Child(Option<tokio::process::Child>);

impl Child {
    async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        sigterm(&child);
        tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("vigil run exits within a minute of SIGTERM")
            .expect("wait for vigil run")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(child) = &self.0 {
            sigterm(child);
        }
    }
}

fn sigterm(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a pid we spawned and have not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// What `vigil run` sends to its NOTIFY_SOCKET.
struct Messages(tokio::sync::Mutex<tokio::net::UnixDatagram>);

impl Messages {
    fn new(socket: tokio::net::UnixDatagram) -> Self {
        Self(tokio::sync::Mutex::new(socket))
    }

    /// The next message with a line `line`, skipping others.
    async fn wait_for(&self, line: &str, timeout: Duration) -> String {
        let socket = self.0.lock().await;
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {line} within {timeout:?}"))
                .expect("read the notify socket");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

/// The checkers above can fail: they refuse what a scraper or a client
/// would trip on.
#[test]
fn the_checkers_refuse_broken_answers() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(parse_prometheus(good).is_ok());
    for (bad, why) in [
        ("a_total 1\n", "a sample before its TYPE"),
        ("# TYPE a_total counter\na_total 1\n", "a TYPE without HELP"),
        (
            "# HELP a A.\n# TYPE a counter\na 1\n",
            "a counter without _total",
        ),
        (
            "# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n",
            "a family split in two",
        ),
        (
            "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
            "a repeated series",
        ),
        (
            "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
            "an unquoted label",
        ),
        (
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\" 1\n",
            "an unclosed label set",
        ),
        (
            "# HELP a A.\n# TYPE a gauge\na one\n",
            "a value that is no number",
        ),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "buckets that are not cumulative",
        ),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            "+Inf differing from _count",
        ),
        ("# HELP a A.\n# TYPE a gauge\na 1", "no final newline"),
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {why}: {bad:?}");
    }

    let doc = OpenApi::load();
    let answer = |status: u16, body: Value| Answer {
        status,
        content_type: "application/json".into(),
        headers: Default::default(),
        body: serde_json::to_vec(&body).unwrap(),
    };
    let ok = answer(200, json!({ "ready": true, "waiting": [] }));
    assert!(doc.check("GET", "/readyz", &ok).is_ok());
    for (bad, why) in [
        (
            answer(200, json!({ "ready": true })),
            "a missing required field",
        ),
        (
            answer(200, json!({ "ready": "yes", "waiting": [] })),
            "a wrong type",
        ),
        (
            answer(200, json!({ "ready": true, "waiting": [1] })),
            "a wrong item type",
        ),
        (
            answer(418, json!({ "ready": true, "waiting": [] })),
            "an undocumented status",
        ),
    ] {
        assert!(doc.check("GET", "/readyz", &bad).is_err(), "accepted {why}");
    }
    let error = answer(401, json!({ "error": { "code": "nope", "message": "m" } }));
    assert!(
        doc.check("GET", "/v1/sessions", &error).is_err(),
        "accepted an unknown code"
    );
}
