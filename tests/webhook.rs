//! Webhooks over real HTTP: a receiver on 127.0.0.1 checks the signature of
//! every delivery, as an operator's service would, and answers as each story
//! needs (failing, refusing, hanging). Vigil's side is set up from a
//! `vigil.toml` snippet, the way an operator configures it.

mod common;

use std::time::{Duration, Instant};

use common::webhook::{Answer, Attempt, Receiver, signature_is_valid};
use vigil::backup::BackupId;
use vigil::config::Config;
use vigil::id::SessionId;
use vigil::policy::SessionState;
use vigil::webhook::{Event, RestoreSource, ShutdownReport, WebhookStats, Webhooks};

const SECRET: &str = "correct horse battery staple";

/// A config folder holding `webhook.secret` and the `vigil.toml` made of
/// `toml`, read as Vigil reads it.
struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
}

impl Setup {
    fn new(toml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhook.secret"), format!("{SECRET}\n")).unwrap();
        let file = dir.path().join("vigil.toml");
        std::fs::write(&file, toml).unwrap();
        let config = Config::load(&file).expect("the snippet is a valid config");
        Setup { _dir: dir, config }
    }

    fn start(&self) -> Webhooks {
        Webhooks::start(&self.config.webhooks, &self.config.webhook_delivery)
            .expect("webhooks start")
    }
}

/// One `[[webhook]]` to `url` plus quick `[webhooks]` settings, so retries
/// take milliseconds.
fn one_webhook(url: &str, extra: &str) -> String {
    format!(
        r#"
[[webhook]]
url = "{url}"
secret_file = "webhook.secret"

[webhooks]
backoff_base_secs = 0.01
backoff_max_secs = 0.04
{extra}
"#
    )
}

fn main_session() -> SessionId {
    SessionId::new("main").unwrap()
}

fn state_changed() -> Event {
    Event::SessionStateChanged {
        session: main_session(),
        from: SessionState::Connected,
        to: SessionState::NeedsLogin,
        reason: "probe: needs-login".into(),
    }
}

/// A backup failure numbered `n` (in its error), to follow order and drops.
fn backup_failed(n: usize) -> Event {
    Event::BackupFailed {
        session: main_session(),
        error: format!("failure {n}"),
    }
}

fn numbers(attempts: &[Attempt]) -> Vec<usize> {
    attempts
        .iter()
        .map(|a| {
            let error = a.json()["data"]["error"].as_str().unwrap().to_string();
            error.trim_start_matches("failure ").parse().unwrap()
        })
        .collect()
}

async fn wait_for_stats(webhooks: &Webhooks, what: &str, done: impl Fn(&[WebhookStats]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = webhooks.stats();
        if done(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited 10 s for {what}; stats: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_same_signed_delivery_three_times() {
    let receiver = Receiver::start(SECRET, Answer::FailFirst(2)).await;
    let setup = Setup::new(&one_webhook(&receiver.url("/vigil"), ""));
    let webhooks = setup.start();

    webhooks.send(state_changed());
    wait_for_stats(&webhooks, "the delivery", |s| s[0].delivered == 1).await;

    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 3, "two refusals then an acceptance");
    let first = &attempts[0];
    for a in &attempts {
        assert!(a.signature_valid, "every attempt is signed: {a:?}");
        assert!(
            a.standard_valid,
            "and signed the Standard Webhooks way: {a:?}"
        );
        assert_eq!(a.webhook_id, a.delivery, "webhook-id is the delivery id");
        assert_eq!(a.path, "/vigil");
        assert_eq!(a.event, "session.state_changed");
        assert_eq!(a.delivery, first.delivery, "retries keep the delivery id");
        assert_eq!(a.body, first.body, "retries send the very same bytes");
        assert_eq!(a.signature, first.signature);
    }
    // Vigil's own checker, offered to receivers written in Rust, agrees.
    assert!(vigil::webhook::verify(
        SECRET.as_bytes(),
        &first.body,
        &first.signature
    ));

    let body = first.json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["event"], "session.state_changed");
    assert_eq!(body["delivery"], first.delivery.as_str());
    assert_eq!(body["host"], vigil::webhook::host_name().as_str());
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(timestamp.ends_with('Z'), "UTC: {timestamp}");
    let at = chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60);
    assert_eq!(
        body["data"],
        serde_json::json!({
            "session": "main",
            "from": "connected",
            "to": "needs-login",
            "reason": "probe: needs-login",
        })
    );

    let stats = &webhooks.stats()[0];
    assert_eq!(
        (stats.delivered, stats.retried, stats.failed, stats.dropped),
        (1, 2, 0, 0)
    );
    assert_eq!(webhooks.shutdown().await, ShutdownReport { abandoned: 0 });
}

/// A `whsec_` secret, as Standard Webhooks providers hand them out: its
/// base64 is the key the spec's receivers use, while `X-Vigil-Signature`
/// keeps using the secret's bytes as written.
#[tokio::test]
async fn a_whsec_secret_signs_as_the_standard_webhooks_libraries_expect() {
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = Receiver::start(WHSEC, Answer::FailFirst(1)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("whsec"), format!("{WHSEC}\n")).unwrap();
    let file = dir.path().join("vigil.toml");
    let toml = one_webhook(&receiver.url("/std"), "").replace(
        "secret_file = \"webhook.secret\"",
        "secret_file = \"whsec\"",
    );
    std::fs::write(&file, toml).unwrap();
    let config = Config::load(&file).unwrap();
    let webhooks = Webhooks::start(&config.webhooks, &config.webhook_delivery).unwrap();

    webhooks.send(state_changed());
    wait_for_stats(&webhooks, "the delivery", |s| s[0].delivered == 1).await;
    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert!(a.standard_valid && a.signature_valid, "{a:?}");
        assert!(a.standard_signature.starts_with("v1,"), "{a:?}");
        assert_eq!(a.webhook_id, attempts[0].webhook_id, "a retry keeps its id");
    }
    // The key is the decoded base64, not the text: signed with the text
    // as key, the receiver would refuse it.
    let a = &attempts[1];
    assert!(!common::webhook::standard_signature_is_valid(
        WHSEC.as_bytes(),
        &a.webhook_id,
        &a.webhook_timestamp,
        &a.body,
        &a.standard_signature
    ));
    webhooks.shutdown().await;

    // A whsec_ secret that is not base64 is refused at start, named.
    std::fs::write(dir.path().join("whsec"), "whsec_not*base64\n").unwrap();
    let err = Webhooks::start(&config.webhooks, &config.webhook_delivery).unwrap_err();
    assert!(err.to_string().contains("not base64"), "{err}");
}

#[tokio::test]
async fn a_receiver_holding_another_secret_refuses_every_attempt_until_vigil_gives_up() {
    let receiver = Receiver::start("not the same secret", Answer::Accept).await;
    let setup = Setup::new(&one_webhook(&receiver.url("/vigil"), "max_attempts = 3"));
    let webhooks = setup.start();

    webhooks.send(backup_failed(1));
    wait_for_stats(&webhooks, "giving up", |s| s[0].failed == 1).await;

    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 3, "max_attempts");
    for a in &attempts {
        assert!(!a.signature_valid, "the receiver's check refused it");
        // The same check passes with the secret Vigil signed with.
        assert!(signature_is_valid(SECRET.as_bytes(), &a.body, &a.signature));
    }
    let stats = &webhooks.stats()[0];
    assert_eq!((stats.delivered, stats.retried, stats.failed), (0, 2, 1));
    webhooks.shutdown().await;
}

#[tokio::test]
async fn each_webhook_receives_only_the_events_its_filter_names() {
    let receiver = Receiver::start(SECRET, Answer::Accept).await;
    let setup = Setup::new(&format!(
        r#"
[[webhook]]
name = "sessions"
url = "{}"
secret_file = "webhook.secret"
events = ["session.*"]

[[webhook]]
name = "failures"
url = "{}"
secret_file = "webhook.secret"
events = ["backup.failed", "restore.failed"]

[[webhook]]
name = "everything"
url = "{}"
secret_file = "webhook.secret"
"#,
        receiver.url("/sessions"),
        receiver.url("/failures"),
        receiver.url("/all"),
    ));
    let webhooks = setup.start();

    let backup: BackupId = "20260301T020000Z-3fa2c1d0".parse().unwrap();
    webhooks.send(state_changed());
    webhooks.send(Event::BackupSaved {
        session: main_session(),
        backup: backup.clone(),
        size_bytes: 1234,
        duration: Duration::from_millis(800),
    });
    webhooks.send(backup_failed(1));
    webhooks.send(Event::RestoreDone {
        session: main_session(),
        source: RestoreSource::Disk,
        duration: Duration::from_millis(5),
    });
    webhooks.send(Event::RestoreFailed {
        session: main_session(),
        backup: Some(backup),
        error: "checksum mismatch".into(),
    });
    webhooks.send(Event::PolicyReloaded {
        file: "policies/activity.toml".into(),
        plugin: "target/plugins/activity.wasm".into(),
        plugin_sha256: "0123456789ab".into(),
    });
    wait_for_stats(&webhooks, "every delivery", |s| {
        s.iter().map(|w| w.delivered).sum::<u64>() == 1 + 2 + 6
    })
    .await;

    let events_at = |path: &str| -> Vec<String> {
        receiver
            .attempts()
            .iter()
            .filter(|a| a.path == path)
            .map(|a| a.event.clone())
            .collect()
    };
    assert_eq!(events_at("/sessions"), ["session.state_changed"]);
    assert_eq!(events_at("/failures"), ["backup.failed", "restore.failed"]);
    assert_eq!(
        events_at("/all"),
        [
            "session.state_changed",
            "backup.saved",
            "backup.failed",
            "restore.done",
            "restore.failed",
            "policy.reloaded",
        ],
        "in the order they happened"
    );
    let names: Vec<String> = webhooks.stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["sessions", "failures", "everything"]);
    webhooks.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_blocks_no_sender_and_its_queue_stays_bounded() {
    let receiver = Receiver::start(SECRET, Answer::HoldUntilReleased).await;
    let setup = Setup::new(&one_webhook(
        &receiver.url("/vigil"),
        "queue_capacity = 4\ntimeout_secs = 60",
    ));
    let webhooks = setup.start();
    let sender = webhooks.sender();

    // The worker takes event 0 and waits on the silent receiver...
    sender.send(backup_failed(0));
    receiver.wait_for_attempts(1).await;

    // ...while a burst of 1000 events is sent from a plain thread: were
    // `send` to wait for the receiver, it would not return before the
    // 60 s request timeout.
    let started = Instant::now();
    let burst = tokio::task::spawn_blocking(move || {
        for n in 1..=1000 {
            sender.send(backup_failed(n));
        }
    });
    tokio::time::timeout(Duration::from_secs(10), burst)
        .await
        .expect("1000 sends return while the receiver is silent")
        .unwrap();
    println!(
        "1000 sends to a silent receiver took {:?}",
        started.elapsed()
    );

    let stats = &webhooks.stats()[0];
    assert_eq!(stats.queued, 4, "bounded by queue_capacity");
    assert_eq!(stats.dropped, 1000 - 4, "the overflow is counted");
    assert_eq!(stats.delivered, 0);

    // Once the receiver answers, event 0 and the 4 newest arrive, in order:
    // the oldest were the ones dropped.
    receiver.release();
    wait_for_stats(&webhooks, "the queued events", |s| s[0].delivered == 5).await;
    assert_eq!(numbers(&receiver.attempts()), [0, 997, 998, 999, 1000]);
    webhooks.shutdown().await;
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_counts_as_a_failed_attempt() {
    let receiver = Receiver::start(SECRET, Answer::Never).await;
    let setup = Setup::new(&one_webhook(
        &receiver.url("/vigil"),
        "timeout_secs = 0.2\nmax_attempts = 2",
    ));
    let webhooks = setup.start();

    webhooks.send(backup_failed(1));
    webhooks.send(backup_failed(2));
    wait_for_stats(&webhooks, "both events given up", |s| s[0].failed == 2).await;

    assert_eq!(numbers(&receiver.attempts()), [1, 1, 2, 2]);
    let stats = &webhooks.stats()[0];
    assert_eq!((stats.retried, stats.delivered, stats.queued), (2, 0, 0));
    assert_eq!(webhooks.shutdown().await, ShutdownReport { abandoned: 0 });
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued_then_sends_nothing_more() {
    let receiver = Receiver::start(SECRET, Answer::Slowly(Duration::from_millis(50))).await;
    let setup = Setup::new(&one_webhook(&receiver.url("/vigil"), ""));
    let webhooks = setup.start();
    let sender = webhooks.sender();

    for n in 1..=5 {
        sender.send(backup_failed(n));
    }
    assert_eq!(webhooks.shutdown().await, ShutdownReport { abandoned: 0 });
    assert_eq!(numbers(&receiver.attempts()), [1, 2, 3, 4, 5]);

    sender.send(backup_failed(6));
    let stats = sender.stats();
    assert_eq!((stats[0].delivered, stats[0].queued), (5, 0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.attempts().len(), 5, "nothing after shutdown");
}

#[tokio::test]
async fn shutdown_stops_retrying_a_dead_receiver_after_flush_timeout() {
    // A port nothing listens on: every attempt is refused at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/vigil", dead.local_addr().unwrap());
    drop(dead);
    let setup = Setup::new(&one_webhook(
        &url,
        "max_attempts = 1000\nflush_timeout_secs = 0.3",
    ));
    let webhooks = setup.start();
    let sender = webhooks.sender();
    for n in 1..=3 {
        sender.send(backup_failed(n));
    }
    wait_for_stats(&webhooks, "a retry", |s| s[0].retried >= 1).await;

    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(10), webhooks.shutdown())
        .await
        .expect("shutdown is bounded by flush_timeout");
    println!("shutdown with a dead receiver took {:?}", started.elapsed());
    assert_eq!(
        report,
        ShutdownReport { abandoned: 3 },
        "1 retrying + 2 queued"
    );
    let stats = &sender.stats()[0];
    assert_eq!((stats.delivered, stats.dropped, stats.queued), (0, 3, 0));
}
