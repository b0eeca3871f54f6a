//! End to end, in a real Chromium: a Vigil host keeps the fixture app's
//! session logged in across host restarts, lost disks, crashes, stale
//! locks, dropped connections, idleness, policy changes and a corrupt
//! backup. Each test tells the story an operator would live through.

mod common;

use std::os::unix::fs::symlink;
use std::time::Duration;

use common::chromium::{self, browser_slot, init_logging};
use common::fixture::wait_until;
use common::host::{Policies, SESSION, TestHost, history};
use vigil::session::{RestoreSource, SessionState};

const START: Duration = Duration::from_secs(90);

/// (a) A paired session survives a host restart with no new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_reconnects_without_a_new_login() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let device = host.pair_and_connect().await;
    host.stop().await;
    assert!(
        !host.web.report().await.device(&device).unwrap().connected,
        "the browser closed with the host"
    );

    host.start().await;
    let status = host.wait_state(SessionState::Connected, START).await;
    assert_eq!(
        status.last_restore.as_ref().map(|r| r.source),
        Some(RestoreSource::Disk),
        "{}",
        history(&status)
    );
    let report = host.web.report().await;
    assert_eq!(report.pairings, 1, "no new login: {report:?}");
    assert!(report.device(&device).unwrap().connected);
    host.stop().await;
}

/// (b) The profile is lost with its disk: the host restores it from the
/// backup taken after the login and connects with no new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_profile_is_restored_from_backup_and_connects() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let device = host.pair_and_connect().await;
    host.stop().await;
    std::fs::remove_dir_all(host.profile_dir()).unwrap();

    host.start().await;
    let status = host.wait_state(SessionState::Connected, START).await;
    let restore = status.last_restore.clone().expect("a restore happened");
    assert_eq!(
        restore.source,
        RestoreSource::Backup,
        "{}",
        history(&status)
    );
    assert!(
        status
            .history
            .iter()
            .any(|t| t.to == SessionState::Restoring),
        "{}",
        history(&status)
    );
    let report = host.web.report().await;
    assert_eq!(report.pairings, 1, "no new login: {report:?}");
    assert!(report.device(&device).unwrap().connected);
    host.stop().await;
}

/// (c) Chromium is killed: the session notices at once, relaunches on a
/// tidied profile (stale locks cleared, exit marked clean so no "restore
/// pages?" bubble), and connects again with the same login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_is_relaunched_and_reconnects() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    host.pair_and_connect().await;
    let pid = host.status().browser_pid.expect("a browser runs");
    // Chromium 156 writes `exit_type: Crashed` into the profile's
    // Preferences about 10 s after it starts (measured here); a kill
    // before that leaves the previous clean exit on disk.
    tokio::time::sleep(Duration::from_secs(13)).await;

    // SAFETY: kill(2) on a process this test's host started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    // Noticed at once (the process is watched), not at the next watchdog
    // tick: the relaunch starts within a couple of seconds.
    let noticed = host
        .wait_status(
            "the relaunch after the crash",
            Duration::from_secs(3),
            |s| {
                s.history
                    .iter()
                    .any(|t| t.reason.starts_with("relaunching after the browser exited"))
            },
        )
        .await;
    assert_eq!(noticed.counters.restarts, 1);

    let status = host
        .wait_status("connected again", Duration::from_secs(60), |s| {
            s.state == SessionState::Connected && s.browser_pid.is_some_and(|p| p != pid)
        })
        .await;
    let relaunch = status
        .history
        .iter()
        .rev()
        .find(|t| t.reason.starts_with("relaunching after the browser exited"))
        .unwrap_or_else(|| panic!("no relaunch:\n{}", history(&status)));
    assert!(
        relaunch.reason.contains("stale browser lock"),
        "{}",
        relaunch.reason
    );
    assert!(
        relaunch.reason.contains("marked the last exit clean"),
        "{}",
        relaunch.reason
    );
    assert_eq!(host.web.report().await.pairings, 1);
    host.stop().await;
}

/// (d) A profile restored from another machine carries that machine's
/// lock: it is stale here, cleared, and the session starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lock_from_another_host_is_cleared() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    host.pair_and_connect().await;
    host.stop().await;
    let lock = host.profile_dir().join("SingletonLock");
    let _ = std::fs::remove_file(&lock);
    symlink("another-machine-4242", &lock).unwrap();

    host.start().await;
    let status = host.wait_state(SessionState::Connected, START).await;
    let launch = status
        .history
        .iter()
        .find(|t| t.to == SessionState::Launching)
        .unwrap();
    assert!(
        launch.reason.contains("cleared 1 stale browser lock"),
        "{}",
        history(&status)
    );
    let owner = std::fs::read_link(&lock).expect("the running browser's lock");
    assert!(
        !owner.to_string_lossy().starts_with("another-machine"),
        "{owner:?}"
    );
    assert_eq!(host.web.report().await.pairings, 1);
    host.stop().await;
}

/// (d) A profile in use by a live browser on this host is refused with a
/// clear error, and that browser is left alone. The session is not given
/// up: once that browser is gone, it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_held_by_a_live_browser_is_refused_until_it_is_gone() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let other = common::chromium::launch("intruder", &host.profile_dir()).await;

    host.start().await;
    let status = host
        .wait_status("refused, with the pid", START, |s| {
            s.reason.contains("held by a running browser")
        })
        .await;
    assert_eq!(status.state, SessionState::Degraded, "{}", history(&status));
    assert!(
        status.reason.contains(&other.pid().to_string()) && status.reason.contains("trying again"),
        "{}",
        status.reason
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        other.exit_signal().gone().is_none(),
        "the other browser runs on"
    );
    assert_ne!(host.status().state, SessionState::Failed);

    other.close().await;
    host.wait_state(SessionState::NeedsLogin, START).await;
    host.stop().await;
}

/// (d) A browser that is not Vigil's (no marker on its command line)
/// holds the profile: the session is refused as before (degraded, naming
/// the pid, trying again later: a runner never gives up), and that browser
/// is left running, also across Vigil's next tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_is_not_vigils_is_refused_and_left_running() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let foreign = chromium::start_detached(&host.profile_dir(), None).await;

    host.start().await;
    let status = host
        .wait_status("the second refusal", START, |s| {
            s.counters.transitions_into(SessionState::Degraded) >= 2
        })
        .await;
    assert_eq!(status.state, SessionState::Degraded);
    assert!(
        status.reason.contains("held by a running browser")
            && status.reason.contains(&foreign.pid.to_string()),
        "{}",
        status.reason
    );
    assert_eq!(status.counters.transitions_into(SessionState::Failed), 0);
    assert!(chromium::alive(foreign.pid), "the foreign browser runs on");
    host.stop().await;
    assert!(chromium::alive(foreign.pid), "and survives the host's stop");
}

/// `vigil run` killed with `kill -9` takes its Chromium with it (a
/// parent-death signal): nothing is left holding the profile, and the app
/// sees the page go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_vigil_takes_its_browser_with_it() {
    init_logging();
    let _slot = browser_slot().await;
    let host = TestHost::new(Policies::default(), None).await;
    // Should the test fail, its browsers still go.
    let _cleanup = chromium::KillOnDrop(host.profile_dir());
    let mut vigil = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(&host.config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start vigil run");
    wait_until(START, "a login code", || async {
        host.web.report().await.pending_codes.last().cloned()
    })
    .await;
    let device = host.web.pair_shown_code().await;
    wait_until(Duration::from_secs(60), "the page connected", || async {
        let report = host.web.report().await;
        report.device(&device)?.connected.then_some(())
    })
    .await;
    let profile = host.profile_dir();
    assert!(
        !chromium::processes_on(&profile).is_empty(),
        "Chromium runs on {}",
        profile.display()
    );

    // SAFETY: kill(2) on the child this test started.
    assert_eq!(
        unsafe { libc::kill(vigil.id().unwrap() as i32, libc::SIGKILL) },
        0
    );
    vigil.wait().await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "no Chromium left on the profile",
        || async { chromium::processes_on(&profile).is_empty().then_some(()) },
    )
    .await;
    wait_until(
        Duration::from_secs(5),
        "the app seeing the page gone",
        || async {
            let report = host.web.report().await;
            (!report.device(&device)?.connected).then_some(())
        },
    )
    .await;
}

/// A Chromium left running by an earlier Vigil (one that had no
/// parent-death signal) still holds the profile: the next start stops it,
/// and the session connects with the login it had, no new pairing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_left_by_an_earlier_vigil_is_stopped_at_the_next_start() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let device = host.pair_and_connect().await;
    host.stop().await;
    let orphan = chromium::start_detached(&host.profile_dir(), Some(SESSION)).await;

    host.start().await;
    let status = host.wait_state(SessionState::Connected, START).await;
    assert!(
        !chromium::alive(orphan.pid),
        "the orphan is stopped:\n{}",
        history(&status)
    );
    assert!(status.browser_pid.is_some_and(|pid| pid != orphan.pid));
    let report = host.web.report().await;
    assert_eq!(report.pairings, 1, "no new login: {report:?}");
    assert!(report.device(&device).unwrap().connected);
    host.stop().await;
}

/// The web app is down when the host starts: the session is degraded, not
/// failed, and the watchdog keeps relaunching until the app answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_down_at_start_is_retried_until_it_answers() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let addr = host.take_app_down().await;

    host.start().await;
    let status = host.wait_state(SessionState::Degraded, START).await;
    assert!(
        status.reason.contains(&addr.to_string()),
        "{}",
        status.reason
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(host.status().state, SessionState::Failed);

    host.bring_app_back(addr).await;
    let status = host.wait_state(SessionState::NeedsLogin, START).await;
    assert!(
        status
            .history
            .iter()
            .any(|t| t.reason.starts_with("watchdog:")),
        "{}",
        history(&status)
    );
    host.stop().await;
}

/// (e) The app drops its connection: the page shows disconnected and does
/// not reconnect by itself. The watchdog, called at once, reloads the
/// page, and the session connects again: no restart, no restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_brings_back_a_dropped_connection() {
    init_logging();
    let _slot = browser_slot().await;
    // A watchdog interval far longer than the test: only the call made at
    // once on the drop can bring the session back in time.
    let mut host = TestHost::new(
        Policies {
            watchdog_interval: "1h",
            ..Policies::default()
        },
        None,
    )
    .await;
    let device = host.pair_and_connect().await;
    let connects = host.web.report().await.device(&device).unwrap().connects;

    assert_eq!(host.web.drop_connections().await, 1);
    host.wait_state(SessionState::Degraded, Duration::from_secs(10))
        .await;
    let status = host
        .wait_state(SessionState::Connected, Duration::from_secs(30))
        .await;
    assert_eq!(status.counters.restarts, 0, "{}", history(&status));
    assert_eq!(status.counters.restores_from_backup, 0);
    let decision = status.last_decision.expect("a policy decided");
    assert!(
        decision.decision.starts_with("reload-page")
            && decision.served_by.contains("watchdog.toml"),
        "the watchdog's reload: {decision:?}",
    );
    let report = host.web.report().await;
    assert!(report.device(&device).unwrap().connects > connects);
    assert_eq!(report.pairings, 1);
    host.stop().await;
}

/// With the shipped policies, a connection dropped at any moment of the
/// watchdog's interval comes back within seconds, by a reload: never a
/// restore, never a new pairing, never `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_at_any_moment_comes_back_with_the_shipped_policies() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    host.use_shipped_policies();
    let device = host.pair_and_connect().await;
    let backups = std::fs::read_dir(host.backup_dir()).map_or(0, |d| d.count());

    // The shipped watchdog runs every 15 s: drop early, mid-way and late in
    // its interval.
    for (round, wait) in [0u64, 6, 13].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        assert_eq!(host.web.drop_connections().await, 1, "round {round}");
        host.wait_status("the drop seen", Duration::from_secs(10), |s| {
            s.state != SessionState::Connected
        })
        .await;
        let status = host
            .wait_state(SessionState::Connected, Duration::from_secs(30))
            .await;
        assert_eq!(
            status.counters.restores_from_backup,
            0,
            "{}",
            history(&status)
        );
        assert_eq!(
            status.counters.transitions_into(SessionState::Failed),
            0,
            "{}",
            history(&status)
        );
    }
    let status = host.status();
    assert_eq!(
        status.counters.restarts,
        0,
        "reloads suffice: {}",
        history(&status)
    );
    let report = host.web.report().await;
    assert_eq!(report.pairings, 1);
    assert!(report.device(&device).is_some());
    // No restore, so no backup taken before one either.
    assert_eq!(
        std::fs::read_dir(host.backup_dir()).map_or(0, |d| d.count()),
        backups
    );
    host.stop().await;
}

/// The app is down for a long while (the shipped escalation, ten times
/// faster: a minute here stands for ten): the watchdog reloads, restarts
/// with a growing back-off and keeps trying. When the app is back, the
/// session connects within seconds, on its own profile: no restore, no
/// new pairing. The real-time ten minutes run in `cargo bench --bench
/// reconnect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_down_for_long_comes_back_without_a_restore_or_a_new_login() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    // The shipped config divided by ten.
    std::fs::write(
        host.policy_dir().join("watchdog.toml"),
        format!(
            "role = \"watchdog\"\nplugin = {:?}\ninterval = \"1500ms\"\n[config]\nrestart_after_ms = 2000\nbackoff_ms = 3000\nbackoff_max_ms = 90000\nreload_every_ms = 6000\nrestore_after_restarts = 5\n",
            common::plugins::plugin("heartbeat").display().to_string()
        ),
    )
    .unwrap();
    let device = host.pair_and_connect().await;
    let addr = host.take_app_down().await;
    host.wait_state(SessionState::Degraded, Duration::from_secs(10))
        .await;

    tokio::time::sleep(Duration::from_secs(60)).await;
    let status = host.status();
    // Between two tries, or in the middle of a restart: never given up.
    assert!(
        matches!(
            status.state,
            SessionState::Degraded | SessionState::Launching
        ),
        "{}",
        history(&status)
    );
    assert!(
        status.counters.restarts >= 3,
        "it kept trying: {}",
        history(&status)
    );

    host.bring_app_back(addr).await;
    let status = host
        .wait_state(SessionState::Connected, Duration::from_secs(20))
        .await;
    assert_eq!(
        status.counters.restores_from_backup,
        0,
        "{}",
        history(&status)
    );
    assert_eq!(status.counters.transitions_into(SessionState::Failed), 0);
    let report = host.web.report().await;
    assert_eq!(report.pairings, 1);
    assert_eq!(report.device(&device).map(|d| d.connections), Some(1));
    host.stop().await;
}

/// (f) With the activity policy the page stays active past the app's idle
/// limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_policy_keeps_the_page_from_going_idle() {
    init_logging();
    let _slot = browser_slot().await;
    let policies = Policies {
        keepalive_interval: Some("1s"),
        watchdog_interval: "1h",
        ..Policies::default()
    };
    let mut host = TestHost::new(policies, None).await;
    let device = host.pair_and_connect().await;
    host.fixture.set_idle_after(Some(Duration::from_secs(3)));

    tokio::time::sleep(Duration::from_secs(8)).await;
    let report = host.web.report().await;
    let seen = report.device(&device).unwrap();
    assert_eq!(seen.idle_count, 0, "{seen:?}");
    assert!(seen.activity_reports > 0, "{seen:?}");
    assert_eq!(host.status().state, SessionState::Connected);
    host.stop().await;
}

/// (f) The activity policy's mouse point is where the page sees the
/// pointer, and every decision the session asked for is in its journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pointer_goes_where_the_policy_said_and_every_decision_is_journaled() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    host.write_keepalive_with("1s", "[config]\nmouse_x = 321\nmouse_y = 123\n");
    let device = host.pair_and_connect().await;

    // The policy jiggles between its point and 7 px further.
    let said = [(321, 123), (328, 130)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let seen = loop {
        let report = host.web.report().await;
        let pointer = report.device(&device).unwrap().last_pointer;
        if pointer.is_some_and(|p| said.contains(&p)) {
            break pointer.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page saw the pointer at {pointer:?}, not at {said:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(said.contains(&seen));
    host.stop().await;

    let journal = host.journal();
    let role = |r: &'static str| journal.iter().filter(move |l| l["role"] == r);
    let first = &journal[0];
    assert_eq!(first["role"], "restore", "the restore decision comes first");
    assert_eq!(first["input"]["inventory"]["exists"], false);
    assert_eq!(first["answer"]["kind"], "start-fresh");
    assert!(role("watchdog").count() >= 1);
    let moves: Vec<(u64, u64)> = role("keepalive")
        .filter_map(|l| {
            let first = &l["answer"][0];
            (first["kind"] == "mouse-move")
                .then(|| (first["x"].as_u64().unwrap(), first["y"].as_u64().unwrap()))
        })
        .collect();
    assert!(!moves.is_empty(), "{journal:?}");
    assert!(
        moves
            .iter()
            .all(|(x, y)| said.contains(&(*x as i64, *y as i64))),
        "{moves:?}"
    );
    let keepalive = role("keepalive").next().unwrap();
    assert!(
        keepalive["served_by"]["file"]
            .as_str()
            .unwrap()
            .ends_with("keepalive.toml"),
        "{keepalive}"
    );
    assert_eq!(keepalive["config"]["mouse_x"], 321);
    // The policy counts its ticks in its memory; the journal shows it.
    assert!(keepalive["memory_after"]["tick"].is_string(), "{keepalive}");
}

/// (f) Without a keepalive call in time, the app marks the page idle and
/// the session shows degraded with the page's word for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_activity_the_app_marks_the_page_idle() {
    init_logging();
    let _slot = browser_slot().await;
    let policies = Policies {
        keepalive_interval: Some("1h"),
        watchdog_interval: "1h",
        ..Policies::default()
    };
    let mut host = TestHost::new(policies, None).await;
    let device = host.pair_and_connect().await;
    host.fixture.set_idle_after(Some(Duration::from_secs(3)));

    let status = host
        .wait_status("the page idle", Duration::from_secs(15), |s| {
            s.state == SessionState::Degraded
        })
        .await;
    assert!(status.reason.contains("idle"), "{}", status.reason);
    let seen = host.web.report().await;
    assert!(seen.device(&device).unwrap().idle_count >= 1, "{seen:?}");
    host.stop().await;
}

/// (g) The operator rewrites the keepalive policy file while the host
/// runs: the new behaviour shows without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_keepalive_policy_applies_without_a_restart() {
    init_logging();
    let _slot = browser_slot().await;
    let policies = Policies {
        keepalive_interval: Some("1h"),
        watchdog_interval: "1h",
        ..Policies::default()
    };
    let mut host = TestHost::new(policies, None).await;
    let device = host.pair_and_connect().await;
    let pid = host.status().browser_pid;
    let before = host
        .web
        .report()
        .await
        .device(&device)
        .unwrap()
        .activity_reports;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        host.web
            .report()
            .await
            .device(&device)
            .unwrap()
            .activity_reports,
        before,
        "no activity while the policy waits an hour"
    );

    host.write_keepalive("1s");
    common::fixture::wait_until(
        Duration::from_secs(10),
        "activity from the new policy",
        || async {
            let now = host
                .web
                .report()
                .await
                .device(&device)
                .unwrap()
                .activity_reports;
            (now > before).then_some(())
        },
    )
    .await;
    let status = host.status();
    assert_eq!(status.browser_pid, pid, "the browser was not restarted");
    assert_eq!(status.state, SessionState::Connected);
    let loaded = host.supervisor().policies().status();
    assert!(
        serde_json::to_string(&loaded)
            .unwrap()
            .contains("keepalive.toml"),
        "{loaded:?}"
    );
    host.stop().await;
}

/// (h) The newest backup is corrupt: the restore finds out before touching
/// the profile, marks it, falls back to the one before, and connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_newest_backup_falls_back_to_the_one_before() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    host.pair_and_connect().await;
    host.session().backup_now().await.expect("a second backup");
    host.stop().await; // and a third, at shutdown

    let mut ids: Vec<String> = std::fs::read_dir(host.backup_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".manifest.json").map(str::to_string)
        })
        .collect();
    ids.sort();
    assert!(ids.len() >= 3, "{ids:?}");
    let newest = ids.pop().unwrap();
    let before = ids.pop().unwrap();
    let archive = host.backup_dir().join(format!("{newest}.tar.gz"));
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();
    std::fs::remove_dir_all(host.profile_dir()).unwrap();

    host.start().await;
    let status = host.wait_state(SessionState::Connected, START).await;
    let restore = status.last_restore.clone().expect("restored");
    assert_eq!(restore.source, RestoreSource::Backup);
    assert_eq!(
        restore.backup.as_deref(),
        Some(before.as_str()),
        "{}",
        history(&status)
    );
    assert!(
        host.backup_dir()
            .join(format!("{newest}.failed.json"))
            .exists(),
        "the corrupt backup is marked"
    );
    assert_eq!(host.web.report().await.pairings, 1);
    host.stop().await;
}

/// `vigil run` as operators run it: a process that logs each transition
/// with the session and its new state, and stops cleanly on SIGTERM with a
/// shutdown backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_run_logs_transitions_and_stops_on_sigterm() {
    init_logging();
    let _slot = browser_slot().await;
    let host = TestHost::new(Policies::default(), None).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(&host.config_path)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start vigil run");
    let stderr = child.stderr.take().unwrap();
    let lines = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    common::fixture::wait_until(START, "a login code", || async {
        host.web.report().await.pending_codes.last().cloned()
    })
    .await;
    host.web.pair_shown_code().await;
    common::fixture::wait_until(
        Duration::from_secs(60),
        "the backup after the login",
        || async {
            std::fs::read_dir(host.backup_dir())
                .ok()?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SAFETY: kill(2) on the child this test started.
    assert_eq!(
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) },
        0
    );
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("vigil stops within its bound")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let log = lines.await.unwrap().join("\n");
    for wanted in [
        format!("session {SESSION} is needs-login"),
        format!("session {SESSION} is connected"),
    ] {
        assert!(log.contains(&wanted), "log lacks {wanted:?}:\n{log}");
    }
    // The reason is a field of the state change, after the message.
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("session {SESSION} is stopped "))
                && l.ends_with("reason=the host is shutting down")),
        "no line says why the session stopped:\n{log}"
    );
    assert!(log.contains("backup saved"), "{log}");
    let profile = host.profile_dir();
    assert!(
        std::fs::symlink_metadata(profile.join("SingletonLock")).is_err(),
        "a graceful close removes Chromium's lock"
    );
}

/// The operator's receiver is told, with signed webhooks, that the session
/// connected and that its new login was backed up; a receiver that fails
/// once gets the same delivery again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_tell_the_operator_about_the_login_and_its_backup() {
    init_logging();
    let _slot = browser_slot().await;
    let secret = "e2e-secret";
    let receiver =
        common::webhook::Receiver::start(secret, common::webhook::Answer::FailFirst(1)).await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let secret_file = host.root.path().join("webhook.secret");
    std::fs::write(&secret_file, secret).unwrap();
    host.append_config(&format!(
        "[[webhook]]\nurl = {:?}\nsecret_file = {:?}\nevents = [\"session.*\", \"backup.*\"]\n[webhooks]\nbackoff_base_secs = 0.2\n",
        receiver.url("/hook"),
        secret_file.display().to_string()
    ));
    host.pair_and_connect().await;

    let wanted = |a: &common::webhook::Attempt, event: &str| a.event == event && a.signature_valid;
    let attempts = common::fixture::wait_until(Duration::from_secs(20), "the webhooks", || async {
        let all = receiver.attempts();
        let connected = all
            .iter()
            .any(|a| wanted(a, "session.state_changed") && a.json()["data"]["to"] == "connected");
        let saved = all.iter().any(|a| wanted(a, "backup.saved"));
        (connected && saved).then_some(all)
    })
    .await;
    assert!(attempts.iter().all(|a| a.signature_valid));
    let first = &attempts[0];
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.delivery == first.delivery)
            .count(),
        2,
        "the first delivery failed once and was sent again"
    );
    assert!(
        !attempts.iter().any(|a| a.event.starts_with("policy.")),
        "filtered out"
    );
    host.stop().await;
}

/// Nothing is lost at shutdown: over ten stops of a host, the receiver
/// gets every stop's shutdown backup and its `stopped` state change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shutdown_delivers_its_last_events() {
    init_logging();
    let _slot = browser_slot().await;
    let secret = "e2e-secret";
    let receiver = common::webhook::Receiver::start(secret, common::webhook::Answer::Accept).await;
    let mut host = TestHost::new(Policies::default(), None).await;
    let secret_file = host.root.path().join("webhook.secret");
    std::fs::write(&secret_file, secret).unwrap();
    host.append_config(&format!(
        "[[webhook]]\nurl = {:?}\nsecret_file = {:?}\nevents = [\"session.*\", \"backup.*\"]\n",
        receiver.url("/hook"),
        secret_file.display().to_string()
    ));
    host.pair_and_connect().await;
    host.stop().await;
    for round in 1..10 {
        host.start().await;
        host.wait_state(SessionState::Connected, START).await;
        host.stop().await;
        // Delivered before `stop` returned: the webhooks flush last.
        let attempts = receiver.attempts();
        let stopped = attempts
            .iter()
            .filter(|a| a.event == "session.state_changed" && a.json()["data"]["to"] == "stopped")
            .count();
        let saved = attempts
            .iter()
            .filter(|a| a.event == "backup.saved")
            .count();
        assert_eq!(stopped, round + 1, "round {round}: one `stopped` per stop");
        // The login's backup, then one per stop.
        assert_eq!(
            saved,
            round + 2,
            "round {round}: one shutdown backup per stop"
        );
    }
}

/// A session added while the host runs starts at once, comes back after a
/// restart (the catalog is in the store), and is gone for good once
/// removed; its backups go with `forget`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_added_at_runtime_survives_a_restart_until_removed() {
    init_logging();
    let _slot = browser_slot().await;
    let mut host = TestHost::new(Policies::default(), None).await;
    host.start().await;
    let config = vigil::config::Config::load(&host.config_path).unwrap();
    let mut extra = config.sessions[0].clone();
    extra.id = vigil::id::SessionId::new("extra").unwrap();
    let set = |host: &TestHost| std::sync::Arc::clone(host.supervisor().session_set());

    let client = set(&host)
        .add(extra.clone())
        .await
        .expect("added")
        .expect("a single host starts it at once");
    let mut watch = client.watch();
    tokio::time::timeout(
        START,
        watch.wait_for(|s| s.state == SessionState::NeedsLogin),
    )
    .await
    .expect("the added session shows the login screen")
    .unwrap();
    let duplicate = set(&host).add(extra.clone()).await;
    assert!(
        matches!(
            duplicate,
            Err(vigil::supervisor::SupervisorError::Catalog(
                vigil::fleet::FleetError::DuplicateSession { .. }
            ))
        ),
        "{:?}",
        duplicate.err()
    );
    assert!(
        host.root
            .path()
            .join("backups/.fleet/catalog.json")
            .exists(),
        "the catalog lives in the store"
    );

    host.stop().await;
    host.start().await;
    let again = host
        .supervisor()
        .session(&extra.id)
        .expect("the added session is back after the restart");
    let mut watch = again.watch();
    tokio::time::timeout(
        START,
        watch.wait_for(|s| s.state == SessionState::NeedsLogin),
    )
    .await
    .expect("it runs again")
    .unwrap();

    let refused = set(&host)
        .remove(&vigil::id::SessionId::new(SESSION).unwrap(), false)
        .await;
    assert!(
        matches!(
            refused,
            Err(vigil::supervisor::SupervisorError::Catalog(
                vigil::fleet::FleetError::DefinedInConfig { .. }
            ))
        ),
        "a vigil.toml session is removed in the file: {refused:?}"
    );
    let removed = set(&host).remove(&extra.id, true).await.expect("removed");
    assert_eq!(removed.session, extra.id);
    assert!(host.supervisor().session(&extra.id).is_none());
    assert!(!host.root.path().join("backups/extra").exists());
    host.stop().await;
    host.start().await;
    assert!(
        host.supervisor().session(&extra.id).is_none(),
        "gone for good"
    );
    assert_eq!(host.supervisor().sessions().len(), 1);
    host.stop().await;
}
