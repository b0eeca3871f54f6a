//! The web console, driven in real Chromium as an operator would: open
//! http://127.0.0.1:PORT/, paste the token, read the session table, scan
//! the login QR code from the live view, back up, add and remove a
//! session, and read a hostile policy reason as text. The host runs in
//! this process on the fixture app (see `common::api::TestHost`).
//!
//! It also takes the README's pictures of the console, into
//! `target/console/`; with `VIGIL_UPDATE_PICTURES=1` into `docs/`
//! (`docs/console.png`, `docs/console-live.png`), so that an ordinary test
//! run leaves the checkout as it was.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde_json::Value;

use common::api::{TOKEN, TestHost};
use common::chromium::browser_slot;
use common::fixture::FixtureClient;
use common::plugins::repo_root;

/// How long the console may take to show what the host did.
const SHOWN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_host_from_the_console() {
    let _slot = browser_slot().await;
    // Built before anything runs: the build may take a while.
    let (verdict, activity) = tokio::task::spawn_blocking(|| {
        (
            common::plugins::test_plugin("verdict"),
            common::plugins::plugin("activity"),
        )
    })
    .await
    .expect("the plugins build");
    let host = TestHost::start("", "").await;
    // A keepalive policy for every session, so the policy panel has a
    // file to show from the start.
    std::fs::write(
        host.root.path().join("policies/keepalive.toml"),
        format!(
            "role = \"keepalive\"\nplugin = {:?}\ninterval = \"30s\"\n",
            activity.display().to_string()
        ),
    )
    .expect("write the keepalive policy");
    let the_console_is_served_with_a_strict_policy = check_headers(&host.base).await;
    assert!(the_console_is_served_with_a_strict_policy);

    let operator = Operator::launch().await;
    let page = operator.open(&format!("{}/", host.base)).await;

    a_wrong_token_is_refused(&page).await;
    page.reload().await.expect("reload the console");
    signs_in_with_the_token(&page).await;
    the_session_needs_a_login_and_the_filter_finds_it(&page).await;
    the_policy_panel_shows_the_file_and_its_reload(&page).await;
    let code = the_live_view_shows_the_login_qr_code(&page, &host).await;
    pairing_turns_the_row_connected_without_a_reload(&page, &host, &code).await;
    back_up_now_adds_a_backup_to_the_list(&page, &host).await;
    a_chosen_backup_is_restored_and_the_session_connects_again(&page, &host).await;
    the_add_form_creates_a_working_session_and_remove_takes_it_away(&page, &host).await;
    a_hostile_policy_reason_shows_as_text_and_runs_nothing(&page, &host, &verdict).await;

    operator.close().await;
    host.stop().await;
}

// ------------------------------------------------------------- the story

/// The console's files need no token, and come with the headers that
/// keep anything but the console's own script from running.
async fn check_headers(base: &str) -> bool {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in ["/", "/console/app.js", "/console/style.css"] {
        let answer = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "img-src 'self' data: blob:",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP {csp:?} lacks {directive}"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    // The page carries no inline script or style for the policy to block.
    let html = http.get(format!("{base}/")).send().await.unwrap();
    let html = html.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains("style="));
    // Data still needs the token.
    let open = http
        .get(format!("{base}/v1/sessions/main/screencast"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401);
    true
}

async fn a_wrong_token_is_refused(page: &Page) {
    type_into(page, "#token", "not-the-token-0123456789").await;
    click(page, "#sign-in-button").await;
    let said = wait_js(
        page,
        "the refusal",
        "(() => { const e = document.getElementById('sign-in-error'); return e.hidden ? null : e.textContent; })()",
    )
    .await;
    assert!(said.as_str().unwrap().contains("refused"), "{said}");
    assert_eq!(
        js(page, "document.getElementById('console').hidden").await,
        true
    );
    assert_eq!(
        js(page, "sessionStorage.getItem('vigil.token')").await,
        Value::Null
    );
}

async fn signs_in_with_the_token(page: &Page) {
    type_into(page, "#token", TOKEN).await;
    click(page, "#sign-in-button").await;
    wait_js(
        page,
        "the session table",
        "document.querySelector('#sessions tr[data-session=\"main\"]') !== null",
    )
    .await;
    // Kept for this tab only, sent as a header: no cookie, no URL.
    assert_eq!(
        js(page, "sessionStorage.getItem('vigil.token')").await,
        TOKEN
    );
    assert_eq!(js(page, "document.cookie").await, "");
    assert!(
        !js(page, "location.href")
            .await
            .as_str()
            .unwrap()
            .contains(TOKEN)
    );
    // Marks this page load: a reload would lose it.
    js(page, "window.loadMark = 'first'").await;
}

async fn the_session_needs_a_login_and_the_filter_finds_it(page: &Page) {
    wait_row_state(page, "main", "needs-login").await;
    // A headless mouse cannot open a native <select>: choose as a keyboard
    // would, then the page reacts to the change.
    choose(page, "#state-filter", "connected").await;
    wait_js(
        page,
        "the filter to hide the session",
        "document.querySelectorAll('#sessions tbody tr').length === 0 && !document.getElementById('no-sessions').hidden",
    )
    .await;
    choose(page, "#state-filter", "needs-login").await;
    wait_js(
        page,
        "the filter to show the session",
        "document.querySelector('#sessions tr[data-session=\"main\"]') !== null",
    )
    .await;
    choose(page, "#state-filter", "").await;
}

async fn the_policy_panel_shows_the_file_and_its_reload(page: &Page) {
    let row = wait_js(
        page,
        "the keepalive policy in the policy panel",
        "(() => { const r = [...document.querySelectorAll('#policies tbody tr')].find(r => r.cells[0].textContent === 'keepalive.toml'); return r ? [...r.cells].map(c => c.textContent) : null; })()",
    )
    .await;
    assert_eq!(row[1], "keepalive", "{row}");
    assert_eq!(
        row[2], "* → main",
        "its pattern and the sessions it matches: {row}"
    );
    wait_js(
        page,
        "the keepalive policy's reload",
        "[...document.querySelectorAll('#reloads li')].some(li => li.textContent.includes('accepted') && li.textContent.includes('keepalive.toml'))",
    )
    .await;
}

/// The live view streams the session's page; the QR code in it reads as
/// the code the fixture waits for.
async fn the_live_view_shows_the_login_qr_code(page: &Page, host: &TestHost) -> String {
    click(
        page,
        "#sessions tr[data-session=\"main\"] button[data-action=\"live\"]",
    )
    .await;
    wait_js(
        page,
        "a frame in the live view",
        "(document.getElementById('live-image').getAttribute('src') || '').startsWith('data:image/jpeg;base64,')",
    )
    .await;
    let web = FixtureClient::new(&host.fixture.url());
    let deadline = Instant::now() + SHOWN;
    let text = loop {
        let image = page
            .find_element("#live-image")
            .await
            .expect("the live image")
            .screenshot(CaptureScreenshotFormat::Png)
            .await
            .expect("a screenshot of the live image");
        if let Some(found) = vigil::qr::find_in_png(&image).expect("a PNG") {
            break found.text;
        }
        assert!(
            Instant::now() < deadline,
            "no QR code could be read from the live view"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let pending = web.report().await.pending_codes;
    assert!(
        pending.contains(&text),
        "the live view's QR code says {text:?}; the fixture waits for {pending:?}"
    );
    save_picture(page, "docs/console-live.png").await;
    text
}

async fn pairing_turns_the_row_connected_without_a_reload(
    page: &Page,
    host: &TestHost,
    code: &str,
) {
    FixtureClient::new(&host.fixture.url()).pair(code).await;
    wait_row_state(page, "main", "connected").await;
    assert_eq!(
        js(page, "window.loadMark").await,
        "first",
        "the page reloaded"
    );
    // The feed told it too.
    wait_js(
        page,
        "the state change in the event feed",
        "[...document.querySelectorAll('#events li')].some(li => li.textContent.includes('needs-login → connected'))",
    )
    .await;
}

async fn back_up_now_adds_a_backup_to_the_list(page: &Page, host: &TestHost) {
    // The backups a login gets at once may still be coming: count once
    // the list holds still.
    let before = settled_count(page, "#backups tbody tr").await;
    click(
        page,
        "#sessions tr[data-session=\"main\"] button[data-action=\"backup\"]",
    )
    .await;
    confirm(page).await;
    let rows = wait_js(
        page,
        "a new backup in the list",
        &format!(
            "document.querySelectorAll('#backups tbody tr').length > {before} ? [...document.querySelectorAll('#backups tbody tr')].map(r => r.dataset.backup) : null"
        ),
    )
    .await;
    let listed = common::api::call(
        &host.base,
        "GET",
        "/v1/sessions/main/backups",
        Some(TOKEN),
        None,
    )
    .await
    .json();
    let newest = listed["backups"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        rows.as_array().unwrap().iter().any(|r| r == &newest),
        "the console lists {rows}, the store's newest is {newest}"
    );
}

/// Restore the older of two backups, chosen in the list.
async fn a_chosen_backup_is_restored_and_the_session_connects_again(page: &Page, host: &TestHost) {
    let older = wait_js(
        page,
        "two verified backups",
        "(() => { const rows = document.querySelectorAll('#backups tbody tr'); return rows.length >= 2 && rows[1].cells[3].textContent === 'yes' ? rows[1].dataset.backup : null; })()",
    )
    .await;
    let older = older.as_str().unwrap().to_owned();
    click(
        page,
        &format!("#backups tr[data-backup=\"{older}\"] button[data-action=\"restore\"]"),
    )
    .await;
    let question = wait_js(
        page,
        "the confirmation",
        "document.getElementById('confirm').open ? document.getElementById('confirm-text').textContent : null",
    )
    .await;
    assert!(question.as_str().unwrap().contains(&older), "{question}");
    click(page, "#confirm-yes").await;
    wait_js(
        page,
        "the restore's outcome",
        &format!("document.getElementById('notice').textContent.includes('restored from {older}')"),
    )
    .await;
    wait_row_state(page, "main", "connected").await;
    let detail = common::api::call(&host.base, "GET", "/v1/sessions/main", Some(TOKEN), None)
        .await
        .json();
    assert_eq!(detail["last_restore"]["backup"], older.as_str(), "{detail}");
}

async fn the_add_form_creates_a_working_session_and_remove_takes_it_away(
    page: &Page,
    host: &TestHost,
) {
    click(page, "#add-session").await;
    type_into(page, "#add-id", "added").await;
    type_into(page, "#add-url", &host.fixture.url()).await;
    type_into(page, "#add-probe", "document.body.dataset.state").await;
    click(page, "#add-submit").await;
    // Working: its browser opened the app and its probe reads the login
    // screen of a new profile.
    wait_row_state(page, "added", "needs-login").await;
    let added = common::api::call(&host.base, "GET", "/v1/sessions/added", Some(TOKEN), None)
        .await
        .json();
    assert_eq!(added["state"], "needs-login", "{added}");
    // Leaving the live view stops the screencast; the picture shows the
    // table, the policies and the feed.
    click(page, "#close-detail").await;
    wait_js(
        page,
        "the detail closed",
        "document.getElementById('detail').hidden",
    )
    .await;
    save_picture(page, "docs/console.png").await;

    click(
        page,
        "#sessions tr[data-session=\"added\"] button[data-action=\"remove\"]",
    )
    .await;
    confirm(page).await;
    wait_js(
        page,
        "the removed session to leave the table",
        "document.querySelector('#sessions tr[data-session=\"added\"]') === null",
    )
    .await;
    let gone = common::api::call(&host.base, "GET", "/v1/sessions/added", Some(TOKEN), None).await;
    assert_eq!(gone.status, 404);
}

/// A watchdog whose reason is markup: the console shows the markup as
/// text. No element is made from it, and its handler never runs.
async fn a_hostile_policy_reason_shows_as_text_and_runs_nothing(
    page: &Page,
    host: &TestHost,
    plugin: &Path,
) {
    const MARKUP: &str = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
    // And a right-to-left override, which would show what follows reversed.
    let hostile = format!("{MARKUP} \u{202e}txt.exe");
    std::fs::write(
        host.root.path().join("policies/hostile.toml"),
        format!(
            "role = \"watchdog\"\nplugin = {:?}\ninterval = \"1s\"\nsessions = [\"main\"]\n[config]\nreason = {}\n",
            plugin.display().to_string(),
            toml::Value::String(hostile.clone())
        ),
    )
    .expect("write the policy");
    // The policy panel shows the new file and its reload.
    wait_js(
        page,
        "the hostile policy in the policy panel",
        "[...document.querySelectorAll('#policies td')].some(td => td.textContent.endsWith('hostile.toml')) && [...document.querySelectorAll('#reloads li')].some(li => li.textContent.includes('hostile.toml'))",
    )
    .await;
    let shown = wait_js(
        page,
        "the hostile reason in the session table",
        "(() => { const td = document.querySelector('#sessions tr[data-session=\"main\"] td.decision'); return td && td.textContent.includes('onerror') ? td.textContent : null; })()",
    )
    .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.contains(MARKUP), "{shown}");
    assert!(
        !shown.contains('\u{202e}'),
        "the override is shown as an escape: {shown}"
    );
    assert!(shown.contains("202e}txt.exe"), "{shown}");
    // Give an image's error handler time to fire, had one been made.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        js(
            page,
            "document.querySelectorAll('img[src=\"x\"], #sessions script, #events script').length"
        )
        .await,
        0
    );
    assert_eq!(js(page, "typeof window.pwned").await, "undefined");
}

// ------------------------------------------------------------ the person

/// The operator's own Chromium (not the host's).
struct Operator {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Operator {
    async fn launch() -> Self {
        let profile = tempfile::Builder::new()
            .prefix("vigil-console-operator-")
            .tempdir()
            .expect("temp dir");
        let mut config = BrowserConfig::builder()
            .chrome_executable(on_path(&common::chromium::settings().executable))
            .user_data_dir(profile.path())
            .window_size(1280, 1000)
            .viewport(Viewport {
                width: 1280,
                height: 1000,
                ..Viewport::default()
            });
        // SAFETY: geteuid(2) has no side effects.
        if unsafe { libc::geteuid() } == 0 {
            config = config.no_sandbox();
        }
        let (browser, mut events) = Browser::launch(config.build().expect("a browser config"))
            .await
            .expect("the operator's Chromium starts");
        let handler = tokio::spawn(async move { while events.next().await.is_some() {} });
        Self {
            browser,
            handler,
            _profile: profile,
        }
    }

    async fn open(&self, url: &str) -> Page {
        let page = self.browser.new_page(url).await.expect("open the console");
        page.wait_for_navigation().await.expect("the console loads");
        page
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// `name` as a path: itself when it has a slash, else found on `PATH`.
fn on_path(name: &Path) -> std::path::PathBuf {
    if name.components().count() > 1 {
        return name.to_owned();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} is not on PATH", name.display()))
}

async fn js(page: &Page, expression: &str) -> Value {
    page.evaluate(expression)
        .await
        .unwrap_or_else(|e| panic!("evaluate {expression}: {e}"))
        .into_value::<Value>()
        .unwrap_or(Value::Null)
}

/// Polls `expression` until it is neither null nor false; returns it.
async fn wait_js(page: &Page, what: &str, expression: &str) -> Value {
    let deadline = Instant::now() + SHOWN;
    loop {
        let value = js(page, expression).await;
        if !matches!(value, Value::Null | Value::Bool(false)) {
            return value;
        }
        if Instant::now() > deadline {
            let body = js(page, "document.body.innerText").await;
            panic!("the console did not show {what} within {SHOWN:?}; it shows:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(page: &Page, selector: &str) {
    wait_js(
        page,
        selector,
        &format!("document.querySelector({selector:?}) !== null"),
    )
    .await;
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

async fn type_into(page: &Page, selector: &str, text: &str) {
    click(page, selector).await;
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .type_str(text)
        .await
        .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
}

async fn choose(page: &Page, selector: &str, value: &str) {
    js(
        page,
        &format!(
            "(() => {{ const s = document.querySelector({selector:?}); s.focus(); s.value = {value:?}; s.dispatchEvent(new Event('change')); }})()"
        ),
    )
    .await;
}

/// Answers yes in the confirmation dialog.
async fn confirm(page: &Page) {
    wait_js(
        page,
        "the confirmation",
        "document.getElementById('confirm').open",
    )
    .await;
    click(page, "#confirm-yes").await;
}

async fn wait_row_state(page: &Page, session: &str, state: &str) {
    wait_js(
        page,
        &format!("session {session} {state}"),
        &format!(
            "(() => {{ const r = document.querySelector('#sessions tr[data-session=\"{session}\"]'); return r !== null && r.querySelector('.state').textContent === '{state}'; }})()"
        ),
    )
    .await;
}

/// How many elements match once the count has held for 3 s.
async fn settled_count(page: &Page, selector: &str) -> u64 {
    let count = format!("document.querySelectorAll({selector:?}).length");
    let mut last = js(page, &count).await.as_u64().unwrap();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = js(page, &count).await.as_u64().unwrap();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// A picture of the console for the README.
async fn save_picture(page: &Page, path: &str) {
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .build(),
        )
        .await
        .expect("a screenshot of the console");
    let root = repo_root();
    let file = if std::env::var_os("VIGIL_UPDATE_PICTURES").is_some_and(|v| v == "1") {
        root.join(path)
    } else {
        let dir = root.join("target/console");
        std::fs::create_dir_all(&dir).expect("target/console");
        dir.join(Path::new(path).file_name().expect("a file name"))
    };
    std::fs::write(&file, png).unwrap_or_else(|e| panic!("{}: {e}", Path::new(path).display()));
}
