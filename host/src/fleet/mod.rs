//! Many hosts, one store: the catalog of sessions, each host's membership,
//! and which host owns which session, with fencing. The store's
//! conditional writes (create-if-absent, update-if-unchanged) are the only
//! arbiter: no consensus of our own, no other service.
//!
//! Owns the documents under `.fleet/` in the backup store and the
//! decisions over them. Never touches a browser, a profile or a backup's
//! content: it tells the supervisor what this host may run, and the
//! supervisor acts. Imports `backup` only for the lineage of a session's
//! backups and the fence a backup passes.
//!
//! # Layout
//!
//! ```text
//! <store root>/.fleet/catalog.json                 the sessions (one object)
//! <store root>/.fleet/member.<host>.<run>.json     one per run of a host, renewed
//! <store root>/.fleet/owners/<session>.json        the owner of a session
//! ```
//!
//! `.fleet` cannot be a session id (ids never start with `.`), so it never
//! mixes with the backups beside it.
//!
//! # Who writes what, when
//!
//! - **Membership** ([`membership`]): a host joins with a new incarnation
//!   (a *run*) by creating its record, then rewrites it every `renew_secs`
//!   with new bytes, conditional on the version it last wrote. The record
//!   lists the sessions the run owns, so others learn the owner map from
//!   these records alone.
//! - **Observation**: every renewal period each host lists `.fleet/` (one
//!   request, whatever the number of sessions: owner records sit in a
//!   sub-folder the listing does not descend into), reads the membership
//!   records whose version changed, and the catalog if its version changed.
//! - **Death**: a record whose version stayed the same for `lease_secs` on
//!   the observer's own clock (time since boot; no wall clock, nobody
//!   else's clock) is overwritten with a tombstone, conditional on that
//!   version ([`liveness`]). A run whose record is a tombstone (or was
//!   deleted after one, or after it left) never renews again.
//! - **Ownership** ([`ownership`]): a session's owner record changes only
//!   by a conditional claim (epoch + 1) or release. A claim needs the
//!   record released, or naming a run that is dead or gone.
//! - **Catalog** ([`catalog`]): changed by conditional writes when an
//!   operator adds or removes a session, or a host seeds its `vigil.toml`.
//!
//! # Why two hosts never run one session
//!
//! A run drives a session only while (a) its claim of the owner record
//! succeeded and nobody changed that record since, and (b) it is not
//! fenced: its last *confirmed* renewal was sent less than `fence_after`
//! (three quarters of the lease) ago, on its own clock.
//!
//! The owner record moves away from run R only by R's release (R stopped
//! the session first) or by a claim that found R dead or gone. R is dead
//! only once a tombstone replaced the exact version V of R's record that
//! the observer had watched stay unchanged for a lease. So no renewal of R
//! landed between the moment the observer first saw V and the tombstone,
//! and none can land after it: R's renewals are conditional on the version
//! R last wrote, and after the tombstone no version R wrote is current.
//! R's last confirmed renewal is therefore the write of V or an earlier
//! one, sent before the observer first saw V: R fenced itself at the
//! latest `fence_after` after that sending,
//! which is at least `lease - fence_after` (the margin, a quarter of the
//! lease) before the tombstone, and so before any claim of R's sessions.
//! The two clocks involved are each machine's own; only their rates must
//! agree, which they do to parts per million.
//!
//! Two claimers racing for one session both name the same version of its
//! owner record; the store accepts one write and refuses the other.
//!
//! A process that is paused (SIGSTOP, a VM freeze) cannot stop its
//! browsers at its fence time; when it resumes it finds itself fenced (its
//! clock counts the pause, even a machine suspend) before any browser
//! action, since the supervisor asks [`Fleet::may_run`]. Chromium itself
//! keeps running through a pause of Vigil alone: that is the browser
//! layer's to stop (parent-death signal, process group).
//!
//! # Backups
//!
//! Every owner stamps its epoch into the manifests it publishes and, right
//! before writing a manifest, reads the owner record to confirm it still
//! owns the session. A claim seals the session's [`crate::backup::Lineage`]
//! from the backups listed just before the claim; a backup published late
//! by an older owner (paused between its check and its write) is refused
//! by the lineage, whatever happens after, so restores never go backwards.
//!
//! # When the store is unreachable
//!
//! Nothing changes for an outage shorter than `fence_after - renew` less
//! a second (11.5 s by default), whenever it starts: renewals are retried
//! every second, browsers keep running. Then every host fences itself and
//! stops its browsers, since nobody can tell a dead host from a cut-off
//! one. No host is declared dead while listings fail (no evidence). When
//! the store answers again, each host retires its fenced run, joins as a
//! new one, and claims sessions again; a claimer whose previous run held
//! the session keeps using its disk profile.
//!
//! # Cost
//!
//! Per host and renewal period: one conditional write (its record), one
//! listing of `.fleet/`, and one read per other live host (their records
//! change every period). Nothing per session, except on claim (read the
//! owner record and the session's backup listing, write the record),
//! release (one write) and backup (one read of the owner record).

pub mod catalog;
pub mod clock;
pub mod liveness;
pub mod membership;
pub mod ownership;
pub mod placement;
pub mod record;
mod settings;
pub mod store;

use std::path::PathBuf;

pub use catalog::{Catalog, CatalogEntry, Origin, SeedReport};
pub use clock::{BootClock, Clock, ManualClock};
pub use membership::{FenceReason, Fleet, FleetStats, FleetView, Health, HostView, Standing};
pub use ownership::{Owned, OwnerFence, Tenure};
pub use placement::{Pace, Plan};
pub use record::{HostRecord, HostState, Incarnation, Member, OwnerRecord, OwnerState};
pub use settings::{FleetConfig, HostId, HostPattern, allowed_on};
pub use store::FleetStore;

use crate::backup::{BackupError, Backups};
use crate::id::SessionId;

/// A moment other hosts and operators may want to hear about. Each is
/// raised by exactly one host: the one that joined, the one whose
/// tombstone won, the one whose claim won, the one fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    HostJoined {
        member: Member,
    },
    HostLost {
        member: Member,
        by: HostId,
    },
    SessionMoved {
        session: SessionId,
        from: Option<Member>,
        to: Member,
        epoch: u64,
    },
    Fenced {
        member: Member,
        reason: FenceReason,
    },
}

/// Why a fleet operation failed. Messages name the store, the object or
/// the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("fleet store {store}: cannot {op} {key}: {source}")]
    Store {
        store: String,
        op: &'static str,
        key: String,
        source: Box<object_store::Error>,
    },
    /// Another writer changed (or created, or removed) the object first.
    #[error("{key} was changed by another host first")]
    Conflict { key: String },
    #[error("{key} keeps changing under this host: gave up after {attempts} attempts")]
    Busy { key: String, attempts: usize },
    #[error("{key} is not a fleet document this version of vigil can read: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the fleet store did not answer within {after_ms} ms")]
    Timeout { after_ms: u64 },
    #[error(
        "the store {store} does not enforce conditional writes ({reason}); a fleet cannot run on it: \
         two hosts could run one session"
    )]
    NoConditionalWrites { store: String, reason: String },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("session {session} already exists")]
    DuplicateSession { session: SessionId },
    #[error("no session {session}")]
    NoSuchSession { session: SessionId },
    #[error(
        "session {session} is defined in the vigil.toml of {}; remove it there (and restart those hosts)",
        hosts.iter().map(HostId::as_str).collect::<Vec<_>>().join(", ")
    )]
    DefinedInConfig {
        session: SessionId,
        hosts: Vec<HostId>,
    },
    #[error("session {session} is owned by {owner}, which is alive")]
    Held { session: SessionId, owner: String },
    #[error("session {session} is not owned by this host")]
    NotOwned { session: SessionId },
    #[error("this host is fenced: it may not claim or run sessions until it has joined again")]
    Fenced,
    #[error("this host is draining: it takes no sessions")]
    Draining,
    #[error("session {session}: cannot list its backups to seal its lineage: {source}")]
    Backups {
        session: SessionId,
        source: Box<BackupError>,
    },
}

impl FleetStore {
    /// The fleet's folder in the store `backups` uses.
    pub fn of(backups: &Backups) -> Self {
        let store = std::sync::Arc::clone(backups.object_store());
        match backups.local_dir() {
            Some(dir) => Self::local(store, dir.to_path_buf(), backups.store_url()),
            None => Self::shared(store, backups.root(), backups.store_url()),
        }
    }
}
