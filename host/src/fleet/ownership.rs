//! Owning sessions: claim, release, and the fence a backup passes before
//! it publishes.
//!
//! A session's owner record (`.fleet/owners/<session>.json`) names the run
//! that may drive it and an epoch. It changes only by conditional writes:
//! - *claim*: create it (first owner, epoch 1), or replace the version
//!   this host read, with the epoch one higher. Allowed when the record is
//!   released, or names a run that is dead (tombstoned) or gone (absent
//!   from a listing taken after the record was read: a run's record is
//!   deleted only once it is dead or has left). Two claimers of one
//!   version: the store takes one write and refuses the other.
//! - *release*: its owner, having stopped the session (and backed it up),
//!   marks it released, naming that backup for the next owner.
//!
//! A claim also seals the session's backup [`Lineage`] from the backups
//! listed just before the write, and keeps it in the record: the new owner
//! restores from it, and any backup the old owner publishes afterwards is
//! refused.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::membership::{Fleet, Inner, bounded, read_owner};
use super::record::{HostRecord, HostState, Member, OwnerRecord, OwnerState, RECORD_FORMAT};
use super::settings::HostId;
use super::store::{Version, Versioned, token};
use super::{FleetError, FleetEvent};
use crate::backup::{self, BackupId, Backups, HookFuture, Lineage};
use crate::id::SessionId;

/// A session this run owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub session: SessionId,
    pub epoch: u64,
    /// Which backups count; restore the newest good one it admits.
    pub lineage: Lineage,
    /// Who owned it before.
    pub previous: Option<Member>,
    /// The backup the previous owner took when it handed the session
    /// over: restore exactly this one.
    pub handover: Option<BackupId>,
    pub(super) version: Version,
}

impl Owned {
    /// The previous owner was an earlier run of this very host: the
    /// profile on this host's disk may be newer than any backup (a host
    /// fenced by a store outage, for example).
    pub fn previously_here(&self, host: &HostId) -> bool {
        self.previous.as_ref().is_some_and(|p| &p.host == host)
    }
}

/// Whether a session's current owner record lets this run claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claimable {
    Yes,
    Mine,
    HeldBy(Member),
}

impl Fleet {
    /// Claims `session` for this run, sealing its lineage from what
    /// `backups` holds. [`FleetError::Held`] if a live run owns it,
    /// [`FleetError::Conflict`] if another host claimed it first.
    pub async fn claim(&self, session: &SessionId, backups: &Backups) -> Result<Owned, FleetError> {
        let inner = &self.inner;
        let me = inner.active_member()?;
        let limit = inner.config.lease;
        let current = bounded(limit, read_owner(&inner.store, session)).await?;
        match inner.claimable(current.as_ref(), &me).await? {
            Claimable::Mine => {
                if let Some(owned) = inner.run.lock().expect("run lock").owned.get(session) {
                    return Ok(owned.clone());
                }
            }
            Claimable::HeldBy(owner) => {
                return Err(FleetError::Held {
                    session: session.clone(),
                    owner: owner.to_string(),
                });
            }
            Claimable::Yes => {}
        }

        let listed = backups
            .list(session)
            .await
            .map_err(|e| FleetError::Backups {
                session: session.clone(),
                source: Box::new(e),
            })?;
        let (epoch, previous, handover, lineage) = match &current {
            None => (1, None, None, Lineage::unowned().seal(&listed, 1)),
            Some(c) => {
                let epoch = c.value.epoch + 1;
                let handover = match &c.value.state {
                    OwnerState::Released { handover } => handover.clone(),
                    OwnerState::Owned => None,
                };
                (
                    epoch,
                    Some(c.value.owner.clone()),
                    handover,
                    c.value.lineage.seal(&listed, epoch),
                )
            }
        };
        let record = OwnerRecord {
            format: RECORD_FORMAT,
            session: session.clone(),
            epoch,
            owner: me.clone(),
            state: OwnerState::Owned,
            lineage: lineage.clone(),
            previous: previous.clone(),
            changed: Utc::now(),
            token: token(),
        };
        let key = inner.store.key(&super::record::owner_object(session));
        let version = match &current {
            None => bounded(limit, inner.store.create(&key, &record)).await?,
            Some(c) => bounded(limit, inner.store.update(&key, &record, &c.version)).await?,
        };
        let owned = Owned {
            session: session.clone(),
            epoch,
            lineage,
            previous: previous.clone(),
            handover,
            version,
        };
        {
            let mut run = inner.run.lock().expect("run lock");
            if run.fenced.is_some() || run.me != me {
                // Fenced while claiming: the claim belongs to a finished
                // run; its record names that run, which is dead.
                return Err(FleetError::Fenced);
            }
            run.owned.insert(session.clone(), owned.clone());
        }
        inner.counters.claims.fetch_add(1, Ordering::Relaxed);
        let took_over = current
            .as_ref()
            .is_some_and(|c| c.value.state == OwnerState::Owned);
        if took_over {
            inner.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(%session, epoch, member = %me, previous = ?previous.as_ref().map(ToString::to_string), took_over, "claimed a session");
        if previous.as_ref().is_some_and(|p| p != &me) {
            let _ = inner.events.send(FleetEvent::SessionMoved {
                session: session.clone(),
                from: previous,
                to: me,
                epoch,
            });
        }
        inner.publish_view();
        Ok(owned)
    }

    /// Lets `session` go: the caller has stopped it, and names the backup
    /// it took on the way out (the next owner restores exactly that). If
    /// the store cannot be written, the session stays owned (call again);
    /// [`FleetError::Conflict`] means another host holds it already.
    pub async fn release(
        &self,
        session: &SessionId,
        handover: Option<BackupId>,
    ) -> Result<(), FleetError> {
        let inner = &self.inner;
        let owned = inner
            .run
            .lock()
            .expect("run lock")
            .owned
            .remove(session)
            .ok_or_else(|| FleetError::NotOwned {
                session: session.clone(),
            })?;
        let me = self.member();
        let record = OwnerRecord {
            format: RECORD_FORMAT,
            session: session.clone(),
            epoch: owned.epoch,
            owner: me,
            state: OwnerState::Released {
                handover: handover.clone(),
            },
            lineage: owned.lineage.clone(),
            previous: owned.previous.clone(),
            changed: Utc::now(),
            token: token(),
        };
        let key = inner.store.key(&super::record::owner_object(session));
        let written = bounded(
            inner.config.lease,
            inner.store.update(&key, &record, &owned.version),
        )
        .await;
        match written {
            Ok(_) => {}
            Err(e @ FleetError::Conflict { .. }) => {
                // Someone else holds it now: it is not ours to release.
                return Err(e);
            }
            Err(e) => {
                // Still ours in the store: keep it, so a retry can release it.
                inner
                    .run
                    .lock()
                    .expect("run lock")
                    .owned
                    .insert(session.clone(), owned);
                return Err(e);
            }
        }
        inner.counters.releases.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%session, epoch = owned.epoch, handover = ?handover.as_ref().map(ToString::to_string), "released a session");
        inner.publish_view();
        Ok(())
    }

    /// The sessions this run owns.
    pub fn owned(&self) -> Vec<Owned> {
        self.inner
            .run
            .lock()
            .expect("run lock")
            .owned
            .values()
            .cloned()
            .collect()
    }

    /// Whether this host may drive `session`'s browser now: it owns it
    /// and is not fenced.
    pub fn may_run(&self, session: &SessionId) -> bool {
        !self.is_fenced()
            && self
                .inner
                .run
                .lock()
                .expect("run lock")
                .owned
                .contains_key(session)
    }

    /// The fence for backups of `session` while this run owns it.
    pub fn fence_for(&self, session: &SessionId) -> Option<OwnerFence> {
        let run = self.inner.run.lock().expect("run lock");
        let owned = run.owned.get(session)?;
        Some(OwnerFence {
            inner: Arc::clone(&self.inner),
            me: run.me.clone(),
            epoch: owned.epoch,
        })
    }
}

impl Inner {
    /// This run, if it may act (joined, not fenced).
    fn active_member(&self) -> Result<Member, FleetError> {
        if self.fenced_now() {
            return Err(FleetError::Fenced);
        }
        let run = self.run.lock().expect("run lock");
        if run.version.is_none() {
            return Err(FleetError::Fenced);
        }
        if run.draining {
            return Err(FleetError::Draining);
        }
        Ok(run.me.clone())
    }

    async fn claimable(
        &self,
        current: Option<&Versioned<OwnerRecord>>,
        me: &Member,
    ) -> Result<Claimable, FleetError> {
        let Some(current) = current else {
            return Ok(Claimable::Yes);
        };
        let record = &current.value;
        if matches!(record.state, OwnerState::Released { .. }) {
            return Ok(Claimable::Yes);
        }
        if record.owner == *me {
            return Ok(Claimable::Mine);
        }
        let known_dead = matches!(
            self.observed
                .lock()
                .expect("observed lock")
                .records
                .get(&record.owner),
            Some(HostRecord {
                state: HostState::Dead { .. },
                ..
            })
        );
        if known_dead {
            return Ok(Claimable::Yes);
        }
        // Look again now, after the owner record was read: a run absent
        // from this listing has no record, so it is dead or gone.
        let key = self.store.key(&record.owner.object_name());
        match bounded(self.config.renew, self.store.read::<HostRecord>(&key)).await? {
            None => Ok(Claimable::Yes),
            Some(r) if matches!(r.value.state, HostState::Dead { .. }) => Ok(Claimable::Yes),
            Some(_) => Ok(Claimable::HeldBy(record.owner.clone())),
        }
    }
}

/// Stamps a backup with its owner's epoch, and refuses to publish it once
/// this run no longer owns the session (see [`backup::Fence`]). Costs one
/// read of the owner record per backup.
pub struct OwnerFence {
    inner: Arc<Inner>,
    me: Member,
    epoch: u64,
}

impl backup::Fence for OwnerFence {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn confirm<'a>(&'a self, session: &'a SessionId) -> HookFuture<'a> {
        Box::pin(async move {
            if self.inner.fenced_now() {
                return Err("this host is fenced".into());
            }
            let current = bounded(
                self.inner.config.renew,
                read_owner(&self.inner.store, session),
            )
            .await
            .map_err(|e| format!("cannot read the owner record: {e}"))?;
            match current {
                Some(Versioned { value: r, .. })
                    if r.owner == self.me
                        && r.epoch == self.epoch
                        && r.state == OwnerState::Owned =>
                {
                    Ok(())
                }
                Some(Versioned { value: r, .. }) => Err(format!(
                    "the session is now {} by {} at epoch {}",
                    match r.state {
                        OwnerState::Owned => "owned",
                        OwnerState::Released { .. } => "released",
                    },
                    r.owner,
                    r.epoch
                )
                .into()),
                None => Err("the session has no owner record".into()),
            }
        })
    }
}

/// What a session's runner holds while this run owns the session: it asks
/// [`Tenure::may_run`] before it drives the browser, restores from the
/// ownership's lineage (or exactly the handover backup), and publishes
/// backups only through [`Tenure::fence`].
#[derive(Clone)]
pub struct Tenure {
    inner: Arc<Inner>,
    me: Member,
    owned: Owned,
}

impl std::fmt::Debug for Tenure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenure")
            .field("me", &self.me)
            .field("session", &self.owned.session)
            .field("epoch", &self.owned.epoch)
            .finish()
    }
}

impl Tenure {
    /// The ownership this tenure stands for.
    pub fn owned(&self) -> &Owned {
        &self.owned
    }

    /// The run that owns the session.
    pub fn member(&self) -> &Member {
        &self.me
    }

    /// Whether this run still owns the session at this epoch and is not
    /// fenced (latching the fence if its time has passed).
    pub fn may_run(&self) -> bool {
        if self.inner.fenced_now() {
            return false;
        }
        let run = self.inner.run.lock().expect("run lock");
        run.me == self.me
            && run
                .owned
                .get(&self.owned.session)
                .is_some_and(|o| o.epoch == self.owned.epoch)
    }

    /// The fence a backup of this session passes before it publishes.
    pub fn fence(&self) -> OwnerFence {
        OwnerFence {
            inner: Arc::clone(&self.inner),
            me: self.me.clone(),
            epoch: self.owned.epoch,
        }
    }
}

impl Fleet {
    /// The tenure of `session` for its runner, if this run owns it.
    pub fn tenure(&self, session: &SessionId) -> Option<Tenure> {
        let run = self.inner.run.lock().expect("run lock");
        let owned = run.owned.get(session)?.clone();
        Some(Tenure {
            inner: Arc::clone(&self.inner),
            me: run.me.clone(),
            owned,
        })
    }
}
