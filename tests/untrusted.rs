//! Text from policies and pages is untrusted (issue 12). A real `vigil run`
//! with a real Chromium on its own fixture app, and the hostile test plugin
//! (tests/plugins/hostile) as both watchdog and keepalive: its reasons, key
//! names and log lines try to forge a state-change line, clear the
//! terminal, retitle it and reverse the end of a line. Then the page turns
//! hostile too (its state text, what the probe reads, becomes the same
//! string), and the session's state changes with that text as its reason.
//!
//! A third story: the login screen's QR code holds the same text, which
//! reaches the `session.needs_login` event, `GET /v1/sessions/main/qr` and
//! `vigil login`.
//!
//! Every sink is looked at as its user would: the log (stderr of `vigil
//! run`, text and JSON) holds no line the attacker wrote and no raw ESC or
//! bidi character; `vigil status`, `vigil events`, `vigil journal` and
//! `vigil login` (with `--json` where they have it) print none; the API,
//! the event feed and the webhook carry the exact text; `/metrics` carries
//! none of it.

mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::api::{ChildSetup, call, config_text, free_port};
use common::fixture::wait_until;
use common::plugins::test_plugin;
use common::webhook::{Answer, Receiver};
use serde_json::{Value, json};
use vigil_fixture::{Fixture, FixtureOptions};

/// What tests/plugins/hostile answers as a watchdog verdict and logs, and
/// what the hostile page shows as its state: the forged state
/// change, a screen clear, an OSC window title and a right-to-left
/// override.
const REASON: &str = "ok\n2026-01-01T00:00:00.000000Z  INFO vigil::session::state: session main is connected: forged\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}txt.exe";

/// The start of a log line the attacker wrote.
const FORGED_LINE: &str = "2026-01-01T00:00:00";

const SECRET: &str = "untrusted-test-secret";

/// Characters that must never reach a log or a terminal raw.
fn raw_danger(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|&(_, c)| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}' | '\u{2028}' | '\u{2029}')
    })
}

/// Fails with the offending spot when `text` (output of `what`) holds a raw
/// control or bidi character, or a line the attacker wrote.
fn assert_safe(what: &str, text: &str) {
    if let Some((at, c)) = raw_danger(text) {
        let from = text[..at]
            .char_indices()
            .rev()
            .nth(40)
            .map_or(0, |(i, _)| i);
        panic!(
            "{what} holds a raw {:?} at byte {at}, after {:?}",
            c,
            &text[from..at]
        );
    }
    for line in text.lines() {
        let start = line.trim_start_matches(|c: char| c == '{' || c == '"' || c.is_whitespace());
        assert!(
            !start.starts_with(FORGED_LINE),
            "{what} has a line the attacker wrote: {line:?}"
        );
    }
}

/// `text` without SGR sequences (`ESC [ digits;... m`), which set colours.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(after.len());
        if after[len..].starts_with('m') {
            rest = &after[len + 1..];
        } else {
            // Not a colour: kept, for assert_safe to find.
            out.push_str("\u{1b}[");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `vigil run` on the hostile policies, with a webhook to `receiver`, its
/// stderr read by a thread.
struct Hostile {
    setup: ChildSetup,
    child: Child,
    stderr: std::thread::JoinHandle<String>,
    token: String,
    base: String,
}

impl Hostile {
    /// Serving its own fixture app (which pairs by itself), the hostile
    /// plugin as its watchdog and keepalive.
    fn start(log_format: &str, receiver: &Receiver) -> Self {
        let setup = ChildSetup::new([127, 0, 0, 1]);
        let hostile = test_plugin("hostile").display().to_string();
        let policies = setup.root.path().join("policies");
        for role in ["watchdog", "keepalive"] {
            std::fs::write(
                policies.join(format!("{role}.toml")),
                format!("role = \"{role}\"\nplugin = {hostile:?}\ninterval = \"1s\"\n"),
            )
            .unwrap();
        }
        Self::spawn(setup, log_format, receiver)
    }

    /// On the app at `app` (the test's own fixture), default policies.
    fn start_on(app: &str, receiver: &Receiver) -> Self {
        let root = tempfile::Builder::new()
            .prefix("vigil-untrusted-")
            .tempdir()
            .unwrap();
        let api = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = root.path().join("vigil.toml");
        std::fs::write(
            &config,
            config_text(root.path(), app, &format!("[api]\nlisten = \"{api}\"\n")),
        )
        .unwrap();
        let setup = ChildSetup {
            root,
            config,
            api,
            app: app.to_owned(),
        };
        Self::spawn(setup, "text", receiver)
    }

    fn spawn(setup: ChildSetup, log_format: &str, receiver: &Receiver) -> Self {
        std::fs::write(
            setup.root.path().join("webhook.secret"),
            format!("{SECRET}\n"),
        )
        .unwrap();
        let mut config = std::fs::read_to_string(&setup.config).unwrap();
        config.push_str(&format!(
            "\n[[webhook]]\nurl = \"{}\"\nsecret_file = \"webhook.secret\"\n\n[webhooks]\nbackoff_base_secs = 0.01\nbackoff_max_secs = 0.04\n",
            receiver.url("/hook")
        ));
        std::fs::write(&setup.config, config).unwrap();

        let mut child = setup
            .command(&["run"])
            .env("VIGIL_LOG_FORMAT", log_format)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil run");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            String::from_utf8(bytes).expect("the log is UTF-8")
        });
        let base = format!("http://{}", setup.api);
        Hostile {
            setup,
            child,
            stderr,
            token: String::new(),
            base,
        }
    }

    /// Waits for the API and reads the token `vigil run` generated.
    async fn wait_serving(&mut self) {
        let token_file = self.setup.root.path().join("data/api-token");
        wait_until(Duration::from_secs(60), "vigil run to serve", || async {
            token_file.exists().then_some(())
        })
        .await;
        self.token = self.setup.generated_token();
    }

    async fn session(&self) -> Value {
        let answer = call(
            &self.base,
            "GET",
            "/v1/sessions/main",
            Some(&self.token),
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    }

    /// `vigil ARGS` against this host: exit code and stdout (stderr must
    /// be as safe, so it is checked here too).
    fn cli(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.setup.command(args).output().expect("run the CLI");
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 on stdout");
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 on stderr");
        assert_safe(&format!("stderr of vigil {}", args.join(" ")), &stderr);
        (out.status.code(), stdout)
    }

    /// SIGTERM, then the whole log.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on the child this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        let log = self.stderr.join().unwrap();
        assert!(status.success(), "vigil run exited {status}:\n{log}");
        log
    }
}

/// Runs the whole story and checks every sink but the log; returns the log.
async fn hostile_story(log_format: &str) -> String {
    let receiver = Receiver::start(SECRET, Answer::Accept).await;
    let mut host = Hostile::start(log_format, &receiver);
    host.wait_serving().await;

    // The fixture pairs the login by itself; then the hostile policies
    // answer every second while the session is connected.
    wait_until(
        Duration::from_secs(90),
        "the session to connect",
        || async { (host.session().await["state"] == "connected").then_some(()) },
    )
    .await;
    let journal = host.setup.root.path().join("data/journal");
    wait_until(
        Duration::from_secs(30),
        "hostile keepalive and watchdog decisions",
        || async {
            let text = walk_text(&journal);
            (text.matches("\"role\":\"keepalive\"").count() >= 2
                && text.matches("\"role\":\"watchdog\"").count() >= 2)
                .then_some(())
        },
    )
    .await;

    // The page turns hostile: it shows REASON as its state at once.
    let app = host.setup.app.trim_end_matches('/').to_owned();
    let set = call(
        &app,
        "POST",
        "/admin/page-text",
        None,
        Some(json!({ "text": REASON })),
    )
    .await;
    assert_eq!(set.status, 204, "{}", set.text());
    let probed = format!("probe: {REASON}");
    let session = wait_until(
        Duration::from_secs(30),
        "the hostile page to degrade the session",
        || async {
            let s = host.session().await;
            let seen = s["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|t| t["reason"] == probed.as_str()));
            seen.then_some(s)
        },
    )
    .await;

    // The API: the exact text, as JSON escapes it.
    assert_eq!(session["state"], "degraded", "{session}");
    assert_eq!(session["last_probe"]["detail"], REASON, "{session}");
    let reason = session["reason"].as_str().unwrap();
    assert!(
        reason == probed || reason == format!("watchdog: {REASON}"),
        "{session}"
    );
    let (recent, text) = recent_events(&host).await;
    let changed = recent
        .iter()
        .find(|e| e["event"] == "session.state_changed" && e["data"]["reason"] == probed.as_str())
        .cloned();
    assert!(changed.is_some(), "the feed: {text}");

    // The event stream (SSE): the exact text in the event's JSON.
    let streamed = stream_until(&host, |data| {
        data["event"] == "session.state_changed" && data["data"]["reason"] == probed.as_str()
    })
    .await;
    assert_eq!(streamed["data"]["to"], "degraded", "{streamed}");

    // The webhook: the exact text, in a correctly signed body.
    let hooked = wait_until(Duration::from_secs(10), "the webhook", || async {
        receiver.attempts().into_iter().find(|a| {
            a.event == "session.state_changed" && a.json()["data"]["reason"] == probed.as_str()
        })
    })
    .await;
    assert!(
        hooked.signature_valid && hooked.standard_valid,
        "{hooked:?}"
    );
    // JSON escapes the controls; the bidi override travels as itself.
    let body = String::from_utf8(hooked.body.to_vec()).unwrap();
    assert!(!body.contains('\u{1b}') && !body.contains('\n'), "{body}");

    // Metrics: not a trace of the text.
    let metrics = call(&host.base, "GET", "/metrics", Some(&host.token), None)
        .await
        .text();
    for piece in [
        "forged",
        "pwned",
        "txt.exe",
        "2026-01-01",
        "\u{1b}",
        "\u{202e}",
    ] {
        assert!(
            !metrics.contains(piece),
            "/metrics holds {piece:?}:\n{metrics}"
        );
    }
    assert!(metrics.contains("vigil_session_state{"), "{metrics}");

    // The CLI, as an operator runs it: nothing raw, but the text is there,
    // escaped (so these checks look at the right output).
    let (code, status) = host.cli(&["status"]);
    assert_eq!(code, Some(0), "{status}");
    assert_safe("vigil status", &status);
    // The last decision quotes the policy (a verdict or a key), escaped.
    assert!(status.contains("\\n2026-01-01T00:00:00"), "{status}");
    let (code, status_json) = host.cli(&["status", "--json"]);
    assert_eq!(code, Some(0), "{status_json}");
    assert_safe("vigil status --json", &status_json);
    let parsed: Value = serde_json::from_str(&status_json).expect("valid JSON");
    let listed = parsed["sessions"][0]["reason"].as_str().unwrap();
    assert!(
        listed == probed || listed == format!("watchdog: {REASON}"),
        "the exact reason in --json:\n{status_json}"
    );
    assert!(status_json.contains("\\u202e"), "{status_json}");

    let (code, events) = host.cli(&["events"]);
    assert_eq!(code, Some(0), "{events}");
    assert_safe("vigil events", &events);
    assert!(
        events.contains("probe: ok\\n2026-01-01T00:00:00.000000Z")
            && events.contains("\\x1b[2J")
            && events.contains("\\u{202e}txt.exe"),
        "the escaped reason is shown:\n{events}"
    );
    let (code, events_json) = host.cli(&["events", "--json"]);
    assert_eq!(code, Some(0), "{events_json}");
    assert_safe("vigil events --json", &events_json);
    let exact = events_json.lines().any(|l| {
        serde_json::from_str::<Value>(l).expect("one JSON body per line")["data"]["reason"]
            == probed.as_str()
    });
    assert!(exact, "the exact reason in --json:\n{events_json}");

    let (code, journal_out) = host.cli(&["journal", "main"]);
    assert_eq!(code, Some(0), "{journal_out}");
    assert_safe("vigil journal", &journal_out);
    let keys = journal_out
        .lines()
        .any(|l| l.contains("Shift\\n2026-01-01T00:00:00Z"));
    assert!(
        keys,
        "the hostile key name, escaped by JSON:\n{journal_out}"
    );

    // Degraded, so `vigil login` waits for a login screen and gives up.
    let (code, login) = host.cli(&["login", "main", "--timeout", "2"]);
    assert_eq!(code, Some(9), "{login}");
    assert_safe("vigil login", &login);

    host.stop()
}

/// `GET /v1/events/recent`: the kept events, and the body as text.
async fn recent_events(host: &Hostile) -> (Vec<Value>, String) {
    let recent = call(
        &host.base,
        "GET",
        "/v1/events/recent",
        Some(&host.token),
        None,
    )
    .await;
    let events = recent.json()["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (events, recent.text())
}

/// Reads `GET /v1/events?after=0` as a dashboard would, until an event's
/// JSON data satisfies `pick`; that data.
async fn stream_until(host: &Hostile, pick: impl Fn(&Value) -> bool) -> Value {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut response = http
        .get(format!("{}/v1/events?after=0", host.base))
        .bearer_auth(&host.token)
        .send()
        .await
        .expect("GET the event stream");
    assert_eq!(response.status(), 200);
    let reading = async {
        let mut buffer = String::new();
        while let Some(chunk) = response.chunk().await.expect("the stream reads") {
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                // One `data:` line per event: JSON keeps newlines escaped.
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        let data: Value =
                            serde_json::from_str(data.trim_start()).expect("event data is JSON");
                        if pick(&data) {
                            return data;
                        }
                    }
                }
            }
        }
        panic!("the stream ended before the event");
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the event on the stream within 10 s")
}

/// Every file's text under `dir` (the journal folder), or "".
fn walk_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                text.push_str(&walk_text(&path));
            } else if let Ok(t) = std::fs::read_to_string(&path) {
                text.push_str(&t);
            }
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policies_and_pages_cannot_forge_the_text_log_or_reach_a_terminal() {
    let log = hostile_story("text").await;
    assert_safe("the text log", &log);
    // Each real line starts with its own timestamp; the forged one is
    // inside a line, escaped, as a field.
    let year = humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..4].to_owned();
    for line in log.lines() {
        assert!(
            line.starts_with(&year),
            "a line that is not Vigil's: {line:?}"
        );
    }
    let state_line = log
        .lines()
        .find(|l| {
            l.contains("session main is degraded") && l.contains("reason=probe: ok\\n2026-01-01")
        })
        .unwrap_or_else(|| panic!("no state change with the escaped reason:\n{log}"));
    assert!(state_line.contains("state=degraded"), "{state_line}");
    assert!(
        state_line.contains("\\x1b]0;pwned\\x07\\u{202e}txt.exe"),
        "{state_line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("policy log") && l.contains("text=ok\\n2026-01-01")),
        "the policy's log line, escaped:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("watchdog: degraded") && l.contains("reason=ok\\n2026")),
        "the watchdog's verdict, escaped:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policies_and_pages_cannot_forge_the_json_log() {
    let log = hostile_story("json").await;
    assert_safe("the JSON log", &log);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    // The exact text, as a field of the state change.
    let probed = format!("probe: {REASON}");
    let state = lines
        .iter()
        .find(|l| l["message"] == "session main is degraded" && l["reason"] == probed.as_str())
        .unwrap_or_else(|| panic!("no state change with the exact reason:\n{log}"));
    assert_eq!(state["state"], "degraded", "{state}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "policy log" && l["text"] == REASON),
        "the policy's log line, exact:\n{log}"
    );
    assert!(log.contains("\\u202e"), "bidi escaped as JSON:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_login_qr_code_is_exact_in_json_and_escaped_on_the_terminal() {
    // The page's login QR code holds the hostile text (its login code
    // still pairs, as a phone would).
    let fixture = Fixture::start(FixtureOptions {
        code_rotation: Duration::from_secs(600),
        ..FixtureOptions::default()
    })
    .await
    .expect("fixture starts");
    fixture.set_qr_text(Some(REASON.to_owned()));
    let receiver = Receiver::start(SECRET, Answer::Accept).await;
    let mut host = Hostile::start_on(&fixture.url(), &receiver);
    host.wait_serving().await;

    // JSON: the exact text, in the API, the feed and the webhook.
    let hooked = wait_until(
        Duration::from_secs(60),
        "the needs_login webhook",
        || async {
            receiver
                .attempts()
                .into_iter()
                .find(|a| a.event == "session.needs_login")
        },
    )
    .await;
    assert_eq!(hooked.json()["data"]["qr"], REASON, "{:?}", hooked.body);
    let qr = call(
        &host.base,
        "GET",
        "/v1/sessions/main/qr",
        Some(&host.token),
        None,
    )
    .await;
    assert_eq!(qr.status, 200, "{}", qr.text());
    assert_eq!(qr.json()["text"], REASON);
    let (recent, text) = recent_events(&host).await;
    let listed = recent
        .iter()
        .any(|e| e["event"] == "session.needs_login" && e["data"]["qr"] == REASON);
    assert!(listed, "{text}");

    // The terminal: escaped.
    let (code, events) = host.cli(&["events"]);
    assert_eq!(code, Some(0), "{events}");
    assert_safe("vigil events", &events);
    assert!(
        events.contains("QR code: ok\\n2026-01-01T00:00:00.000000Z"),
        "{events}"
    );
    let (code, events_json) = host.cli(&["events", "--json"]);
    assert_eq!(code, Some(0), "{events_json}");
    assert_safe("vigil events --json", &events_json);
    assert!(
        events_json
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).unwrap()["data"]["qr"] == REASON),
        "{events_json}"
    );

    // `vigil login` on a pipe draws the code and prints its text, escaped;
    // it returns once a phone paired the login code.
    let login = host
        .setup
        .command(&["login", "main", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vigil login");
    // Time for it to find the session and read the code (it looks every
    // second); were it slower, the pairing would still end it with 0, but
    // without the code printed, and the checks below would say so.
    tokio::time::sleep(Duration::from_secs(4)).await;
    fixture.pair(None).expect("the login code pairs");
    let out = tokio::task::spawn_blocking(move || login.wait_with_output())
        .await
        .unwrap()
        .expect("vigil login ends");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The drawing is Vigil's own colours (SGR codes, which only colour):
    // without them, nothing may be left to act on the terminal.
    assert_safe("vigil login", &without_colours(&stdout));
    assert_safe("stderr of vigil login", &stderr);
    assert!(
        stdout.contains("Code text: ok\\n2026-01-01T00:00:00.000000Z")
            && stdout.contains("\\u{202e}txt.exe"),
        "{stdout}"
    );

    let log = host.stop();
    assert_safe("the text log", &log);
    fixture.shutdown().await;
}

/// `vigil policy test` shows what the hostile watchdog answered: escaped,
/// one line per step, in its report; exact in `--json`. No browser.
#[test]
fn a_policy_test_report_shows_a_hostile_answer_escaped() {
    let dir = tempfile::Builder::new()
        .prefix("vigil-untrusted-policy-")
        .tempdir()
        .unwrap();
    let policy = dir.path().join("watchdog.toml");
    std::fs::write(
        &policy,
        format!(
            "role = \"watchdog\"\nplugin = {:?}\n",
            test_plugin("hostile").display().to_string()
        ),
    )
    .unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        "role = \"watchdog\"\nsession = \"main\"\n\n[[step]]\nfacts = { state = \"connected\" }\nexpect = \"healthy\"\n",
    )
    .unwrap();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.args(["policy", "test"])
            .arg(&policy)
            .arg("--scenario")
            .arg(&scenario)
            .env("RUST_LOG", "warn");
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run vigil policy test");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert_safe("stderr of vigil policy test", &stderr);
        stdout
    };
    let report = run(false);
    assert_safe("vigil policy test", &report);
    let actual = report
        .lines()
        .find(|l| l.trim_start().starts_with("+ actual:"))
        .unwrap_or_else(|| panic!("no actual answer:\n{report}"));
    assert!(
        actual.contains("degraded (ok\\n2026-01-01T00:00:00.000000Z")
            && actual.contains("\\u{202e}txt.exe)"),
        "{report}"
    );
    let json = run(true);
    assert_safe("vigil policy test --json", &json);
    let parsed: Value = serde_json::from_str(&json).expect("JSON on stdout");
    let answered = parsed["steps"][0]["actual"][0].as_str().unwrap();
    assert!(answered.contains("forged\u{1b}[2J"), "{answered:?}");
}
