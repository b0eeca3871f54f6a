//! The fleet side of the supervisor: claims the sessions placement gives
//! this host and starts their runners, hands over (backup, stop, release)
//! those it should not run, drains, and on a fence kills every browser at
//! once before the fleet may rejoin. Owns no browser itself (the runners
//! do) and decides nothing about placement (that is `fleet::placement`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::{Running, SessionSet, SupervisorError};
use crate::backup::BackupId;
use crate::fleet::{Fleet, FleetError, FleetView, Pace, Standing};
use crate::id::SessionId;

/// Sessions handed over per round while rebalancing: one at a time, so a
/// joining host never takes every session's downtime at once.
const RELEASES_PER_ROUND: usize = 1;

/// One session handed over by a drain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HandedOver {
    pub session: SessionId,
    /// The backup the next owner restores; none when the session was not
    /// connected (the next owner restores the newest of its lineage).
    pub backup: Option<String>,
    /// Whether the owner record now says released (false: the store did
    /// not answer; the session moves after a lease instead).
    pub released: bool,
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drained {
    pub host: String,
    pub sessions: Vec<HandedOver>,
}

/// Until `stop`: after every change of standing or view (and at least
/// once per renewal period), act on it.
pub(super) async fn run(set: Arc<SessionSet>, fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut standing = fleet.standing();
    let mut view = fleet.view();
    let period = fleet.config().renew;
    let pace = Pace {
        max_claims: set.config.service.max_concurrent_launches.max(1),
        max_releases: RELEASES_PER_ROUND,
    };
    // Releases the store refused to write: retried every round, or the
    // session would stay ours in the records with nobody running it.
    let mut unreleased: BTreeMap<SessionId, Option<BackupId>> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = standing.changed() => {}
            _ = view.changed() => {}
            _ = set.nudge.notified() => {}
            _ = tokio::time::sleep(period) => {}
        }
        let now = standing.borrow_and_update().clone();
        match now {
            Standing::Fenced { member, reason } => {
                let killed = set.kill_all().await;
                tracing::error!(
                    member = %member, %reason, killed,
                    "fenced: every browser of this host was killed; joining again as a new run"
                );
                unreleased.clear();
                fleet.acknowledge_fence();
                continue;
            }
            Standing::Active { .. } => {}
            Standing::Joining | Standing::Left => continue,
        }
        set.kill_unowned().await;
        unreleased.retain(|session, _| fleet.tenure(session).is_some());
        for (session, handover) in std::mem::take(&mut unreleased) {
            if let Err(e) = fleet.release(&session, handover.clone()).await {
                tracing::warn!(%session, error = %e, "release failed again; retrying next round");
                if !matches!(e, FleetError::Conflict { .. } | FleetError::NotOwned { .. }) {
                    unreleased.insert(session, handover);
                }
            }
        }
        if set.draining.load(Ordering::Relaxed) || set.stopping.load(Ordering::Relaxed) {
            continue;
        }
        let v = view.borrow_and_update().clone();
        // One listing shows only the hosts that renewed since the last;
        // the second shows them all.
        if v.listings < 2 {
            continue;
        }
        let plan = v.plan(pace);
        for session in plan.release {
            let (released, backup) = set.hand_over(&fleet, &session, "rebalancing").await;
            if !released {
                unreleased.insert(session, backup.and_then(|b| b.parse().ok()));
            }
        }
        for session in plan.claim {
            set.claim_and_start(&fleet, &session, &v).await;
        }
    }
}

impl SessionSet {
    /// Claims `session` and starts its runner, saying why it starts here.
    async fn claim_and_start(&self, fleet: &Fleet, session: &SessionId, view: &FleetView) {
        let Some(entry) = view.catalog.sessions.get(session) else {
            return;
        };
        let mut running = self.running.lock().await;
        if running.contains_key(session) || self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let owned = match fleet.claim(session, &self.deps.backups).await {
            Ok(owned) => owned,
            Err(e @ (FleetError::Held { .. } | FleetError::Conflict { .. })) => {
                tracing::debug!(%session, error = %e, "not claimed: another host has it");
                return;
            }
            Err(e) => {
                tracing::warn!(%session, error = %e, "cannot claim a session placed on this host");
                return;
            }
        };
        let Some(tenure) = fleet.tenure(session) else {
            return;
        };
        let me = &tenure.member().host;
        let epoch = owned.epoch;
        match (&owned.previous, &owned.handover) {
            (None, _) => {
                tracing::info!(%session, epoch, "session {session} is starting: it had no owner yet");
            }
            (Some(p), _) if &p.host == me => tracing::info!(
                %session, epoch, previous = %p,
                "session {session} is starting: an earlier run of this host owned it; its profile on disk counts"
            ),
            (Some(p), Some(backup)) => tracing::info!(
                %session, epoch, from = %p.host, %backup,
                "session {session} is starting: handed over by {} with backup {backup}", p.host
            ),
            (Some(p), None) => {
                let seen = view.hosts.iter().find(|h| h.member == *p);
                match seen.and_then(|h| h.unchanged_for) {
                    Some(silent)
                        if seen.is_some_and(|h| h.health != crate::fleet::Health::Alive) =>
                    {
                        tracing::info!(
                            %session, epoch, from = %p.host, not_seen_s = silent.as_secs(),
                            "session {session} is starting: taken over from {} (not seen for {} s)",
                            p.host, silent.as_secs()
                        )
                    }
                    _ => tracing::info!(
                        %session, epoch, from = %p.host,
                        "session {session} is starting: taken over from {} (gone, or released without a backup)",
                        p.host
                    ),
                }
            }
        }
        self.start_locked(&mut running, &entry.spec, Some(tenure));
    }

    /// Backs `session` up, stops it, and releases it naming that backup,
    /// so that the next owner restores exactly it. Returns whether the
    /// release was written, and the backup.
    async fn hand_over(
        &self,
        fleet: &Fleet,
        session: &SessionId,
        why: &str,
    ) -> (bool, Option<String>) {
        let r = {
            let mut running = self.running.lock().await;
            let r = running.remove(session);
            self.publish(&running);
            r
        };
        let backup = match r {
            Some(r) => self.stop_backed_up(r, true).await,
            None => None,
        };
        let handover: Option<BackupId> = backup.as_deref().and_then(|b| b.parse().ok());
        match fleet.release(session, handover).await {
            Ok(()) => {
                tracing::info!(%session, backup = ?backup, why, "session handed over");
                (true, backup)
            }
            Err(e @ (FleetError::NotOwned { .. } | FleetError::Conflict { .. })) => {
                tracing::warn!(%session, error = %e, "nothing to release: this host no longer owns the session");
                (true, backup)
            }
            Err(e) => {
                tracing::warn!(%session, error = %e, "cannot release the session yet");
                (false, backup)
            }
        }
    }

    /// Ends every session at once (a fence): their tasks are aborted,
    /// which kills their browsers without closing them. Returns how many.
    async fn kill_all(&self) -> usize {
        let running = {
            let mut running = self.running.lock().await;
            let taken = std::mem::take(&mut *running);
            self.publish(&running);
            taken
        };
        let n = running.len();
        kill(running.into_values()).await;
        n
    }

    /// Ends at once the sessions this run no longer owns (taken over while
    /// it was paused, say): their runners may not have noticed yet.
    async fn kill_unowned(&self) {
        let lost: Vec<Running> = {
            let mut running = self.running.lock().await;
            let ids: Vec<SessionId> = running
                .iter()
                .filter(|(_, r)| {
                    r.tenure.as_ref().is_some_and(|t| !t.may_run()) || r.handle.is_finished()
                })
                .map(|(id, _)| id.clone())
                .collect();
            let lost = ids.iter().filter_map(|id| running.remove(id)).collect();
            self.publish(&running);
            lost
        };
        for r in &lost {
            tracing::warn!(session = %r.handle.client().id(), "this host no longer owns the session: stopped at once");
        }
        kill(lost.into_iter()).await;
    }

    /// Stops taking sessions and hands every session this host runs over
    /// to the others (backup, stop, release), all at once. The host keeps
    /// running, owning nothing, until it is stopped.
    pub async fn drain(&self) -> Result<Drained, SupervisorError> {
        let fleet = self.fleet.as_ref().ok_or(SupervisorError::NotInFleet)?;
        self.draining.store(true, Ordering::Relaxed);
        fleet.drain();
        let ids: Vec<SessionId> = self.running.lock().await.keys().cloned().collect();
        // Sessions claimed but not running (a claim racing the drain) are
        // released too.
        let mut all = ids.clone();
        for o in fleet.owned() {
            if !all.contains(&o.session) {
                all.push(o.session);
            }
        }
        tracing::info!(sessions = all.len(), "draining: handing every session over");
        let handed = futures::future::join_all(all.iter().map(|id| async move {
            let (released, backup) = self.hand_over(fleet, id, "draining").await;
            HandedOver {
                session: id.clone(),
                backup,
                released,
            }
        }))
        .await;
        Ok(Drained {
            host: fleet.config().host_id.to_string(),
            sessions: handed,
        })
    }
}

/// Publishes the fleet's events to the feed and the webhooks, starting
/// with this host's own join (raised before anyone listened).
pub(super) async fn forward_events(
    fleet: Arc<Fleet>,
    feed: Arc<crate::feed::EventFeed>,
    webhooks: crate::webhook::WebhookSender,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = fleet.subscribe();
    let publish = |event: &crate::webhook::Event| {
        let published = feed.publish(event);
        webhooks.send_delivery(published.delivery.clone());
    };
    let me = fleet.member();
    publish(&crate::webhook::Event::HostJoined {
        host: me.host.to_string(),
        incarnation: me.incarnation.as_str().to_string(),
    });
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Some(event) = crate::webhook::Event::from_fleet(&event) {
                    publish(&event);
                }
            }
            Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "fell behind fleet events"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Aborts the sessions' tasks (dropping a browser kills its process
/// group) and waits for them to end.
async fn kill(running: impl Iterator<Item = Running>) {
    let handles: Vec<_> = running
        .map(|r| {
            r.handle.abort_handle().abort();
            r.handle
        })
        .collect();
    let joined = futures::future::join_all(handles.into_iter().map(|h| h.join()));
    if tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .is_err()
    {
        tracing::error!("aborted sessions did not end within 5 s");
    }
}
