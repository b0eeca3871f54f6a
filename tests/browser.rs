//! The browser layer in a real Chromium (Debian's `chromium`) against the
//! fixture web app: launch, pair, probe, keepalive input, screenshots,
//! profile locks, close and crash detection. Each test has its own profile;
//! at most two browsers run at once.

mod common;

use std::time::{Duration, Instant};

use common::chromium::{
    TestProfile, assert_stays, browser_slot, launch, session, settings, wait_for_state,
};
use common::fixture;
use vigil::browser::{Action, Browser, BrowserError, BrowserGone, PageState, Probe};

const SETTLE: Duration = Duration::from_secs(20);

/// The fixture's screens as CSS selectors, the other kind of probe.
fn selector_probe() -> Probe {
    Probe::Selectors {
        connected: "#connected".into(),
        needs_login: "#login".into(),
    }
}

fn whatsapp_probe() -> Probe {
    #[derive(serde::Deserialize)]
    struct Example {
        session: Vec<Session>,
    }
    #[derive(serde::Deserialize)]
    struct Session {
        probe: Probe,
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/whatsapp.toml"
    ))
    .unwrap();
    let mut example: Example = toml::from_str(&text).unwrap();
    example.session.remove(0).probe
}

async fn run_script(browser: &Browser, script: &str) -> String {
    browser
        .act(&Action::RunScript {
            script: script.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

#[tokio::test]
async fn a_new_profile_shows_the_login_code_and_connects_once_paired() {
    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("pairing", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();

    let first = browser
        .wait_settled(&common::chromium::state_probe(), SETTLE)
        .await
        .unwrap();
    assert_eq!(first.state, PageState::NeedsLogin, "{first:?}");
    assert_eq!(
        browser.probe(&selector_probe()).await.unwrap().state,
        PageState::NeedsLogin
    );
    let shown = run_script(&browser, "document.getElementById('code').textContent").await;
    let report = app.report().await;
    let code = report.pending_codes.last().expect("a pending code").clone();
    assert!(
        shown.contains(&code),
        "page shows {shown}, server has {code}"
    );
    assert_eq!(report.pairings, 0);

    let device = app.pair(&code).await;
    wait_for_state(&browser, "connected", SETTLE).await;
    let connected = browser.probe(&selector_probe()).await.unwrap();
    assert_eq!(connected.state, PageState::Connected, "{connected:?}");
    assert_eq!(connected.detail, "matched #connected");

    let report = app.report().await;
    assert_eq!(report.pairings, 1);
    let d = report.device(&device).expect("paired device");
    assert!(d.connected && !d.idle, "{d:?}");
    // The credential went to both stores.
    let stored = run_script(
        &browser,
        "new Promise((ok, fail) => { const r = indexedDB.open('vigil-fixture'); \
         r.onsuccess = () => { const g = r.result.transaction('credentials').objectStore('credentials').get('device'); \
         g.onsuccess = () => ok([g.result && g.result.device, JSON.parse(localStorage.getItem('vigil-fixture.device')).device]); }; \
         r.onerror = () => fail(r.error); })",
    )
    .await;
    assert_eq!(
        stored,
        format!("script returned [\"{device}\",\"{device}\"]")
    );
    browser.close().await;
}

#[tokio::test]
async fn a_relaunch_on_the_same_profile_connects_without_pairing() {
    let _slot = browser_slot().await;
    // One fixture for both browsers: the same port, so the same origin.
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();

    let browser = launch("relaunch", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    let device = app.pair_shown_code().await;
    wait_for_state(&browser, "connected", SETTLE).await;
    assert_eq!(
        profile.singleton_links().len(),
        3,
        "a running Chromium holds its lock links"
    );
    let closed = browser.close().await;
    assert!(closed.graceful, "{closed:?}");
    assert!(
        profile.singleton_links().is_empty(),
        "a graceful close removes the lock links: {:?}",
        profile.singleton_links()
    );
    assert_eq!(profile.exit_type().as_deref(), Some("Normal"));

    let browser = launch("relaunch", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    let outcome = browser
        .wait_settled(&common::chromium::state_probe(), SETTLE)
        .await
        .unwrap();
    assert_eq!(outcome.state, PageState::Connected, "{outcome:?}");
    let report = app.report().await;
    assert_eq!(report.pairings, 1, "no new pairing");
    let d = report.device(&device).unwrap();
    assert!(d.connected);
    assert_eq!(d.connects, 2);
    assert_eq!(
        run_script(&browser, "document.body.dataset.credentialSource").await,
        "script returned \"indexeddb\""
    );
    browser.close().await;
}

#[tokio::test]
async fn a_dropped_connection_stays_disconnected_until_a_reload() {
    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("drop", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    let device = app.pair_shown_code().await;
    wait_for_state(&browser, "connected", SETTLE).await;

    assert_eq!(app.drop_connections().await, 1);
    let outcome = wait_for_state(&browser, "disconnected", Duration::from_secs(10)).await;
    assert_eq!(outcome.state, PageState::Other);
    assert_eq!(
        browser.probe(&selector_probe()).await.unwrap().state,
        PageState::Other
    );
    // An EventSource would retry within about 3 s; the app must not.
    assert_stays(
        &browser,
        PageState::Other,
        "disconnected",
        Duration::from_secs(5),
    )
    .await;
    assert!(!app.report().await.device(&device).unwrap().connected);

    browser.act(&Action::ReloadPage).await.unwrap();
    wait_for_state(&browser, "connected", SETTLE).await;
    let report = app.report().await;
    assert_eq!(report.pairings, 1);
    assert_eq!(report.device(&device).unwrap().connects, 2);
    browser.close().await;
}

#[tokio::test]
async fn a_logged_out_device_shows_the_login_screen_again() {
    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("logout", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    let device = app.pair_shown_code().await;
    wait_for_state(&browser, "connected", SETTLE).await;

    app.logout(&device).await;
    wait_for_state(&browser, "needs-login", SETTLE).await;
    let outcome = browser.probe(&selector_probe()).await.unwrap();
    assert_eq!(outcome.state, PageState::NeedsLogin, "{outcome:?}");
    assert_eq!(
        run_script(&browser, "localStorage.getItem('vigil-fixture.device')").await,
        "script returned null",
        "the page forgot its credential"
    );
    // And a reload does not bring the old device back.
    browser.act(&Action::ReloadPage).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    assert!(app.report().await.device(&device).unwrap().revoked);
    browser.close().await;
}

/// Connects a fresh profile to a fixture that marks pages idle after 3 s.
async fn connected_with_idle_limit(
    name: &str,
) -> (
    vigil_fixture::Fixture,
    fixture::FixtureClient,
    TestProfile,
    Browser,
    String,
) {
    let (fx, app) = fixture::start(Some(Duration::from_secs(3))).await;
    let profile = TestProfile::new();
    let browser = launch(name, &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    let device = app.pair_shown_code().await;
    wait_for_state(&browser, "connected", SETTLE).await;
    (fx, app, profile, browser, device)
}

#[tokio::test]
async fn without_input_the_page_goes_idle() {
    let _slot = browser_slot().await;
    let (_fx, app, _profile, browser, device) = connected_with_idle_limit("idle").await;
    let outcome = wait_for_state(&browser, "idle", Duration::from_secs(10)).await;
    assert_eq!(outcome.state, PageState::Other);
    let d = app.report().await.device(&device).unwrap().clone();
    assert!(d.idle && d.idle_count >= 1, "{d:?}");
    assert_eq!(d.activity_reports, 0);

    // Input brings it back, as a person returning would.
    browser
        .act(&Action::MouseMove { x: 300, y: 200 })
        .await
        .unwrap();
    wait_for_state(&browser, "connected", Duration::from_secs(5)).await;
    browser.close().await;
}

/// Runs the `n`th action every second for 8 s (well past the 3 s idle
/// limit) and checks the page never went idle.
async fn input_keeps_the_page_active(name: &str, action: impl Fn(u32) -> Action) {
    let _slot = browser_slot().await;
    let (_fx, app, _profile, browser, device) = connected_with_idle_limit(name).await;
    let until = Instant::now() + Duration::from_secs(8);
    let mut n = 0;
    while Instant::now() < until {
        let action = action(n);
        n += 1;
        browser.act(&action).await.unwrap();
        let outcome = browser
            .probe(&common::chromium::state_probe())
            .await
            .unwrap();
        assert_eq!(
            outcome.detail, "connected",
            "with {action:?} the page went {outcome:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let d = app.report().await.device(&device).unwrap().clone();
    assert_eq!(d.idle_count, 0, "{d:?}");
    assert!(d.activity_reports >= 4, "{d:?}");
    browser.close().await;
}

#[tokio::test]
async fn mouse_moves_keep_the_page_from_going_idle() {
    // Each move to a new point, as the activity policy's jiggle does: a
    // move to where the pointer already is fires no event.
    input_keeps_the_page_active("mouse", |n| Action::MouseMove {
        x: 200 + 7 * (n % 2),
        y: 200 + 7 * (n % 2),
    })
    .await;
}

#[tokio::test]
async fn key_presses_keep_the_page_from_going_idle() {
    input_keeps_the_page_active("keys", |_| Action::KeyPress {
        key: "Shift".into(),
    })
    .await;
}

#[tokio::test]
async fn focus_presence_wake_lock_and_scripts_work_in_the_page() {
    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("actions", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;

    browser.act(&Action::Focus).await.unwrap();
    assert_eq!(
        run_script(&browser, "document.hasFocus()").await,
        "script returned true"
    );
    let presence = browser.act(&Action::Presence).await.unwrap();
    assert_eq!(presence, "present: visible, focus=true");
    let wake = browser.act(&Action::WakeLock).await.unwrap();
    assert_eq!(wake, "wake lock acquired");
    assert_eq!(
        browser.act(&Action::WakeLock).await.unwrap(),
        "wake lock held"
    );
    assert_eq!(run_script(&browser, "1 + 2").await, "script returned 3");
    // The shipped WhatsApp probe is valid JS: on a page that is not
    // WhatsApp it matches nothing and says so.
    let whatsapp = whatsapp_probe();
    let outcome = browser.probe(&whatsapp).await.unwrap();
    assert_eq!(
        (outcome.state, outcome.detail.as_str()),
        (PageState::Other, "starting")
    );
    match browser
        .act(&Action::RunScript {
            script: "nope.nope".into(),
        })
        .await
    {
        Err(BrowserError::Script { message, .. }) => {
            assert!(message.contains("nope is not defined"), "{message}")
        }
        other => panic!("expected a script error, got {other:?}"),
    }
    browser.close().await;
}

#[tokio::test]
async fn a_page_that_cannot_load_is_an_error_naming_the_url() {
    let _slot = browser_slot().await;
    let profile = TestProfile::new();
    let browser = launch("unreachable", &profile.path()).await;
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let err = browser.open(&url).await.unwrap_err();
    assert!(matches!(err, BrowserError::Navigate { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("ERR_CONNECTION_REFUSED"),
        "{text}"
    );
    // The browser itself is fine.
    assert_eq!(
        run_script(&browser, "'still here'").await,
        "script returned \"still here\""
    );
    browser.close().await;
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "too short for a PNG");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test]
async fn a_screenshot_is_a_png_of_the_login_screen() {
    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("screenshot", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;

    let png = browser.screenshot().await.unwrap();
    let s = settings();
    assert_eq!(png_size(&png), (s.window_width, s.window_height));
    // A login screen with a code picture is far from a blank page, which
    // compresses to a few KB.
    assert!(
        png.len() > 20_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    if let Some(dir) = std::env::var_os("VIGIL_SCREENSHOT_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("login.png"), &png).unwrap();
    }

    app.pair_shown_code().await;
    wait_for_state(&browser, "connected", SETTLE).await;
    let after = browser.screenshot().await.unwrap();
    assert_ne!(after, png, "the connected screen looks different");
    browser.close().await;
}

/// The live view's stream: the page at once, a new frame when the page
/// changes (at most every `FRAME_GAP`), shared by two watchers, and
/// stopped once the last one leaves.
#[tokio::test]
async fn the_screencast_runs_while_someone_watches() {
    use base64::Engine as _;
    use vigil::browser::FRAME_GAP;

    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("screencast", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    assert!(!browser.screencasting().await);

    let mut first = browser.screencast().await.unwrap();
    let frame = tokio::time::timeout(SETTLE, first.next())
        .await
        .expect("a first frame at once")
        .expect("the screencast runs");
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(&frame.jpeg_base64)
        .expect("base64");
    assert_eq!(&jpeg[..3], b"\xff\xd8\xff", "a JPEG");
    assert!(browser.screencasting().await);

    // A second watcher shares it and sees the current picture at once.
    let mut second = browser.screencast().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .expect("the current frame for a new watcher")
        .expect("the screencast runs");

    // The page changes: a new picture comes, not sooner than the gap.
    let started = Instant::now();
    app.pair_shown_code().await;
    wait_for_state(&browser, "connected", SETTLE).await;
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_millis(500), first.next()).await {
            Ok(Some(_)) => frames += 1,
            Ok(None) => panic!("the screencast ended"),
            Err(_) => {}
        }
    }
    assert!(frames >= 1, "no frame after the page changed");
    let most = (started.elapsed().as_millis() / FRAME_GAP.as_millis()) as usize + 2;
    assert!(frames <= most, "{frames} frames in {:?}", started.elapsed());

    // One leaves: it goes on; the last leaves: it stops.
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        browser.screencasting().await,
        "stopped while one still watches"
    );
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    while browser.screencasting().await {
        assert!(Instant::now() < deadline, "the screencast did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it starts again for the next watcher.
    let mut again = browser.screencast().await.unwrap();
    tokio::time::timeout(SETTLE, again.next())
        .await
        .expect("a frame")
        .expect("the screencast runs again");
    drop(again);
    browser.close().await;
}

/// What a phone sees: the login screen's QR code, read from a real
/// screenshot, says the pending code; pairing with the text read connects
/// the page; a few seconds later (the rotation period, shortened here) the
/// page shows another code and the old one no longer pairs.
#[tokio::test]
async fn the_login_qr_code_reads_as_the_pending_code_pairs_and_rotates() {
    let _slot = browser_slot().await;
    let rotation = Duration::from_secs(3);
    let (_fixture, app) = fixture::start_rotating(rotation).await;
    let profile = TestProfile::new();
    let browser = launch("qr", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;

    let read = |png: Vec<u8>| async move {
        vigil::qr::find_in_png(&png)
            .expect("the screenshot is a PNG")
            .expect("a QR code is visible")
    };
    let first_shot = browser.screenshot().await.unwrap();
    if let Some(dir) = std::env::var_os("VIGIL_SCREENSHOT_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("login-qr.png"), &first_shot).unwrap();
    }
    let first = read(first_shot).await;
    let pending = app.report().await.pending_codes;
    assert_eq!(pending.last(), Some(&first.text), "{pending:?}");

    // The page moves on to a new code; the old one is refused as expired.
    let started = Instant::now();
    let second = loop {
        let found = read(browser.screenshot().await.unwrap()).await;
        if found.text != first.text {
            break found;
        }
        assert!(
            started.elapsed() < rotation * 3,
            "the code did not rotate within {:?}",
            rotation * 3
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(app.report().await.pending_codes, vec![second.text.clone()]);
    let (status, body) = app.try_pair(&first.text).await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // A phone scans the current code: the page connects. (It may have
    // rotated again since the screenshot; then the phone scans again.)
    let device = loop {
        let shown = read(browser.screenshot().await.unwrap()).await;
        let (status, body) = app.try_pair(&shown.text).await;
        if status == 200 {
            break body["device"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 410, "{body}");
    };
    wait_for_state(&browser, "connected", SETTLE).await;
    assert!(app.report().await.device(&device).unwrap().connected);
    let connected = vigil::qr::find_in_png(&browser.screenshot().await.unwrap()).unwrap();
    assert_eq!(connected, None, "no QR code once connected");
    browser.close().await;
}

#[tokio::test]
async fn a_profile_held_by_a_live_browser_is_refused_with_a_clear_error() {
    let _slot = browser_slot().await;
    let profile = TestProfile::new();
    let first = launch("holder", &profile.path()).await;

    let started = Instant::now();
    let second = Browser::launch(session("intruder"), &profile.path(), &settings()).await;
    let err = match second {
        Ok(_) => panic!("a second browser started on a live profile"),
        Err(e) => e,
    };
    assert!(matches!(err, BrowserError::ProfileInUse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("session intruder"), "{text}");
    assert!(
        text.contains(&profile.path().display().to_string()),
        "{text}"
    );
    assert!(text.contains("in use"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The holder is unharmed.
    assert_eq!(run_script(&first, "6 * 7").await, "script returned 42");
    assert!(first.close().await.graceful);
}

#[tokio::test]
async fn a_killed_chromium_is_noticed_within_a_second() {
    let _slot = browser_slot().await;
    let (_fixture, app) = fixture::start(None).await;
    let profile = TestProfile::new();
    let browser = launch("kill", &profile.path()).await;
    browser.open(&app.url("/")).await.unwrap();
    wait_for_state(&browser, "needs-login", SETTLE).await;
    let mut exit = browser.exit_signal();
    assert_eq!(exit.gone(), None);

    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &browser.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let gone = tokio::time::timeout(Duration::from_secs(1), exit.wait())
        .await
        .expect("the exit signal fires within a second");
    let noticed = killed.elapsed();
    assert!(
        matches!(
            gone,
            BrowserGone::Exited(e) if e.signal == Some(9)
        ) || matches!(gone, BrowserGone::DevtoolsLost(_)),
        "{gone:?}"
    );
    eprintln!("kill -9 noticed after {noticed:?}: {gone}");

    // Anything asked of the dead browser fails at once, naming why.
    let asked = Instant::now();
    let err = browser.probe(&selector_probe()).await.unwrap_err();
    assert!(matches!(err, BrowserError::Gone { .. }), "{err:?}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    let closed = browser.close().await;
    assert!(!closed.graceful);

    // The Singleton links are left behind, as after any crash; a relaunch
    // on this host still works.
    assert_eq!(profile.singleton_links().len(), 3);
    let stale_socket = std::fs::read_link(profile.path().join("SingletonSocket")).unwrap();
    let again = launch("kill", &profile.path()).await;
    again.open(&app.url("/")).await.unwrap();
    wait_for_state(&again, "needs-login", SETTLE).await;
    assert!(again.close().await.graceful);
    // Chromium never removes the killed browser's socket folder itself.
    if let Some(dir) = stale_socket.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
