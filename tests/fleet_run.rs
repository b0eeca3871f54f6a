//! A fleet of real `vigil run` processes on this machine, sharing one moto
//! S3 store and one fixture app, with short leases (6 s, renewals every
//! 2 s). An oracle samples the fixture all along: at no moment may a
//! device have two live connections (a session run twice), and pairings
//! must not grow after the first logins (a login lost).
//!
//! Run under `scripts/with-s3.sh`. Each test runs several Chromiums on a
//! 2-core machine, so they take turns (one test at a time in this binary).

mod common;

use std::time::{Duration, Instant};

use common::fleet::*;
use tokio::sync::{Semaphore, SemaphorePermit};

/// One test at a time in this binary: each runs up to six browsers.
static TURN: Semaphore = Semaphore::const_new(1);

async fn turn() -> SemaphorePermit<'static> {
    TURN.acquire().await.expect("never closed")
}

/// Three hosts, six sessions added at runtime through the CLI: they
/// spread 2/2/2 and log in once each. Then one host dies with all its
/// processes (`kill -9` of its process group): its sessions are connected
/// on the others within 60 s, from their backups, with no new pairing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_sessions_spread_over_three_hosts_and_move_when_one_dies() {
    let _turn = turn().await;
    let fleet = Fleet::start(&["h1", "h2", "h3"]).await;
    fleet.add_sessions(6);
    let hosts = fleet.refs();
    let (by, took) = wait_for(
        Duration::from_secs(150),
        "six sessions connected",
        async || all_connected(&hosts, 6).await,
    )
    .await;
    eprintln!("six sessions connected after {took:?}: {by:?}");
    assert_eq!(spread(&by), vec![2, 2, 2], "{by:?}\n{}", dump_logs(&hosts));
    // The first logins are done once every session has connected and
    // taken its after-login backup.
    wait_for_first_backups(&hosts).await;
    let pairings = fleet.app.pairings();
    assert_eq!(pairings, 6, "one login per session");

    // h3 dies with every process it started.
    let victim = fleet.hosts.iter().find(|h| h.name == "h3").unwrap();
    let moved: Vec<String> = by["h3"].clone();
    victim.signal_group(libc::SIGKILL);
    let killed = Instant::now();
    let survivors: Vec<&Host> = fleet.hosts.iter().filter(|h| h.name != "h3").collect();
    let (by, _) = wait_for(
        Duration::from_secs(60),
        "h3's sessions connected elsewhere",
        async || all_connected(&survivors, 6).await,
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover of {moved:?}: {takeover:?}; now {by:?}");
    assert_eq!(spread(&by), vec![3, 3], "{by:?}");
    assert_eq!(
        fleet.app.pairings(),
        pairings,
        "no new login after the move"
    );
    let logs = dump_logs(&survivors);
    assert!(
        logs.contains("taken over from h3"),
        "the log says why: {logs}"
    );
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// A host paused (SIGSTOP) for twice the lease finds itself fenced when it
/// resumes: its sessions run elsewhere meanwhile, it never drives its old
/// browsers again, the oracle never sees two connections for a device,
/// and no login is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_host_fences_itself_and_never_runs_a_session_twice() {
    let _turn = turn().await;
    let fleet = Fleet::start(&["p1", "p2"]).await;
    fleet.add_sessions(2);
    let hosts = fleet.refs();
    let (by, _) = wait_for(
        Duration::from_secs(120),
        "two sessions connected",
        async || all_connected(&hosts, 2).await,
    )
    .await;
    assert_eq!(spread(&by), vec![1, 1], "{by:?}");
    wait_for_first_backups(&hosts).await;
    let pairings = fleet.app.pairings();

    // Pause p2 alone (its Chromium keeps running, as with a VM freeze of
    // Vigil only), for twice the lease.
    let paused = fleet.hosts.iter().find(|h| h.name == "p2").unwrap();
    paused.signal(libc::SIGSTOP);
    let p1 = fleet.hosts.iter().find(|h| h.name == "p1").unwrap();
    wait_for(
        Duration::from_secs(60),
        "p1 runs both sessions",
        async || {
            let s = p1.sessions().await;
            (s.len() == 2 && s.values().all(|v| v == "connected")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    paused.signal(libc::SIGCONT);
    // It fences, kills its old browser at once, rejoins as a new run.
    wait_for(
        Duration::from_secs(30),
        "p2 says it was fenced",
        async || paused.log().contains("fenced").then_some(()),
    )
    .await;
    // Some time for it to (wrongly) drive its browser again, then: still
    // one connection per device, and every session connected.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let both = fleet.refs();
    wait_for(
        Duration::from_secs(60),
        "both sessions connected once",
        async || all_connected(&both, 2).await,
    )
    .await;
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// Rolling restart: each host in turn is stopped with SIGTERM (drained:
/// its sessions backed up and released) and started again; every session
/// is down at most 15 s each time, and no login is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_sessions_by_drain_within_15_s() {
    let _turn = turn().await;
    let mut fleet = Fleet::start(&["r1", "r2"]).await;
    fleet.add_sessions(2);
    {
        let hosts = fleet.refs();
        wait_for(
            Duration::from_secs(120),
            "two sessions connected",
            async || all_connected(&hosts, 2).await,
        )
        .await;
    }
    let pairings = fleet.app.pairings();
    for i in 0..fleet.hosts.len() {
        let name = fleet.hosts[i].name.clone();
        fleet.hosts[i].signal(libc::SIGTERM);
        let stopped = Instant::now();
        let others: Vec<&Host> = fleet.hosts.iter().filter(|h| h.name != name).collect();
        // While it drains, watch how long the fixture has fewer than two
        // devices connected.
        let mut down_since: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        loop {
            let connected = fleet.app.connected_devices();
            match (connected < 2, down_since) {
                (true, None) => down_since = Some(Instant::now()),
                (false, Some(since)) => {
                    longest = longest.max(since.elapsed());
                    down_since = None;
                }
                _ => {}
            }
            if all_connected(&others, 2).await.is_some() && connected == 2 {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(60),
                "{name}'s sessions did not move by drain\n{}",
                dump_logs(&others)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let code = fleet.hosts[i].wait(Duration::from_secs(40));
        assert_eq!(code, Some(0), "{name} stops cleanly");
        assert!(
            longest <= Duration::from_secs(15),
            "a session was down {longest:?} while {name} drained"
        );
        eprintln!("{name} drained; longest outage {longest:?}");
        fleet.hosts[i].start();
        let h = &fleet.hosts[i];
        wait_for(Duration::from_secs(30), "the host is back", async || {
            h.get("/v1/hosts").await
        })
        .await;
    }
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// Two hosts run three sessions (2 and 1); a third joins: the host above
/// its share hands one session over (backup, release, the newcomer
/// restores exactly that backup), 1/1/1, with no login lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_host_takes_its_share_by_handover() {
    let _turn = turn().await;
    let mut fleet = Fleet::start(&["j1", "j2"]).await;
    fleet.add_sessions(3);
    let (by, _) = wait_for(
        Duration::from_secs(120),
        "three sessions connected",
        async || all_connected(&fleet.refs(), 3).await,
    )
    .await;
    assert_eq!(spread(&by), vec![1, 2], "{by:?}");
    wait_for_first_backups(&fleet.refs()).await;
    let pairings = fleet.app.pairings();
    assert_eq!(pairings, 3);

    fleet.join("j3").await;
    let (by, took) = wait_for(
        Duration::from_secs(90),
        "1/1/1 after j3 joined",
        async || {
            let by = all_connected(&fleet.refs(), 3).await?;
            (spread(&by) == vec![1, 1, 1]).then_some(by)
        },
    )
    .await;
    eprintln!("rebalanced in {took:?}: {by:?}");
    let logs = dump_logs(&fleet.refs());
    assert!(logs.contains("handed over by"), "{logs}");
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// The store stops answering (moto paused). For 10 s nothing stops; for
/// longer than the fence time every host fences and kills its browsers
/// (nobody can tell a dead host from a cut-off one); once the store is
/// back, every session is connected again within 60 s, from the disk
/// profiles of the same hosts, with no new login. Leases of 24 s here
/// (renewals every 4 s, fence at 18 s): an outage up to 13 s is absorbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_stops_nothing_when_short_and_fences_everyone_when_long() {
    let _turn = turn().await;
    let moto = OwnMoto::start().await;
    moto.bucket("fleet-outage");
    let store = Store {
        endpoint: moto.endpoint.clone(),
        bucket: "fleet-outage".into(),
        timing: (24, 4),
    };
    let fleet = Fleet::start_on(&["o1", "o2"], store).await;
    fleet.add_sessions(2);
    let hosts = fleet.refs();
    let (before, _) = wait_for(
        Duration::from_secs(120),
        "two sessions connected",
        async || all_connected(&hosts, 2).await,
    )
    .await;
    wait_for_first_backups(&hosts).await;
    let pairings = fleet.app.pairings();

    // 10 s: nothing stops, nothing moves.
    moto.signal(libc::SIGSTOP);
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            fleet.app.connected_devices(),
            2,
            "a short outage stopped a session"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    moto.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(all_connected(&hosts, 2).await, Some(before.clone()));
    for h in &hosts {
        assert!(!h.log().contains("fenced:"), "{}", h.log());
    }

    // 45 s: every host fences and its browsers stop.
    moto.signal(libc::SIGSTOP);
    wait_for(
        Duration::from_secs(40),
        "every browser stopped",
        async || (fleet.app.connected_devices() == 0).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    moto.signal(libc::SIGCONT);
    let back = Instant::now();
    let (after, took) = wait_for(
        Duration::from_secs(60),
        "connected again after the outage",
        async || all_connected(&hosts, 2).await,
    )
    .await;
    eprintln!(
        "connected again {:?} after the store came back: {after:?}",
        back.elapsed().min(took)
    );
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}

/// The chaos bench, short: a seeded schedule of kills, pauses, drains and
/// store outages on two hosts and two sessions; no double run, no lost
/// login, no manifest regression, every step recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_never_runs_a_session_twice_nor_loses_a_login() {
    let _turn = turn().await;
    let report = common::chaos::run(7, 6, 2, 2).await;
    report.print();
    assert_eq!(report.double_runs, 0, "{:?}", report.steps);
    assert_eq!(report.lost_logins, 0, "{:?}", report.steps);
    assert_eq!(report.manifest_regressions, 0, "{:?}", report.steps);
    assert_eq!(report.not_recovered, 0, "{:?}", report.steps);
}

/// Chromium processes whose profile is under `host`'s data folder.
fn browsers_of(host: &Host) -> Vec<u32> {
    let flag = format!(
        "--user-data-dir={}",
        host.root.path().join("data/profiles").display()
    );
    common::chromium::processes_with_arg(|arg| arg.starts_with(flag.as_bytes()))
        .into_iter()
        .filter(|pid| common::chromium::alive(*pid))
        .collect()
}

/// `kill -9` of only the `vigil` process of a host (the OOM killer, a
/// crash): its Chromium dies with it, so no orphan stays connected, and
/// its session comes back on the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vigil_killed_alone_leaves_no_browser_and_its_session_moves() {
    let _turn = turn().await;
    let fleet = Fleet::start(&["k1", "k2"]).await;
    fleet.add_sessions(2);
    let (by, _) = wait_for(
        Duration::from_secs(120),
        "two sessions connected",
        async || all_connected(&fleet.refs(), 2).await,
    )
    .await;
    assert_eq!(spread(&by), vec![1, 1], "{by:?}");
    wait_for_first_backups(&fleet.refs()).await;
    let pairings = fleet.app.pairings();
    let victim = &fleet.hosts[1];
    assert!(!browsers_of(victim).is_empty(), "k2 runs a browser");
    victim.signal(libc::SIGKILL);
    wait_for(Duration::from_secs(5), "k2's browser gone", async || {
        browsers_of(victim).is_empty().then_some(())
    })
    .await;
    let k1 = [&fleet.hosts[0]];
    let (_, took) = wait_for(
        Duration::from_secs(60),
        "both sessions connected on k1",
        async || all_connected(&k1, 2).await,
    )
    .await;
    eprintln!("k2's session connected on k1 {took:?} after the kill");
    assert_eq!(fleet.app.pairings(), pairings, "no new login");
    fleet.app.assert_no_double_run();
    fleet.stop().await;
}
