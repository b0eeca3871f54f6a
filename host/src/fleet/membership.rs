//! This host's membership: join with a new incarnation, renew the record
//! every `renew_secs`, watch the other records, declare the silent ones
//! dead, and fence this host when its own renewals stop being confirmed.
//!
//! Two tasks run per host. The *renewer* writes the record, lists
//! `.fleet/`, reads the records whose version changed, and writes
//! tombstones; every store call is bounded by `renew_secs`. The *fence
//! watch* only reads the clock, every second at most, so a store call that
//! hangs can never delay fencing: once `fence_after` has passed since the
//! last confirmed renewal was *sent*, [`Standing::Fenced`] is published.
//! The owner of the browsers (the supervisor) stops them all and calls
//! [`Fleet::acknowledge_fence`]; only then does the renewer retire the
//! fenced run's record (a tombstone of its own, so its sessions may move
//! at once) and join again with a new incarnation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use super::catalog::{self, Catalog};
use super::clock::Clock;
use super::liveness::Liveness;
use super::ownership::Owned;
use super::placement::{self, HostLoad, Pace, Plan, Wanted};
use super::record::{
    CATALOG_OBJECT, HostRecord, HostState, Incarnation, Member, OwnerRecord, RECORD_FORMAT,
};
use super::settings::FleetConfig;
use super::store::{FleetStore, Version, token};
use super::{FleetError, FleetEvent};
use crate::id::SessionId;

/// Where this host stands in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Writing its first record.
    Joining,
    /// Renewing; may run the sessions it owns.
    Active { member: Member },
    /// Must not drive any browser: stop them all, then
    /// [`Fleet::acknowledge_fence`]. This run's ownerships are void; the
    /// host joins again as a new run.
    Fenced { member: Member, reason: FenceReason },
    /// Left the fleet (shutdown).
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceReason {
    /// No renewal confirmed for this long (store unreachable, or this
    /// host too slow or paused).
    Unrenewed { for_secs: u64 },
    /// Another host found this run's record unchanged for a lease and
    /// declared it dead (this host was paused, or cut off).
    DeclaredDead,
}

impl std::fmt::Display for FenceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unrenewed { for_secs } => write!(f, "no renewal confirmed for {for_secs} s"),
            Self::DeclaredDead => f.write_str("another host declared this run dead"),
        }
    }
}

/// What this host sees of the fleet after its latest listing.
#[derive(Debug, Clone)]
pub struct FleetView {
    pub me: Member,
    /// Successful listings so far (0: nothing seen yet).
    pub listings: u64,
    pub hosts: Vec<HostView>,
    pub catalog: Arc<Catalog>,
}

/// One run's record as seen by this host.
#[derive(Debug, Clone)]
pub struct HostView {
    pub member: Member,
    pub health: Health,
    /// Its content, if it could be read.
    pub record: Option<HostRecord>,
    /// How long its record had stayed unchanged at the latest listing (on
    /// this host's clock).
    pub unchanged_for: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Renewing.
    Alive,
    /// Unchanged for a lease: about to be declared dead.
    Silent,
    /// Declared dead; its sessions may move.
    Dead,
}

impl FleetView {
    /// The runs that renew and may hold sessions.
    pub fn live(&self) -> impl Iterator<Item = &HostView> {
        self.hosts.iter().filter(|h| h.health == Health::Alive)
    }

    /// This host's plan for one round (see [`placement`]).
    pub fn plan(&self, pace: Pace) -> Plan {
        let hosts: Vec<HostLoad> = self
            .live()
            .filter_map(|h| {
                let r = h.record.as_ref()?;
                Some(HostLoad {
                    host: h.member.host.clone(),
                    max_sessions: r.max_sessions,
                    draining: matches!(r.state, HostState::Draining),
                    owned: r.owned.keys().cloned().collect(),
                })
            })
            .collect();
        let sessions: Vec<Wanted> = self
            .catalog
            .sessions
            .values()
            .map(|e| Wanted {
                id: e.spec.id.clone(),
                pins: e.spec.hosts.clone(),
            })
            .collect();
        placement::plan(&self.me.host, &hosts, &sessions, pace)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub renew_failures: AtomicU64,
    pub fenced: AtomicU64,
    pub takeovers: AtomicU64,
    pub hosts_declared_dead: AtomicU64,
    pub claims: AtomicU64,
    pub releases: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetStats {
    pub renew_failures: u64,
    pub fenced: u64,
    pub takeovers: u64,
    pub hosts_declared_dead: u64,
    pub claims: u64,
    pub releases: u64,
}

/// This run's own state.
pub(super) struct Run {
    pub me: Member,
    /// Our record's version as last written.
    pub version: Option<Version>,
    pub seq: u64,
    pub started: DateTime<Utc>,
    /// When (on our clock) the latest confirmed write of our record was
    /// sent.
    pub confirmed: Duration,
    pub owned: BTreeMap<SessionId, Owned>,
    pub draining: bool,
    pub fenced: Option<FenceReason>,
}

/// What the renewer has observed of the others.
pub(super) struct Observed {
    pub liveness: Liveness,
    pub records: BTreeMap<Member, HostRecord>,
    pub catalog_version: Option<Version>,
    pub catalog: Arc<Catalog>,
}

pub(super) struct Inner {
    pub config: FleetConfig,
    pub store: FleetStore,
    pub clock: Arc<dyn Clock>,
    pub run: Mutex<Run>,
    pub observed: Mutex<Observed>,
    pub standing: watch::Sender<Standing>,
    pub view: watch::Sender<Arc<FleetView>>,
    pub events: broadcast::Sender<FleetEvent>,
    pub counters: Counters,
    stop: watch::Sender<bool>,
    fence_ack: Notify,
}

/// This host's membership in the fleet, and its ownerships (see
/// `ownership`). Dropping it stops its tasks without leaving cleanly; call
/// [`Fleet::leave`].
pub struct Fleet {
    pub(super) inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Records unchanged as dead for this many leases are deleted.
const DEAD_RECORD_KEPT_LEASES: u32 = 20;

impl Fleet {
    /// Checks that the store refuses conflicting conditional writes, joins
    /// the fleet with a new incarnation, and starts renewing.
    pub async fn start(
        config: FleetConfig,
        store: FleetStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FleetError> {
        probe_conditional_writes(&store).await?;
        let me = Member {
            host: config.host_id.clone(),
            incarnation: Incarnation::new(),
        };
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            run: Mutex::new(Run {
                me: me.clone(),
                version: None,
                seq: 0,
                started: Utc::now(),
                confirmed: clock.now(),
                owned: BTreeMap::new(),
                draining: false,
                fenced: None,
            }),
            observed: Mutex::new(Observed {
                liveness: Liveness::new(config.lease),
                records: BTreeMap::new(),
                catalog_version: None,
                catalog: Arc::new(Catalog::default()),
            }),
            standing: watch::channel(Standing::Joining).0,
            view: watch::channel(Arc::new(FleetView {
                me: me.clone(),
                listings: 0,
                hosts: Vec::new(),
                catalog: Arc::new(Catalog::default()),
            }))
            .0,
            events: broadcast::channel(256).0,
            counters: Counters::default(),
            config,
            store,
            clock,
            stop,
            fence_ack: Notify::new(),
        });
        inner.join().await?;
        inner.observe().await?;
        let tasks = vec![
            tokio::spawn(Arc::clone(&inner).renewer()),
            tokio::spawn(Arc::clone(&inner).fence_watch()),
        ];
        Ok(Self {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &FleetStore {
        &self.inner.store
    }

    /// This run.
    pub fn member(&self) -> Member {
        self.inner.run.lock().expect("run lock").me.clone()
    }

    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.inner.standing.subscribe()
    }

    pub fn view(&self) -> watch::Receiver<Arc<FleetView>> {
        self.inner.view.subscribe()
    }

    /// Joins, losses, moves and fencings, each raised by exactly one host.
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.inner.events.subscribe()
    }

    pub fn stats(&self) -> FleetStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetStats {
            renew_failures: get(&c.renew_failures),
            fenced: get(&c.fenced),
            takeovers: get(&c.takeovers),
            hosts_declared_dead: get(&c.hosts_declared_dead),
            claims: get(&c.claims),
            releases: get(&c.releases),
        }
    }

    /// Whether this host must not drive browsers now: fenced, or past its
    /// fence time on the clock even if the watch has not noticed yet (just
    /// back from a pause or a suspend). Ask before acting on a session.
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced_now()
    }

    /// How much longer this host's browsers may run if no renewal is
    /// confirmed from now on: none once fenced (or rejoining). A browser
    /// watchdog outside this process kills the browsers when this budget,
    /// counted from when it was told, runs out: even while Vigil itself is
    /// paused, they stop before anyone may take their sessions.
    pub fn run_budget(&self) -> Option<Duration> {
        if self.inner.fenced_now() {
            return None;
        }
        let run = self.inner.run.lock().expect("run lock");
        // Rejoining: nothing may run until the new run has joined.
        run.version.as_ref()?;
        let since = self.inner.clock.now().saturating_sub(run.confirmed);
        self.inner.config.fence_after().checked_sub(since)
    }

    /// Stops taking sessions and tells the others (draining): the caller
    /// then backs up and releases each session it owns.
    pub fn drain(&self) {
        self.inner.run.lock().expect("run lock").draining = true;
    }

    /// The supervisor has stopped every browser after a fence: retire the
    /// fenced run and join again.
    pub fn acknowledge_fence(&self) {
        // Only a fence that happened can be acknowledged: a stray call
        // must not leave a permit that would retire a later fenced run
        // before its browsers were stopped.
        if self.inner.run.lock().expect("run lock").fenced.is_some() {
            self.inner.fence_ack.notify_one();
        }
    }

    /// Leaves the fleet: stops renewing and deletes this run's record, so
    /// that sessions it still names in owner records may be claimed at
    /// once. Call after every session was stopped (and released).
    pub async fn leave(&self) {
        let _ = self.inner.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            let _ = task.await;
        }
        let (me, fenced) = {
            let run = self.inner.run.lock().expect("run lock");
            (run.me.clone(), run.fenced.is_some())
        };
        if !fenced {
            let key = self.inner.store.key(&me.object_name());
            if let Err(e) = self.inner.store.delete(&key).await {
                tracing::warn!(error = %e, "could not delete this host's membership record; others will find it silent after a lease");
            }
        }
        self.inner.standing.send_replace(Standing::Left);
        tracing::info!(member = %me, "left the fleet");
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks lock").iter() {
            task.abort();
        }
    }
}

impl Inner {
    /// The fence reason if this run's last confirmed renewal is too old.
    pub(super) fn fence_due(&self) -> Option<FenceReason> {
        let confirmed = self.run.lock().expect("run lock").confirmed;
        let since = self.clock.now().saturating_sub(confirmed);
        (since >= self.config.fence_after()).then_some(FenceReason::Unrenewed {
            for_secs: since.as_secs(),
        })
    }

    /// Whether this run is fenced, latching the fence the moment its time
    /// has passed: a run past its fence time stays fenced even if a late
    /// renewal then succeeds (its browsers may have been stopped, or should
    /// have been).
    pub(super) fn fenced_now(&self) -> bool {
        if self.run.lock().expect("run lock").fenced.is_some() {
            return true;
        }
        match self.fence_due() {
            Some(reason) => {
                self.fence(reason);
                true
            }
            None => false,
        }
    }

    fn record(&self, run: &Run, state: HostState) -> HostRecord {
        HostRecord {
            format: RECORD_FORMAT,
            host: run.me.host.clone(),
            incarnation: run.me.incarnation.clone(),
            state,
            seq: run.seq,
            started: run.started,
            renewed: Utc::now(),
            max_sessions: self.config.max_sessions,
            owned: run
                .owned
                .iter()
                .map(|(s, o)| (s.clone(), o.epoch))
                .collect(),
            vigil_version: env!("CARGO_PKG_VERSION").to_string(),
            token: token(),
        }
    }

    /// Writes a new run's first record.
    async fn join(&self) -> Result<(), FleetError> {
        let (key, body, member) = {
            let mut run = self.run.lock().expect("run lock");
            run.seq = 0;
            run.started = Utc::now();
            (
                self.store.key(&run.me.object_name()),
                self.record(&run, HostState::Active),
                run.me.clone(),
            )
        };
        let sent = self.clock.now();
        let version = bounded(self.config.renew, self.store.create(&key, &body)).await?;
        {
            let mut run = self.run.lock().expect("run lock");
            run.version = Some(version);
            run.confirmed = sent;
            run.fenced = None;
        }
        self.standing.send_replace(Standing::Active {
            member: member.clone(),
        });
        let _ = self.events.send(FleetEvent::HostJoined {
            member: member.clone(),
        });
        tracing::info!(member = %member, store = self.store.url(), "joined the fleet");
        Ok(())
    }

    /// One renewal. `Err(DeclaredDead)` ends this run.
    async fn renew(&self) -> Result<(), RenewError> {
        let (key, body, expected) = {
            let mut run = self.run.lock().expect("run lock");
            run.seq += 1;
            let state = if run.draining {
                HostState::Draining
            } else {
                HostState::Active
            };
            (
                self.store.key(&run.me.object_name()),
                self.record(&run, state),
                run.version.clone().expect("joined before renewing"),
            )
        };
        let sent = self.clock.now();
        match bounded(self.config.renew, self.store.update(&key, &body, &expected)).await {
            Ok(version) => {
                let mut run = self.run.lock().expect("run lock");
                run.version = Some(version);
                run.confirmed = run.confirmed.max(sent);
                Ok(())
            }
            Err(FleetError::Conflict { .. }) => {
                // Ours may have landed late after a timeout; anything else
                // there is a tombstone, or nothing at all.
                match self.store.read::<HostRecord>(&key).await {
                    Ok(Some(there))
                        if there.value.incarnation == body.incarnation
                            && !matches!(there.value.state, HostState::Dead { .. }) =>
                    {
                        self.run.lock().expect("run lock").version = Some(there.version);
                        Err(RenewError::Retry(FleetError::Conflict {
                            key: key.to_string(),
                        }))
                    }
                    Ok(_) => Err(RenewError::DeclaredDead),
                    Err(e) => Err(RenewError::Retry(e)),
                }
            }
            Err(e) => Err(RenewError::Retry(e)),
        }
    }

    /// Lists `.fleet/`, reads what changed, declares the silent dead.
    pub(super) async fn observe(&self) -> Result<(), FleetError> {
        let started = self.clock.now();
        let listed = bounded(self.config.renew, self.store.list_top()).await?;
        let me = self.run.lock().expect("run lock").me.clone();
        let catalog_version = listed
            .iter()
            .find(|l| l.name == CATALOG_OBJECT)
            .map(|l| l.version.clone());
        let members: Vec<(Member, Version)> = listed
            .iter()
            .filter_map(|l| Some((Member::from_object_name(&l.name)?, l.version.clone())))
            .collect();
        let finished = self.clock.now();
        let changes = self
            .observed
            .lock()
            .expect("observed lock")
            .liveness
            .observe(members, started, finished);

        let to_read: Vec<Member> = changes
            .appeared
            .iter()
            .chain(&changes.changed)
            .filter(|m| **m != me)
            .cloned()
            .collect();
        let store = self.store.clone();
        let fetched: Vec<(Member, HostRecord)> = futures::stream::iter(to_read)
            .map(move |m| {
                let store = store.clone();
                async move {
                    match store.read::<HostRecord>(&store.key(&m.object_name())).await {
                        Ok(r) => r.map(|r| (m, r.value)),
                        Err(e) => {
                            tracing::warn!(member = %m, error = %e, "cannot read a membership record");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(8)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let catalog_changed = {
            let mut o = self.observed.lock().expect("observed lock");
            for m in &changes.vanished {
                o.records.remove(m);
            }
            o.records.extend(fetched);
            o.catalog_version != catalog_version
        };
        if catalog_changed {
            let c = catalog::load(&self.store).await?;
            let mut o = self.observed.lock().expect("observed lock");
            o.catalog = Arc::new(c.value);
            o.catalog_version = catalog_version;
        }
        self.bury(&me).await;
        self.publish_view();
        Ok(())
    }

    /// Tombstones the records unchanged for a lease (if still unchanged),
    /// and deletes long-dead ones.
    async fn bury(&self, me: &Member) {
        let (expired, records) = {
            let o = self.observed.lock().expect("observed lock");
            (o.liveness.expired(), o.records.clone())
        };
        let keep_dead = self.config.lease * DEAD_RECORD_KEPT_LEASES;
        for (member, version) in expired {
            if member == *me {
                continue;
            }
            let key = self.store.key(&member.object_name());
            let unchanged = self
                .observed
                .lock()
                .expect("observed lock")
                .liveness
                .unchanged_for(&member)
                .unwrap_or_default();
            if let Some(HostRecord {
                state: HostState::Dead { .. },
                ..
            }) = records.get(&member)
            {
                if unchanged >= keep_dead
                    && let Err(e) = self.store.delete(&key).await
                {
                    tracing::debug!(member = %member, error = %e, "could not delete a dead record");
                }
                continue;
            }
            let mut tomb = records.get(&member).cloned().unwrap_or_else(|| HostRecord {
                format: RECORD_FORMAT,
                host: member.host.clone(),
                incarnation: member.incarnation.clone(),
                state: HostState::Active,
                seq: 0,
                started: Utc::now(),
                renewed: Utc::now(),
                max_sessions: None,
                owned: BTreeMap::new(),
                vigil_version: String::new(),
                token: String::new(),
            });
            tomb.state = HostState::Dead {
                by: me.host.clone(),
            };
            tomb.token = token();
            match bounded(self.config.renew, self.store.update(&key, &tomb, &version)).await {
                Ok(_) => {
                    self.counters
                        .hosts_declared_dead
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        member = %member, silent_s = unchanged.as_secs(),
                        "declared a host dead: its record did not change for a lease"
                    );
                    self.observed
                        .lock()
                        .expect("observed lock")
                        .records
                        .insert(member.clone(), tomb);
                    let _ = self.events.send(FleetEvent::HostLost {
                        member,
                        by: me.host.clone(),
                    });
                }
                Err(FleetError::Conflict { .. }) => {
                    tracing::debug!(member = %member, "a silent host renewed, or another host declared it dead first");
                }
                Err(e) => {
                    tracing::warn!(member = %member, error = %e, "could not declare a silent host dead")
                }
            }
        }
    }

    pub(super) fn publish_view(&self) {
        let (me, mine) = {
            let run = self.run.lock().expect("run lock");
            let state = if run.draining {
                HostState::Draining
            } else {
                HostState::Active
            };
            (run.me.clone(), self.record(&run, state))
        };
        let o = self.observed.lock().expect("observed lock");
        let expired: Vec<Member> = o.liveness.expired().into_iter().map(|(m, _)| m).collect();
        let mut hosts: Vec<HostView> = o
            .liveness
            .members()
            .map(|m| {
                let record = if *m == me {
                    Some(mine.clone())
                } else {
                    o.records.get(m).cloned()
                };
                let health = match &record {
                    Some(HostRecord {
                        state: HostState::Dead { .. },
                        ..
                    }) => Health::Dead,
                    _ if *m != me && expired.contains(m) => Health::Silent,
                    _ => Health::Alive,
                };
                HostView {
                    member: m.clone(),
                    health,
                    record,
                    unchanged_for: o.liveness.unchanged_for(m),
                }
            })
            .collect();
        if !hosts.iter().any(|h| h.member == me) {
            hosts.push(HostView {
                member: me.clone(),
                health: Health::Alive,
                record: Some(mine),
                unchanged_for: None,
            });
        }
        self.view.send_replace(Arc::new(FleetView {
            me,
            listings: o.liveness.listings(),
            hosts,
            catalog: Arc::clone(&o.catalog),
        }));
    }

    /// Marks this run fenced (once) and voids its ownerships.
    fn fence(&self, reason: FenceReason) {
        let member = {
            let mut run = self.run.lock().expect("run lock");
            if run.fenced.is_some() {
                return;
            }
            run.fenced = Some(reason.clone());
            run.owned.clear();
            run.me.clone()
        };
        self.counters.fenced.fetch_add(1, Ordering::Relaxed);
        tracing::error!(member = %member, reason = %reason, "fenced: this host must stop every browser now");
        self.standing.send_replace(Standing::Fenced {
            member: member.clone(),
            reason: reason.clone(),
        });
        let _ = self.events.send(FleetEvent::Fenced { member, reason });
    }

    /// Reads the clock often, and nothing else, so that no slow store call
    /// delays a fence.
    async fn fence_watch(self: Arc<Self>) {
        let period = (self.config.renew / 4).min(Duration::from_secs(1));
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.fenced_now();
        }
    }

    /// Renews, observes; after a fence, retires the run and joins again.
    async fn renewer(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let retry =
            (self.config.renew / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut next = tokio::time::Instant::now() + self.config.renew;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.fenced_now() {
                tokio::select! {
                    _ = self.fence_ack.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                self.rejoin(&mut stop).await;
                next = tokio::time::Instant::now() + self.config.renew;
                continue;
            }
            match self.renew().await {
                Ok(()) => next += self.config.renew,
                Err(RenewError::DeclaredDead) => {
                    self.fence(FenceReason::DeclaredDead);
                    next = tokio::time::Instant::now();
                    continue;
                }
                Err(RenewError::Retry(e)) => {
                    self.counters.renew_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "membership renewal failed; retrying");
                    next = tokio::time::Instant::now() + retry;
                }
            }
            if next < tokio::time::Instant::now() {
                next = tokio::time::Instant::now();
            }
            if let Err(e) = self.observe().await {
                tracing::warn!(error = %e, "cannot list the fleet; no host is judged until it can");
            }
        }
    }

    /// After a fence was acknowledged: tombstone the fenced run's own
    /// record (its sessions may move now rather than after a lease), then
    /// join as a new run. Retries until the store answers.
    async fn rejoin(&self, stop: &mut watch::Receiver<bool>) {
        let (old, version, mut tomb) = {
            let run = self.run.lock().expect("run lock");
            (
                run.me.clone(),
                run.version.clone(),
                self.record(
                    &run,
                    HostState::Dead {
                        by: run.me.host.clone(),
                    },
                ),
            )
        };
        let key = self.store.key(&old.object_name());
        if let Some(version) = version {
            loop {
                tomb.token = token();
                match bounded(self.config.renew, self.store.update(&key, &tomb, &version)).await {
                    Ok(_) | Err(FleetError::Conflict { .. }) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot retire the fenced run's record yet");
                        tokio::select! {
                            _ = tokio::time::sleep(self.config.renew) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
            }
        }
        {
            let mut run = self.run.lock().expect("run lock");
            run.me = Member {
                host: self.config.host_id.clone(),
                incarnation: Incarnation::new(),
            };
            // Still fenced (nothing may run) until the new run has joined.
            run.version = None;
        }
        self.standing.send_replace(Standing::Joining);
        loop {
            match self.join().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot join the fleet yet");
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.renew) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }
}

enum RenewError {
    DeclaredDead,
    Retry(FleetError),
}

/// A store call bounded by `limit`: a renewal that cannot finish within a
/// period is retried rather than waited for.
pub(super) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, FleetError>>,
) -> Result<T, FleetError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(FleetError::Timeout {
            after_ms: limit.as_millis().try_into().unwrap_or(u64::MAX),
        }))
}

/// A store that ignores conditional headers would let two hosts run one
/// session: refuse it before joining. Four small requests at start.
async fn probe_conditional_writes(store: &FleetStore) -> Result<(), FleetError> {
    let key = store.key(&format!("probe.{}.json", token()));
    let refuse = |reason: &str| FleetError::NoConditionalWrites {
        store: store.url().to_string(),
        reason: reason.to_string(),
    };
    let first = store.create(&key, &token()).await?;
    let outcome = match store.create(&key, &token()).await {
        Ok(_) => Err(refuse("a second create-if-absent of one object succeeded")),
        Err(FleetError::Conflict { .. }) => {
            let stale = Version {
                e_tag: Some("\"vigil-probe-stale\"".into()),
                version: Some("1".into()),
            };
            match store.update(&key, &token(), &stale).await {
                Ok(_) => Err(refuse("an update naming a wrong version succeeded")),
                Err(FleetError::Conflict { .. }) => {
                    match store.update(&key, &token(), &first).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let _ = store.delete(&key).await;
    outcome
}

/// Every membership record in the store as it is now, one read each: what
/// `vigil hosts` shows without joining. Liveness is not judged here (that
/// takes watching over a lease); records that vanish while being read are
/// left out.
pub async fn snapshot(store: &FleetStore) -> Result<Vec<HostRecord>, FleetError> {
    let mut records = Vec::new();
    for listed in store.list_top().await? {
        if Member::from_object_name(&listed.name).is_none() {
            continue;
        }
        if let Some(r) = store.read::<HostRecord>(&store.key(&listed.name)).await? {
            records.push(r.value);
        }
    }
    records.sort_by(|a, b| (&a.host, a.started).cmp(&(&b.host, b.started)));
    Ok(records)
}

/// Reads a session's owner record.
pub(super) async fn read_owner(
    store: &FleetStore,
    session: &SessionId,
) -> Result<Option<super::store::Versioned<OwnerRecord>>, FleetError> {
    store
        .read(&store.key(&super::record::owner_object(session)))
        .await
}
