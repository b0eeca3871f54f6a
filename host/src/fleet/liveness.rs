//! Who is alive, as one observer sees it: a plain decision over listings,
//! no I/O, on the observer's own clock.
//!
//! A membership record is renewed with new bytes every `renew_secs`, so
//! its version changes. The observer notes, on its own clock, when it
//! first saw each version. A record whose version is still the same in a
//! *successful* listing taken `lease` or more after that first sight is
//! expired: its host has not written for at least a lease, however the
//! clocks of the two machines are set. A listing that fails proves
//! nothing, so nothing expires while the store cannot be listed.
//!
//! Expired is not yet dead: the observer then overwrites the record with a
//! tombstone, conditional on that very version. If the host renewed in
//! between, the write is refused; if not, the host can never renew again
//! (its own writes name the old version) and its sessions may move.

use std::collections::BTreeMap;
use std::time::Duration;

use super::record::Member;
use super::store::Version;

#[derive(Debug, Clone)]
struct Sighting {
    version: Version,
    /// When this observer first saw `version`.
    since: Duration,
}

/// What one observer has seen of the fleet's membership records.
#[derive(Debug, Clone)]
pub struct Liveness {
    lease: Duration,
    seen: BTreeMap<Member, Sighting>,
    /// When the last successful listing was taken.
    listed_at: Option<Duration>,
    listings: u64,
}

/// What one listing changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Records not seen before.
    pub appeared: Vec<Member>,
    /// Records with a new version.
    pub changed: Vec<Member>,
    /// Records seen before and now gone.
    pub vanished: Vec<Member>,
}

impl Liveness {
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            seen: BTreeMap::new(),
            listed_at: None,
            listings: 0,
        }
    }

    /// Takes in one successful listing of the membership records, sent at
    /// `started` and answered at `finished` on this observer's clock.
    ///
    /// Both ends are read on the safe side. A version first seen counts
    /// from `finished`: it may have been written while the listing ran, but
    /// not after it answered. A version still there counts as current at
    /// `started`: the listing reflects some instant no earlier than that.
    pub fn observe(
        &mut self,
        listed: impl IntoIterator<Item = (Member, Version)>,
        started: Duration,
        finished: Duration,
    ) -> Changes {
        let now = finished;
        let mut changes = Changes::default();
        let mut next = BTreeMap::new();
        for (member, version) in listed {
            let sighting = match self.seen.remove(&member) {
                Some(old) if old.version == version => old,
                Some(_) => {
                    changes.changed.push(member.clone());
                    Sighting {
                        version,
                        since: now,
                    }
                }
                None => {
                    changes.appeared.push(member.clone());
                    Sighting {
                        version,
                        since: now,
                    }
                }
            };
            next.insert(member, sighting);
        }
        changes.vanished = std::mem::replace(&mut self.seen, next)
            .into_keys()
            .collect();
        self.listed_at = Some(started);
        self.listings += 1;
        changes
    }

    /// Successful listings so far.
    pub fn listings(&self) -> u64 {
        self.listings
    }

    /// Whether the last listing showed `member`'s record.
    pub fn present(&self, member: &Member) -> bool {
        self.seen.contains_key(member)
    }

    /// The version of `member`'s record in the last listing.
    pub fn version(&self, member: &Member) -> Option<&Version> {
        self.seen.get(member).map(|s| &s.version)
    }

    /// How long `member`'s record had stayed unchanged when last listed.
    pub fn unchanged_for(&self, member: &Member) -> Option<Duration> {
        let (listed_at, s) = (self.listed_at?, self.seen.get(member)?);
        Some(listed_at.saturating_sub(s.since))
    }

    /// Records unchanged for a lease or more as of the last listing, with
    /// the version a tombstone must replace.
    pub fn expired(&self) -> Vec<(Member, Version)> {
        let Some(listed_at) = self.listed_at else {
            return Vec::new();
        };
        self.seen
            .iter()
            .filter(|(_, s)| listed_at.saturating_sub(s.since) >= self.lease)
            .map(|(m, s)| (m.clone(), s.version.clone()))
            .collect()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.seen.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::record::Incarnation;
    use crate::fleet::settings::HostId;

    const LEASE: Duration = Duration::from_secs(30);

    fn member(name: &str) -> Member {
        Member {
            host: HostId::new(name).unwrap(),
            incarnation: Incarnation::new(),
        }
    }

    fn v(tag: &str) -> Version {
        Version {
            e_tag: Some(tag.into()),
            version: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_renewing_host_never_expires() {
        let a = member("a");
        let mut l = Liveness::new(LEASE);
        for tick in 0..20u64 {
            l.observe(
                [(a.clone(), v(&tick.to_string()))],
                secs(tick * 10),
                secs(tick * 10),
            );
            assert!(l.expired().is_empty());
        }
    }

    #[test]
    fn a_silent_host_expires_a_lease_after_first_sight_not_after_its_own_times() {
        let (a, b) = (member("a"), member("b"));
        let mut l = Liveness::new(LEASE);
        // The observer starts at 1000 s of its own uptime; a's version is
        // already old, but the observer cannot know: it counts from now.
        l.observe(
            [(a.clone(), v("a1")), (b.clone(), v("b1"))],
            secs(1000),
            secs(1000),
        );
        l.observe(
            [(a.clone(), v("a1")), (b.clone(), v("b2"))],
            secs(1010),
            secs(1010),
        );
        l.observe(
            [(a.clone(), v("a1")), (b.clone(), v("b3"))],
            secs(1020),
            secs(1020),
        );
        assert!(l.expired().is_empty(), "29 s is not a lease");
        l.observe(
            [(a.clone(), v("a1")), (b.clone(), v("b4"))],
            secs(1030),
            secs(1030),
        );
        assert_eq!(l.expired(), vec![(a.clone(), v("a1"))]);
        assert_eq!(l.unchanged_for(&a), Some(LEASE));
    }

    #[test]
    fn a_slow_listing_counts_on_the_safe_side_at_both_ends() {
        let a = member("a");
        let mut l = Liveness::new(LEASE);
        // a's version may have landed while this 5 s listing ran: count from
        // its answer, not its start.
        l.observe([(a.clone(), v("a1"))], secs(0), secs(5));
        // Still there in a listing sent at 34 s: current at 34 s at least,
        // 29 s after the first answer. Not a lease.
        l.observe([(a.clone(), v("a1"))], secs(34), secs(40));
        assert!(l.expired().is_empty());
        l.observe([(a.clone(), v("a1"))], secs(35), secs(36));
        assert_eq!(l.expired().len(), 1);
    }

    #[test]
    fn nothing_expires_without_a_fresh_listing() {
        let a = member("a");
        let mut l = Liveness::new(LEASE);
        l.observe([(a.clone(), v("a1"))], secs(0), secs(0));
        // The store could not be listed for a minute: no listing, no
        // evidence, no verdict.
        assert!(l.expired().is_empty());
        // The first listing after the outage shows a renewal: alive.
        l.observe([(a.clone(), v("a7"))], secs(60), secs(60));
        assert!(l.expired().is_empty());
    }

    #[test]
    fn listings_report_what_appeared_changed_and_vanished() {
        let (a, b, c) = (member("a"), member("b"), member("c"));
        let mut l = Liveness::new(LEASE);
        l.observe(
            [(a.clone(), v("a1")), (b.clone(), v("b1"))],
            secs(0),
            secs(0),
        );
        let ch = l.observe(
            [(a.clone(), v("a2")), (c.clone(), v("c1"))],
            secs(10),
            secs(10),
        );
        assert_eq!(ch.appeared, vec![c.clone()]);
        assert_eq!(ch.changed, vec![a.clone()]);
        assert_eq!(ch.vanished, vec![b.clone()]);
        assert!(!l.present(&b));
        assert_eq!(l.listings(), 2);
    }
}
