//! Which sessions this host should claim and which it should hand over: a
//! plain decision over the fleet as observed, no I/O.
//!
//! Every host computes the same target from the same view, so they agree
//! without talking:
//! 1. Each live, non-draining host may hold up to its fair share: the
//!    sessions spread as evenly as the hosts' `max_sessions` allow
//!    (sessions / hosts, rounded up, when nobody has a limit).
//! 2. A host keeps what it already runs, up to that share (moving a
//!    session costs a backup and a restore).
//! 3. Every other session goes to the host with room that ranks highest
//!    for it (rendezvous hashing on host id and session id), so N hosts
//!    starting at once each aim at different sessions rather than all at
//!    the first ones. A pinned session (`hosts = [...]`) only goes to a
//!    matching host, above its share if need be.
//!
//! This host then claims what the target gives it that nobody runs, and
//! hands over what it runs that the target gives to another (or to
//! nobody: removed from the catalog, pinned elsewhere). Both are capped
//! per round, which staggers start-ups and rebalancing. Claims stay
//! conditional writes: a plan made from a stale view loses its race, it
//! never runs a session twice.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::settings::{HostId, HostPattern, allowed_on};
use crate::id::SessionId;

/// One live host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLoad {
    pub host: HostId,
    pub max_sessions: Option<usize>,
    /// Handing everything over: takes nothing.
    pub draining: bool,
    pub owned: BTreeSet<SessionId>,
}

/// One session of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub id: SessionId,
    /// Host globs it may run on; empty: any.
    pub pins: Vec<HostPattern>,
}

/// How much one round may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub max_claims: usize,
    pub max_releases: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Unowned sessions to claim, best first.
    pub claim: Vec<SessionId>,
    /// Sessions to back up and release so that another host takes them.
    pub release: Vec<SessionId>,
}

/// The plan of host `me` (one of `hosts`) for this round.
pub fn plan(me: &HostId, hosts: &[HostLoad], sessions: &[Wanted], pace: Pace) -> Plan {
    let target = target(hosts, sessions);
    let Some(mine) = hosts.iter().find(|h| &h.host == me) else {
        return Plan::default();
    };
    let owned_by_anyone: BTreeSet<&SessionId> = hosts.iter().flat_map(|h| &h.owned).collect();
    let claim = sessions
        .iter()
        .filter(|s| target.get(&s.id) == Some(me) && !owned_by_anyone.contains(&s.id))
        .map(|s| s.id.clone())
        .take(pace.max_claims)
        .collect();
    let mut release: Vec<SessionId> = mine
        .owned
        .iter()
        .filter(|s| target.get(*s) != Some(me))
        .cloned()
        .collect();
    // Hand over first what this host ranks lowest for.
    release.sort_by_key(|s| score(me, s));
    release.truncate(pace.max_releases);
    Plan { claim, release }
}

/// Who should run each session; sessions no host may take are absent.
pub fn target(hosts: &[HostLoad], sessions: &[Wanted]) -> BTreeMap<SessionId, HostId> {
    let takers: Vec<&HostLoad> = hosts.iter().filter(|h| !h.draining).collect();
    let wanted: BTreeMap<&SessionId, &Wanted> = sessions.iter().map(|s| (&s.id, s)).collect();
    let placeable = sessions
        .iter()
        .filter(|s| takers.iter().any(|h| allowed_on(&s.pins, &h.host)))
        .count();
    let share = fair_share(&takers, placeable);
    let mut load: BTreeMap<&HostId, usize> = takers.iter().map(|h| (&h.host, 0)).collect();
    let mut target = BTreeMap::new();

    // Keep what hosts already run, up to their share, best-ranked first.
    let mut sorted_takers = takers.clone();
    sorted_takers.sort_by(|a, b| a.host.cmp(&b.host));
    for h in &sorted_takers {
        let mut kept: Vec<&SessionId> = h
            .owned
            .iter()
            .filter(|s| {
                wanted.get(s).is_some_and(|w| allowed_on(&w.pins, &h.host))
                    && !target.contains_key(*s)
            })
            .collect();
        kept.sort_by_key(|s| std::cmp::Reverse(score(&h.host, s)));
        for s in kept.into_iter().take(share[&h.host]) {
            target.insert(s.clone(), h.host.clone());
            *load.get_mut(&h.host).expect("a taker") += 1;
        }
    }

    // Place the rest where it ranks highest among hosts with room.
    let rest: Vec<&Wanted> = sessions
        .iter()
        .filter(|s| !target.contains_key(&s.id))
        .collect();
    for s in rest {
        let eligible = || {
            takers
                .iter()
                .filter(|h| allowed_on(&s.pins, &h.host))
                .filter(|h| h.max_sessions.is_none_or(|max| load[&h.host] < max))
        };
        let with_room = eligible()
            .filter(|h| load[&h.host] < share[&h.host])
            .max_by_key(|h| score(&h.host, &s.id));
        // A pinned session may push a host above its share, never above
        // its max_sessions.
        let chosen = with_room.or_else(|| {
            eligible().min_by_key(|h| (load[&h.host], std::cmp::Reverse(score(&h.host, &s.id))))
        });
        if let Some(h) = chosen {
            target.insert(s.id.clone(), h.host.clone());
            *load.get_mut(&h.host).expect("a taker") += 1;
        }
    }
    target
}

/// Each taker's share of `sessions`: the lowest level L such that every
/// host holding min(L, its max_sessions) covers them all.
fn fair_share<'a>(takers: &[&'a HostLoad], sessions: usize) -> BTreeMap<&'a HostId, usize> {
    let cap = |h: &HostLoad, level: usize| h.max_sessions.map_or(level, |m| m.min(level));
    let mut level = 0;
    while level < sessions && takers.iter().map(|h| cap(h, level)).sum::<usize>() < sessions {
        level += 1;
    }
    takers.iter().map(|h| (&h.host, cap(h, level))).collect()
}

/// Rendezvous score of `session` on `host`: stable across hosts and runs.
fn score(host: &HostId, session: &SessionId) -> u64 {
    let digest = Sha256::new()
        .chain_update(host.as_str())
        .chain_update([0])
        .chain_update(session.as_str())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: Pace = Pace {
        max_claims: usize::MAX,
        max_releases: usize::MAX,
    };

    fn h(name: &str) -> HostId {
        HostId::new(name).unwrap()
    }

    fn s(name: &str) -> SessionId {
        SessionId::new(name).unwrap()
    }

    fn host(name: &str, owned: &[&str]) -> HostLoad {
        HostLoad {
            host: h(name),
            max_sessions: None,
            draining: false,
            owned: owned.iter().map(|o| s(o)).collect(),
        }
    }

    fn sessions(n: usize) -> Vec<Wanted> {
        (0..n)
            .map(|i| Wanted {
                id: s(&format!("s{i}")),
                pins: vec![],
            })
            .collect()
    }

    fn counts(target: &BTreeMap<SessionId, HostId>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for host in target.values() {
            *c.entry(host.to_string()).or_default() += 1;
        }
        c
    }

    /// Runs rounds where every host follows its own plan, until nothing
    /// changes: what the fleet converges to.
    fn converge(mut hosts: Vec<HostLoad>, all: &[Wanted], pace: Pace) -> Vec<HostLoad> {
        for _ in 0..50 {
            let plans: Vec<Plan> = hosts
                .iter()
                .map(|x| plan(&x.host, &hosts, all, pace))
                .collect();
            if plans
                .iter()
                .all(|p| p.claim.is_empty() && p.release.is_empty())
            {
                return hosts;
            }
            for (x, p) in hosts.iter_mut().zip(&plans) {
                for r in &p.release {
                    x.owned.remove(r);
                }
            }
            // Claims race: the first host to claim a session wins it.
            let mut taken: BTreeSet<SessionId> =
                hosts.iter().flat_map(|x| x.owned.clone()).collect();
            for (x, p) in hosts.iter_mut().zip(&plans) {
                for c in &p.claim {
                    if taken.insert(c.clone()) {
                        x.owned.insert(c.clone());
                    }
                }
            }
        }
        panic!("placement did not settle in 50 rounds");
    }

    #[test]
    fn six_sessions_on_three_empty_hosts_spread_two_each() {
        let hosts = vec![host("a", &[]), host("b", &[]), host("c", &[])];
        let t = target(&hosts, &sessions(6));
        assert_eq!(counts(&t).values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        let done = converge(hosts, &sessions(6), FREE);
        assert!(done.iter().all(|x| x.owned.len() == 2), "{done:?}");
    }

    #[test]
    fn hosts_starting_together_aim_at_different_sessions() {
        let hosts = vec![host("a", &[]), host("b", &[]), host("c", &[])];
        let all = sessions(6);
        let pace = Pace {
            max_claims: 1,
            max_releases: 1,
        };
        let firsts: BTreeSet<SessionId> = hosts
            .iter()
            .map(|x| plan(&x.host, &hosts, &all, pace).claim[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3, "every host goes for its own session first");
    }

    #[test]
    fn a_joining_host_gets_its_share_by_handover_and_the_rest_stay_put() {
        let all = sessions(6);
        let before = converge(vec![host("a", &[]), host("b", &[])], &all, FREE);
        let mut with_c = before.clone();
        with_c.push(host("c", &[]));
        let after = converge(
            with_c,
            &all,
            Pace {
                max_claims: 2,
                max_releases: 1,
            },
        );
        assert!(after.iter().all(|x| x.owned.len() == 2), "{after:?}");
        // Only what c took moved: a and b kept the rest.
        for (b, a) in before.iter().zip(&after) {
            assert!(
                a.owned.is_subset(&b.owned),
                "{} lost more than it handed over",
                a.host
            );
        }
    }

    #[test]
    fn a_dead_hosts_sessions_are_taken_by_the_survivors_evenly() {
        let all = sessions(6);
        // c died: it is no longer among the live hosts.
        let hosts = vec![host("a", &["s0", "s1"]), host("b", &["s2", "s3"])];
        let done = converge(hosts, &all, FREE);
        assert!(done.iter().all(|x| x.owned.len() == 3), "{done:?}");
    }

    #[test]
    fn max_sessions_caps_a_host_and_the_others_take_more() {
        let mut small = host("a", &[]);
        small.max_sessions = Some(1);
        let hosts = vec![small, host("b", &[]), host("c", &[])];
        let done = converge(hosts, &sessions(7), FREE);
        let n: Vec<usize> = done.iter().map(|x| x.owned.len()).collect();
        assert_eq!(n, [1, 3, 3]);
    }

    #[test]
    fn full_hosts_leave_sessions_unowned_rather_than_overfill() {
        let mut a = host("a", &[]);
        a.max_sessions = Some(2);
        let done = converge(vec![a], &sessions(5), FREE);
        assert_eq!(done[0].owned.len(), 2);
    }

    #[test]
    fn pinned_sessions_run_only_on_matching_hosts() {
        let mut all = sessions(4);
        for w in &mut all[..3] {
            w.pins = vec![HostPattern::new("eu-*").unwrap()];
        }
        let hosts = vec![host("eu-1", &[]), host("us-1", &["s0"])];
        let done = converge(hosts, &all, FREE);
        assert_eq!(
            done[0].owned.len(),
            3,
            "all three pinned go to eu-1: {done:?}"
        );
        assert_eq!(done[1].owned, [s("s3")].into());
    }

    #[test]
    fn a_draining_host_hands_everything_over() {
        let mut a = host("a", &["s0", "s1", "s2"]);
        a.draining = true;
        let hosts = vec![a, host("b", &[])];
        let p = plan(&h("a"), &hosts, &sessions(3), FREE);
        assert_eq!(p.release.len(), 3);
        assert!(p.claim.is_empty());
    }

    #[test]
    fn a_session_removed_from_the_catalog_is_released() {
        let hosts = vec![host("a", &["s0", "gone"])];
        let p = plan(&h("a"), &hosts, &sessions(1), FREE);
        assert_eq!(p.release, vec![s("gone")]);
    }
}
