//! Several hosts on one real store (moto S3, and a local folder for what a
//! single host does): conditional writes that let exactly one racer win,
//! hosts that notice a silent one and take its sessions, a host that
//! fences itself, backups of a host that lost its session, and the
//! catalog of sessions.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::profile;
use common::storage::{Setup, StoreKind};
use vigil::archive::Progress;
use vigil::backup::{BackupError, Backups, Fence, HookFuture, NoQuiesce};
use vigil::config::SessionConfig;
use vigil::fleet::{
    BootClock, Clock, FleetConfig, FleetError, FleetEvent, FleetStore, Health, HostId, ManualClock,
    OwnerState, Standing, catalog,
};
use vigil::id::SessionId;

fn host_config(name: &str) -> FleetConfig {
    // Short leases so the stories take seconds: fenced after 4.5 s without
    // a renewal, declared dead after 6 s of silence.
    FleetConfig {
        lease: Duration::from_secs(6),
        renew: Duration::from_secs(2),
        ..FleetConfig::new(HostId::new(name).unwrap())
    }
}

async fn start(s: &Setup, name: &str) -> vigil::fleet::Fleet {
    start_with(s, name, Arc::new(BootClock)).await
}

async fn start_with(s: &Setup, name: &str, clock: Arc<dyn Clock>) -> vigil::fleet::Fleet {
    vigil::fleet::Fleet::start(host_config(name), FleetStore::of(&s.backups()), clock)
        .await
        .unwrap()
}

/// Waits up to `limit` for `done`, polling every 100 ms.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main_session() -> SessionId {
    SessionId::new("main").unwrap()
}

on_both_stores!(
    conditional_writes_let_exactly_one_racer_win,
    sessions_added_at_runtime_survive_and_duplicates_are_refused,
    a_host_that_lost_its_session_never_publishes_its_newest_backup,
    a_late_backup_never_wins_even_before_the_new_owner_backs_up,
);

async fn conditional_writes_let_exactly_one_racer_win(kind: StoreKind) {
    let s = Setup::new(kind, "");
    let store = FleetStore::of(&s.backups());
    let key = store.key("race.json");
    // Racers on their own tasks, released together, so that on the
    // runtime's threads they really overlap.
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let creates = futures::future::join_all((0..16).map(|i| {
        let (store, key, start) = (store.clone(), key.clone(), Arc::clone(&start));
        tokio::spawn(async move {
            start.wait().await;
            store.create(&key, &format!("racer {i}")).await
        })
    }))
    .await
    .into_iter()
    .map(|joined| joined.expect("a racer task"))
    .collect::<Vec<_>>();
    let won: Vec<_> = creates.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{creates:?}");
    assert!(
        creates
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(FleetError::Conflict { .. }))),
        "{creates:?}"
    );

    let read = store.read::<String>(&key).await.unwrap().unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let updates = futures::future::join_all((0..16).map(|i| {
        let (store, key, version) = (store.clone(), key.clone(), read.version.clone());
        let start = Arc::clone(&start);
        tokio::spawn(async move {
            start.wait().await;
            store.update(&key, &format!("updater {i}"), &version).await
        })
    }))
    .await
    .into_iter()
    .map(|joined| joined.expect("an updater task"))
    .collect::<Vec<_>>();
    assert_eq!(
        updates.iter().filter(|r| r.is_ok()).count(),
        1,
        "{updates:?}"
    );
    // The version every racer named is gone: a late writer with it loses.
    let late = store.update(&key, &"late", &read.version).await;
    assert!(matches!(late, Err(FleetError::Conflict { .. })), "{late:?}");
}

/// A session as the API adds one: an id and a URL.
fn api_session(id: &str) -> SessionConfig {
    serde_json::from_value(serde_json::json!({ "id": id, "url": "http://127.0.0.1:9/" })).unwrap()
}

async fn sessions_added_at_runtime_survive_and_duplicates_are_refused(kind: StoreKind) {
    let s = Setup::new(kind, "");
    let store = FleetStore::of(&s.backups());
    let me = HostId::new("a").unwrap();
    let (seeded, report) = catalog::seed(&store, &s.config.sessions, &me)
        .await
        .unwrap();
    assert_eq!(report.added, vec![main_session()]);
    assert_eq!(seeded.sessions.len(), 1);

    // Eight operators add eight sessions at once: none is lost.
    let added = futures::future::join_all((0..8).map(|i| {
        let (store, me) = (store.clone(), me.clone());
        async move { catalog::add(&store, api_session(&format!("s{i}")), &me).await }
    }))
    .await;
    assert!(added.iter().all(Result::is_ok), "{added:?}");
    let dup = catalog::add(&store, api_session("s3"), &me).await;
    assert!(
        matches!(&dup, Err(FleetError::DuplicateSession { session }) if session.as_str() == "s3"),
        "{dup:?}"
    );
    let dup_of_file = catalog::add(&store, api_session("main"), &me).await;
    assert!(matches!(
        dup_of_file,
        Err(FleetError::DuplicateSession { .. })
    ));

    // Read back by a fresh reader, as another host or a restart would.
    let fresh = FleetStore::of(&s.backups());
    let listed = catalog::load(&fresh).await.unwrap().value;
    assert_eq!(listed.sessions.len(), 9);

    catalog::remove(&store, &SessionId::new("s0").unwrap())
        .await
        .unwrap();
    let gone = catalog::remove(&store, &SessionId::new("s0").unwrap()).await;
    assert!(
        matches!(gone, Err(FleetError::NoSuchSession { .. })),
        "{gone:?}"
    );
    let from_file = catalog::remove(&store, &main_session()).await;
    let Err(e @ FleetError::DefinedInConfig { .. }) = from_file else {
        panic!("{from_file:?}");
    };
    assert!(e.to_string().contains("vigil.toml of a"), "{e}");

    // The host restarts with main taken out of its vigil.toml: it goes.
    let (after, report) = catalog::seed(&store, &[], &me).await.unwrap();
    assert_eq!(report.dropped, vec![main_session()]);
    assert_eq!(after.sessions.len(), 7);
    assert_eq!(catalog::load(&fresh).await.unwrap().value, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_hosts_claim_one_session_and_exactly_one_owns_it() {
    let s = Setup::new(StoreKind::S3, "");
    let backups = s.backups();
    let mut fleets = Vec::new();
    for i in 0..16 {
        fleets.push(start(&s, &format!("h{i}")).await);
    }
    let session = main_session();
    let claims =
        futures::future::join_all(fleets.iter().map(|f| f.claim(&session, &backups))).await;
    let winners: Vec<usize> = (0..16).filter(|i| claims[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    for (i, c) in claims.iter().enumerate() {
        if let Err(e) = c {
            assert!(
                matches!(e, FleetError::Conflict { .. } | FleetError::Held { .. }),
                "host {i}: {e}"
            );
        }
    }
    let owner = &fleets[winners[0]];
    assert_eq!(claims[winners[0]].as_ref().unwrap().epoch, 1);
    assert!(owner.may_run(&session));
    assert_eq!(
        fleets.iter().filter(|f| f.may_run(&session)).count(),
        1,
        "only the winner may run it"
    );

    // The winner's record names it; a second claim by a loser is refused
    // while the winner lives.
    let loser = &fleets[(winners[0] + 1) % 16];
    let again = loser.claim(&session, &backups).await;
    assert!(matches!(again, Err(FleetError::Held { .. })), "{again:?}");
    for f in fleets {
        f.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_is_declared_dead_once_and_its_session_moves_with_a_new_epoch() {
    let s = Setup::new(StoreKind::S3, "");
    let backups = s.backups();
    let a = start(&s, "a").await;
    let b = start(&s, "b").await;
    let mut events = b.subscribe();
    let session = main_session();
    let owned = a.claim(&session, &backups).await.unwrap();
    assert_eq!(owned.epoch, 1);

    let mut view = b.view();
    eventually(Duration::from_secs(10), "b sees a alive", || {
        view.borrow_and_update()
            .hosts
            .iter()
            .any(|h| h.member == a.member() && h.health == Health::Alive)
    })
    .await;
    assert!(matches!(
        b.claim(&session, &backups).await,
        Err(FleetError::Held { .. })
    ));

    // a dies without a word: its tasks stop, its record stays as it was.
    let a_member = a.member();
    drop(a);
    let silent_at = Instant::now();
    eventually(Duration::from_secs(20), "b declares a dead", || {
        b.view()
            .borrow()
            .hosts
            .iter()
            .any(|h| h.member == a_member && h.health == Health::Dead)
    })
    .await;
    // a's last renewal went out at most one period (2 s) before it was
    // dropped, and b counts a lease (6 s) from when it first saw that one.
    let took = silent_at.elapsed();
    assert!(
        took >= Duration::from_secs(6 - 2),
        "declared dead after {took:?}, before a lease of silence"
    );
    let lost = loop {
        match events.recv().await.unwrap() {
            FleetEvent::HostLost { member, by } => break (member, by),
            _ => continue,
        }
    };
    assert_eq!(lost, (a_member.clone(), HostId::new("b").unwrap()));

    let taken = b.claim(&session, &backups).await.unwrap();
    assert_eq!(taken.epoch, 2);
    assert_eq!(taken.previous.as_ref(), Some(&a_member));
    let record = vigil::fleet::store::FleetStore::of(&backups)
        .read::<vigil::fleet::OwnerRecord>(&FleetStore::of(&backups).key("owners/main.json"))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(record.owner, b.member());
    assert_eq!(record.state, OwnerState::Owned);
    assert_eq!(b.stats().takeovers, 1);
    assert_eq!(b.stats().hosts_declared_dead, 1);
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_renew_fences_itself_before_anyone_takes_over_and_rejoins() {
    let s = Setup::new(StoreKind::S3, "");
    let backups = s.backups();
    // a's clock is ours to move: jumping it forward is a pause (SIGSTOP, a
    // suspend) as a's own clock counts it.
    let clock = Arc::new(ManualClock::default());
    let a = start_with(&s, "a", clock.clone()).await;
    let b = start(&s, "b").await;
    let session = main_session();
    a.claim(&session, &backups).await.unwrap();
    let a_first = a.member();

    clock.advance(Duration::from_millis(4_400));
    assert!(
        !a.is_fenced(),
        "not yet: 4.4 s is short of three quarters of the lease"
    );
    clock.advance(Duration::from_millis(100));
    assert!(a.is_fenced(), "past its fence time, a knows at once");
    assert!(!a.may_run(&session));
    let mut standing = a.standing();
    eventually(
        Duration::from_secs(3),
        "a's watch reports the fence",
        || matches!(*standing.borrow_and_update(), Standing::Fenced { .. }),
    )
    .await;
    // Nobody has taken the session: a has stopped renewing, but b needs a
    // lease of silence first.
    assert!(matches!(
        b.claim(&session, &backups).await,
        Err(FleetError::Held { .. })
    ));
    assert!(matches!(
        a.claim(&SessionId::new("other").unwrap(), &backups).await,
        Err(FleetError::Fenced)
    ));

    // The supervisor stopped a's browsers: a retires its fenced run (so
    // the session may move now) and joins again as a new run.
    a.acknowledge_fence();
    eventually(
        Duration::from_secs(10),
        "a joins again",
        || matches!(&*a.standing().borrow(), Standing::Active { member } if *member != a_first),
    )
    .await;
    assert_ne!(a.member().incarnation, a_first.incarnation);
    assert_eq!(a.member().host, a_first.host);
    // Its retired run is dead at once: no lease to wait.
    let taken = b.claim(&session, &backups).await.unwrap();
    assert_eq!(taken.epoch, 2);
    assert_eq!(a.stats().fenced, 1);
    a.leave().await;
    b.leave().await;
}

/// A fence that confirmed ownership before the takeover and publishes
/// afterwards: a host paused between its check and its write.
struct StaleFence(u64);

impl Fence for StaleFence {
    fn epoch(&self) -> u64 {
        self.0
    }
    fn confirm<'a>(&'a self, _: &'a SessionId) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

async fn back_up_fenced(
    s: &Setup,
    backups: &Backups,
    fence: &dyn Fence,
) -> Result<vigil::backup::Manifest, BackupError> {
    backups
        .backup_fenced(
            &s.session,
            &s.claim(),
            Arc::new(NoQuiesce),
            &Progress::default(),
            Some(fence),
        )
        .await
}

/// On S3, and on a local folder (hosts in one process share its lock).
async fn a_host_that_lost_its_session_never_publishes_its_newest_backup(kind: StoreKind) {
    let s = Setup::new(kind, "keep_last = 10");
    profile::generate(&s.profile_dir(), 256 << 10, 1);
    let backups = s.backups();
    let session = main_session();
    let a = start(&s, "a").await;
    a.claim(&session, &backups).await.unwrap();
    let fence = a.fence_for(&session).unwrap();
    let before = back_up_fenced(&s, &backups, &fence).await.unwrap();
    assert_eq!(before.epoch, Some(1));

    // b takes the session over (a released it, as a rebalance would, but
    // a's backup code still holds its old fence).
    a.release(&session, Some(before.id.clone())).await.unwrap();
    let b = start(&s, "b").await;
    let taken = b.claim(&session, &backups).await.unwrap();
    assert_eq!(taken.epoch, 2);
    assert_eq!(taken.handover.as_ref(), Some(&before.id));

    // a backs up with the fence it held: the owner record says otherwise,
    // nothing is published, and no archive is left behind.
    let objects_before = s.raw().names().await;
    let refused = back_up_fenced(&s, &backups, &fence).await;
    assert!(
        matches!(&refused, Err(BackupError::Fenced { epoch: 1, .. })),
        "{refused:?}"
    );
    assert_eq!(s.raw().names().await, objects_before);

    // A host paused after its check publishes late, with its old epoch and
    // a newer clock: it ranks below the new owner's backups, and the new
    // owner's lineage refuses it outright.
    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    profile::generate(&s.profile_dir(), 256 << 10, 2);
    let late = back_up_fenced(&s, &backups, &StaleFence(1)).await.unwrap();
    let admitted = backups
        .list_admitted(&session, &taken.lineage)
        .await
        .unwrap();
    let newest_good = admitted.iter().find(|e| e.is_good()).unwrap();
    assert_eq!(
        newest_good.manifest.id, before.id,
        "the late backup is not the newest"
    );
    let late_entry = admitted.iter().find(|e| e.manifest.id == late.id).unwrap();
    assert!(
        late_entry
            .failure
            .as_ref()
            .unwrap()
            .reason
            .contains("epoch 1"),
        "{late_entry:?}"
    );
    // The refusal is written down: plain listings (any tool) skip it too.
    let plain = backups.list(&session).await.unwrap();
    assert!(
        !plain
            .iter()
            .find(|e| e.manifest.id == late.id)
            .unwrap()
            .is_good()
    );

    // b's own backup outranks everything before it.
    let fence_b = b.fence_for(&session).unwrap();
    let mine = back_up_fenced(&s, &backups, &fence_b).await.unwrap();
    assert_eq!(
        backups.list(&session).await.unwrap()[0].manifest.id,
        mine.id
    );

    // A restore by the new owner takes its own newest, never the late one.
    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    let report = backups
        .restore_newest_admitted(
            &session,
            &s.claim(),
            false,
            &Progress::default(),
            &taken.lineage,
        )
        .await
        .unwrap();
    assert_eq!(report.id, mine.id);
    a.leave().await;
    b.leave().await;
}

async fn a_late_backup_never_wins_even_before_the_new_owner_backs_up(kind: StoreKind) {
    let s = Setup::new(kind, "keep_last = 10");
    profile::generate(&s.profile_dir(), 256 << 10, 1);
    let backups = s.backups();
    let session = main_session();
    let a = start(&s, "a").await;
    a.claim(&session, &backups).await.unwrap();
    let fence = a.fence_for(&session).unwrap();
    let seen = back_up_fenced(&s, &backups, &fence).await.unwrap();

    let b = start(&s, "b").await;
    a.release(&session, None).await.unwrap();
    let at2 = b.claim(&session, &backups).await.unwrap();
    // a's late backup lands; b has made none yet; then b is gone too and c
    // takes over from b's lineage.
    let late = back_up_fenced(&s, &backups, &StaleFence(1)).await.unwrap();
    b.release(&session, None).await.unwrap();
    let c = start(&s, "c").await;
    let at3 = c.claim(&session, &backups).await.unwrap();
    assert_eq!(at3.epoch, 3);
    assert!(!at2.lineage.admits(&late));
    assert!(
        !at3.lineage.admits(&late),
        "still refused after another move"
    );
    std::fs::remove_dir_all(s.profile_dir()).unwrap();
    let report = backups
        .restore_newest_admitted(
            &session,
            &s.claim(),
            false,
            &Progress::default(),
            &at3.lineage,
        )
        .await
        .unwrap();
    assert_eq!(report.id, seen.id, "restore never goes back to the fork");
    for f in [a, b, c] {
        f.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_leaves_is_gone_at_once_and_others_see_each_other() {
    let s = Setup::new(StoreKind::S3, "");
    let a = start(&s, "a").await;
    let b = start(&s, "b").await;
    let mut view = a.view();
    eventually(Duration::from_secs(10), "a sees both", || {
        view.borrow_and_update().live().count() == 2
    })
    .await;
    let b_member = b.member();
    b.leave().await;
    eventually(Duration::from_secs(10), "a sees b gone", || {
        !a.view().borrow().hosts.iter().any(|h| h.member == b_member)
    })
    .await;
    assert_eq!(a.stats().hosts_declared_dead, 0, "a leaver is not a death");
    a.leave().await;
}

/// Runs the `vigil` binary; exit code, stdout, stderr.
fn vigil(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = s.vigil().args(args).output().expect("run vigil");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_and_the_hosts_show_from_the_store_without_a_running_host() {
    let s = Setup::new(StoreKind::S3, "");
    let (code, out, err) = vigil(&s, &["session", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["sessions"][0]["id"], "main");
    assert_eq!(
        listed["sessions"][0]["from"],
        "vigil.toml (not in the catalog yet)"
    );

    let store = FleetStore::of(&s.backups());
    let a = start(&s, "a").await;
    catalog::seed(&store, &s.config.sessions, &HostId::new("a").unwrap())
        .await
        .unwrap();
    catalog::add(&store, api_session("support"), &HostId::new("a").unwrap())
        .await
        .unwrap();
    a.claim(&SessionId::new("support").unwrap(), &s.backups())
        .await
        .unwrap();
    let (code, out, err) = vigil(&s, &["session", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("main") && out.contains("vigil.toml (a)"),
        "{out}"
    );
    assert!(out.contains("support") && out.contains("api (a)"), "{out}");

    // a's record names what it owns once it renewed after the claim.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vigil::fleet::membership::snapshot(&store)
        .await
        .unwrap()
        .iter()
        .any(|r| r.owned.contains_key(&SessionId::new("support").unwrap()))
    {
        assert!(Instant::now() < deadline, "a's renewal names support");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = vigil(&s, &["hosts", "--json"]);
    assert_eq!(code, 0, "{err}");
    let hosts: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hosts = hosts["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0]["host"], "a");
    assert_eq!(hosts[0]["incarnation"], a.member().incarnation.as_str());
    assert_eq!(hosts[0]["state"]["state"], "active");
    assert_eq!(hosts[0]["owned"]["support"], 1);
    let (code, table, _) = vigil(&s, &["hosts"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("HOST"), "{table}");
    assert!(table.contains("1 support"), "{table}");
    a.leave().await;
    let (_, out, _) = vigil(&s, &["hosts", "--json"]);
    assert!(out.contains("\"hosts\": []"), "a left: {out}");

    // Adding needs the running host.
    let (code, _, err) = vigil(&s, &["session", "add", "x", "--url", "http://127.0.0.1:9/"]);
    assert_eq!(code, 5, "{err}");
}

#[test]
fn vigil_run_refuses_a_fleet_on_a_local_store_naming_the_config() {
    let s = Setup::new(StoreKind::File, "");
    let mut text = std::fs::read_to_string(&s.config_path).unwrap();
    text.push_str("\n[api]\nlisten = \"127.0.0.1:0\"\n\n[fleet]\nhost_id = \"a\"\n");
    std::fs::write(&s.config_path, text).unwrap();
    let (code, _, err) = vigil(&s, &["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("[fleet] needs a store every host shares"),
        "{err}"
    );
    assert!(err.contains("vigil.toml"), "names the config: {err}");
}

/// A store that counts the requests it forwards, by kind and by folder.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn object_store::ObjectStore>,
    seen: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Counting {
    fn count(&self, op: &str, location: Option<&object_store::path::Path>) {
        let place = match location.map(|l| l.as_ref().to_string()) {
            Some(l) if l.contains("/owners/") => "owners",
            Some(l) if l.contains("/.fleet") || l.ends_with(".fleet") => "fleet",
            Some(_) => "backups",
            None => "root",
        };
        *self
            .seen
            .lock()
            .unwrap()
            .entry(format!("{op} {place}"))
            .or_default() += 1;
    }

    fn take(&self) -> std::collections::BTreeMap<String, u64> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.count("PUT", Some(location));
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.count("MULTIPART", Some(location));
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.count(if options.head { "HEAD" } else { "GET" }, Some(location));
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.count("DELETE", None);
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.count("LIST", prefix);
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.count("LIST", prefix);
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.count("COPY", Some(to));
        self.inner.copy_opts(from, to, options).await
    }
}

/// The cost the README states: per host and renewal period one PUT, one
/// LIST and one GET per other host, whatever the number of sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_traffic_grows_with_hosts_not_sessions() {
    let s = Setup::new(StoreKind::S3, "");
    let backups = s.backups();
    let mut counters = Vec::new();
    let mut fleets = Vec::new();
    for name in ["a", "b", "c"] {
        let counting = Arc::new(Counting {
            inner: Arc::clone(backups.object_store()),
            seen: Default::default(),
        });
        let store = FleetStore::shared(counting.clone(), backups.root(), "counted");
        fleets.push(
            vigil::fleet::Fleet::start(host_config(name), store, Arc::new(BootClock))
                .await
                .unwrap(),
        );
        counters.push(counting);
    }
    // 60 sessions owned, 20 per host.
    for i in 0..60 {
        let id = SessionId::new(format!("s{i:02}")).unwrap();
        fleets[i % 3].claim(&id, &backups).await.unwrap();
    }
    // Let every host renew with its sessions and see the others.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for c in &counters {
        c.take();
    }
    let periods = 5u64;
    tokio::time::sleep(Duration::from_secs(2 * periods)).await;
    for (name, c) in ["a", "b", "c"].iter().zip(&counters) {
        let seen = c.take();
        eprintln!("host {name}, {periods} renewal periods, 20 sessions owned: {seen:?}");
        let n = |k: &str| seen.get(k).copied().unwrap_or(0);
        // A period may fall either side of the window's edges.
        assert!(
            (periods - 1..=periods + 1).contains(&n("PUT fleet")),
            "{seen:?}"
        );
        assert!(
            (periods - 1..=periods + 1).contains(&n("LIST fleet")),
            "{seen:?}"
        );
        assert!(n("GET fleet") <= 2 * (periods + 1), "{seen:?}");
        assert!(
            seen.keys().all(|k| k.ends_with(" fleet")),
            "nothing per session, no backups touched: {seen:?}"
        );
    }
    for f in fleets {
        f.leave().await;
    }
}
