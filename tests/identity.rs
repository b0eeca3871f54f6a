//! Each session's own browser identity, in real Chromium, end to end: a
//! `vigil.toml` with several sessions, the host started as `vigil run`
//! does, and the fixture app telling what each page (and one of its
//! workers) saw of itself and what its server received. Then a proxy
//! written in the test, which the page's traffic must go through with the
//! session's credentials.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::chromium::{browser_slot, init_logging, settings};
use common::fixture::FixtureClient;
use common::proxy::TestProxy;
use vigil::config::Config;
use vigil::id::SessionId;
use vigil::session::{SessionClient, SessionState};
use vigil::supervisor::Supervisor;
use vigil_fixture::{ConnectionReport, Fixture, FixtureOptions, FixtureReport};

const BERLIN_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) VigilTest/1.0 Berlin";

/// A host of the sessions in `sessions` (TOML `[[session]]` tables whose
/// `url = "{app}"` becomes the fixture's URL and its state probe) on a
/// fixture that pairs every login code by itself, so every page connects.
struct IdentityHost {
    root: tempfile::TempDir,
    fixture: Fixture,
    web: FixtureClient,
    supervisor: Option<Supervisor>,
}

impl IdentityHost {
    async fn start(sessions: &str) -> Self {
        init_logging();
        let root = tempfile::Builder::new()
            .prefix("vigil-identity-")
            .tempdir()
            .expect("temp dir");
        let fixture = Fixture::start(FixtureOptions {
            auto_pair_after: Some(Duration::from_millis(300)),
            ..FixtureOptions::default()
        })
        .await
        .expect("fixture starts");
        let web = FixtureClient::new(&fixture.url());
        std::fs::create_dir_all(root.path().join("policies")).unwrap();
        let text = format!(
            r#"data_dir = "data"
[backup]
store = "file://backups"
after_login = false
on_shutdown = false
[policy]
dir = "policies"
[service]
probe_interval_secs = "500ms"
connect_timeout_secs = 30
[browser]
executable = {executable:?}
{sessions}"#,
            executable = settings().executable.display().to_string(),
            sessions = sessions.replace(
                "url = \"{app}\"",
                &format!(
                    "url = \"{}\"\nprobe = {{ script = \"document.body.dataset.state\" }}",
                    fixture.url()
                )
            ),
        );
        let file = root.path().join("vigil.toml");
        std::fs::write(&file, text).unwrap();
        let config = Config::load(&file).expect("the test config is valid");
        let supervisor = Supervisor::start(&config).await.expect("the host starts");
        Self {
            root,
            fixture,
            web,
            supervisor: Some(supervisor),
        }
    }

    /// Waits until `n` pages hold a live connection and said who they are.
    async fn connections(&self, n: usize, timeout: Duration) -> Vec<ConnectionReport> {
        let deadline = Instant::now() + timeout;
        loop {
            let report = self.web.report().await;
            let told: Vec<_> = report
                .connections
                .iter()
                .filter(|c| c.identity.page.is_some())
                .cloned()
                .collect();
            if told.len() >= n {
                return told;
            }
            assert!(
                Instant::now() < deadline,
                "{n} connected pages expected within {timeout:?}; the fixture has {report:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn session(&self, id: &str) -> SessionClient {
        self.supervisor
            .as_ref()
            .expect("running")
            .session(&SessionId::new(id).unwrap())
            .expect("a configured session")
            .clone()
    }

    async fn stop(mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.shutdown(Duration::from_secs(30)).await;
        }
        self.fixture.shutdown().await;
        drop(self.root);
    }
}

fn describe(report: &FixtureReport) -> String {
    format!("{report:#?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_is_seen_with_its_own_identity() {
    let _slot = browser_slot().await;
    let host = IdentityHost::start(&format!(
        r#"
[[session]]
id = "berlin"
url = "{{app}}"
user_agent = "{BERLIN_UA}"
locale = "de-DE"
timezone = "Europe/Berlin"

[[session]]
id = "tokyo"
url = "{{app}}"
locale = "ja-jp"
timezone = "Asia/Tokyo"

[[session]]
id = "plain"
url = "{{app}}"
"#
    ))
    .await;
    let connections = host.connections(3, Duration::from_secs(90)).await;
    let report = host.web.report().await;
    assert_eq!(connections.len(), 3, "{}", describe(&report));
    let by_zone = |zone: &str| {
        let found: Vec<_> = connections
            .iter()
            .filter(|c| c.identity.page.as_ref().unwrap().timezone == zone)
            .collect();
        assert_eq!(found.len(), 1, "one page in {zone}: {}", describe(&report));
        found[0].identity.clone()
    };

    // Berlin: exactly what its session set, in the page, in its worker,
    // and in the headers the server received.
    let berlin = by_zone("Europe/Berlin");
    let (page, worker) = (
        berlin.page.unwrap(),
        berlin.worker.expect("the worker answered"),
    );
    assert_eq!(page.user_agent, BERLIN_UA);
    assert_eq!(worker.user_agent, BERLIN_UA);
    assert_eq!(berlin.user_agent_header.as_deref(), Some(BERLIN_UA));
    assert_eq!(page.language, "de-DE");
    assert_eq!(worker.language, "de-DE");
    let accept = berlin.accept_language_header.unwrap();
    assert!(accept.starts_with("de-DE"), "Accept-Language: {accept}");
    assert_eq!(worker.timezone, "Europe/Berlin");
    assert_eq!(page.intl_locale, "de-DE", "Intl in the page");

    // Tokyo: its own language and zone (the tag written in its usual
    // case), and Chromium's user agent without "HeadlessChrome".
    let tokyo = by_zone("Asia/Tokyo");
    let (page, worker) = (
        tokyo.page.unwrap(),
        tokyo.worker.expect("the worker answered"),
    );
    assert_eq!(
        (page.language.as_str(), worker.language.as_str()),
        ("ja-JP", "ja-JP")
    );
    assert_eq!(worker.timezone, "Asia/Tokyo");
    assert!(
        tokyo.accept_language_header.unwrap().starts_with("ja-JP"),
        "{}",
        describe(&report)
    );
    assert!(page.user_agent.contains(" Chrome/"), "{}", page.user_agent);
    assert!(
        !page.user_agent.contains("HeadlessChrome"),
        "{}",
        page.user_agent
    );

    // Plain: nothing set, yet no "HeadlessChrome" anywhere, and the same
    // default user agent as Tokyo's.
    let plain = connections
        .iter()
        .find(|c| {
            !["Europe/Berlin", "Asia/Tokyo"]
                .contains(&c.identity.page.as_ref().unwrap().timezone.as_str())
        })
        .expect("the plain session's page")
        .identity
        .clone();
    let header = plain.user_agent_header.clone().unwrap();
    let (page, worker) = (
        plain.page.unwrap(),
        plain.worker.expect("the worker answered"),
    );
    for ua in [&header, &page.user_agent, &worker.user_agent] {
        assert!(!ua.contains("HeadlessChrome"), "{ua}");
        assert!(ua.contains(" Chrome/"), "{ua}");
    }
    assert_eq!(page.user_agent, tokyo_default_ua(&report));
    assert_ne!(page.language, "de-DE");
    host.stop().await;
}

/// The user agent the Tokyo page saw (no user_agent set there either).
fn tokyo_default_ua(report: &FixtureReport) -> String {
    report
        .connections
        .iter()
        .filter_map(|c| c.identity.page.as_ref())
        .find(|p| p.timezone == "Asia/Tokyo")
        .map(|p| p.user_agent.clone())
        .expect("the Tokyo page")
}

fn proxied_session(proxy: &TestProxy, credentials: Option<&Path>) -> String {
    let credentials = credentials
        .map(|f| format!("proxy_credentials_file = {:?}\n", f.display().to_string()))
        .unwrap_or_default();
    // Chromium sends loopback traffic around any proxy unless told
    // otherwise; the fixture is on 127.0.0.1.
    format!(
        r#"
[[session]]
id = "proxied"
url = "{{app}}"
proxy = "{}"
{credentials}extra_args = ["--proxy-bypass-list=<-loopback>"]
"#,
        proxy.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_goes_through_the_proxy_with_the_sessions_credentials() {
    let _slot = browser_slot().await;
    let proxy = TestProxy::start("alice:s3cret:with-colon").await;
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("proxy-credentials");
    std::fs::write(&file, "alice:s3cret:with-colon\n").unwrap();
    let host = IdentityHost::start(&proxied_session(&proxy, Some(&file))).await;

    let connections = host.connections(1, Duration::from_secs(60)).await;
    let app = host.fixture.addr().to_string();
    let forwarded = proxy.forwarded_to(&app);
    // The page, its script, its login and its live connection all came
    // through.
    let paths: Vec<&str> = forwarded
        .iter()
        .filter_map(|s| s.target.split_once(app.as_str()).map(|(_, path)| path))
        .collect();
    assert!(paths.contains(&"/"), "{paths:?}");
    for prefix in ["/app.js", "/api/login", "/api/connect"] {
        assert!(
            paths.iter().any(|p| p.starts_with(prefix)),
            "{prefix} was not forwarded: {paths:?}"
        );
    }
    assert!(
        forwarded
            .iter()
            .all(|s| s.credentials.as_deref() == Some("alice:s3cret:with-colon"))
    );
    // The first request was challenged, as a proxy does, and answered.
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| !s.forwarded && s.credentials.is_none()),
        "no 407 challenge was answered: {seen:#?}"
    );
    assert_eq!(connections.len(), 1);
    assert!(
        !connections[0]
            .identity
            .page
            .as_ref()
            .unwrap()
            .user_agent
            .is_empty()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_credentials_the_page_does_not_load() {
    let _slot = browser_slot().await;
    let proxy = TestProxy::start("alice:s3cret").await;
    let secrets = tempfile::tempdir().unwrap();
    let wrong = secrets.path().join("wrong");
    std::fs::write(&wrong, "alice:guess\n").unwrap();

    for credentials in [None, Some(wrong.as_path())] {
        let host = IdentityHost::start(&proxied_session(&proxy, credentials)).await;
        let app = host.fixture.addr().to_string();
        // Long enough for the launch, the page load and a few probes.
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let challenged = proxy.seen().iter().any(|s| s.target.contains(&app));
            if challenged {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let report = host.web.report().await;
        assert!(
            report.connections.is_empty() && report.pending_codes.is_empty(),
            "with {credentials:?} the page reached the app: {}",
            describe(&report)
        );
        assert!(proxy.forwarded_to(&app).is_empty(), "{:#?}", proxy.seen());
        let status = host.session("proxied").status();
        assert_ne!(status.state, SessionState::Connected, "{status:#?}");
        let asked: Vec<_> = proxy
            .seen()
            .into_iter()
            .filter(|s| s.target.contains(&app))
            .collect();
        assert!(!asked.is_empty(), "the page did not even try the proxy");
        if credentials.is_some() {
            // Refused credentials are offered once, not in a loop.
            let offered = asked
                .iter()
                .filter(|s| s.credentials.as_deref() == Some("alice:guess"))
                .count();
            assert!(
                (1..=3).contains(&offered),
                "offered {offered} times: {asked:#?}"
            );
        }
        host.stop().await;
    }
}
