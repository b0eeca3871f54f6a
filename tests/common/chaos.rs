//! A seeded chaos run on a fleet of real `vigil run` processes: hosts
//! killed with everything they started, paused past their lease, drained
//! and restarted, the store paused, each followed by a wait until every
//! session is connected again. The oracle samples the fixture all along.
//! Used by the `chaos` bench (about 50 steps) and, short, by a test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::fleet::{Fleet, OwnMoto, Store, all_connected};

/// What a chaos run saw.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub steps: Vec<String>,
    /// Samples where a device had two live connections.
    pub double_runs: usize,
    /// Pairings beyond one per session (a login lost and redone).
    pub lost_logins: u64,
    /// Times a session's newest good backup, ranked by (epoch, time), was
    /// older than one seen before without a lineage refusal explaining it.
    pub manifest_regressions: usize,
    /// From a host's kill to every session connected again.
    pub takeovers: Vec<Duration>,
    /// Steps after which the sessions were not all connected within the
    /// bound.
    pub not_recovered: usize,
}

impl ChaosReport {
    pub fn print(&self) {
        let mut t = self.takeovers.clone();
        t.sort();
        let p50 = t.get(t.len() / 2).copied().unwrap_or_default();
        let max = t.last().copied().unwrap_or_default();
        println!(
            "chaos: {} steps; {} double runs, {} lost logins, {} manifest regressions, {} steps not recovered within 60 s",
            self.steps.len(),
            self.double_runs,
            self.lost_logins,
            self.manifest_regressions,
            self.not_recovered
        );
        println!(
            "chaos: takeover after kill -9 of a host running sessions (to every session connected): p50 {:.1} s, max {:.1} s over {} kills",
            p50.as_secs_f64(),
            max.as_secs_f64(),
            t.len()
        );
    }
}

/// xorshift64*: enough for a reproducible schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `steps` seeded steps on `hosts` hosts and `sessions` sessions.
pub async fn run(seed: u64, steps: usize, hosts: usize, sessions: usize) -> ChaosReport {
    let moto = OwnMoto::start().await;
    moto.bucket("chaos");
    let store = Store {
        endpoint: moto.endpoint.clone(),
        bucket: "chaos".into(),
        timing: (6, 2),
    };
    let names: Vec<String> = (1..=hosts).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::start_on(&names, store).await;
    fleet.add_sessions(sessions);
    let mut report = ChaosReport::default();
    if !settle(&fleet, sessions, Duration::from_secs(180)).await {
        report.not_recovered += 1;
    }
    wait_backups(&fleet, sessions).await;
    let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut rng = Rng(seed.max(1));
    for _ in 0..steps {
        let live: Vec<usize> = (0..fleet.hosts.len())
            .filter(|i| fleet.hosts[*i].child.is_some())
            .collect();
        let h = live[rng.below(live.len() as u64) as usize];
        let name = fleet.hosts[h].name.clone();
        let step = match rng.below(5) {
            0 => {
                // A host that runs sessions, if any does: a takeover is
                // what is measured.
                let mut h = h;
                for i in &live {
                    if !fleet.hosts[*i].sessions().await.is_empty() {
                        h = *i;
                        break;
                    }
                }
                let name = fleet.hosts[h].name.clone();
                let ran = fleet.hosts[h].sessions().await.len();
                fleet.hosts[h].signal_group(libc::SIGKILL);
                let killed = Instant::now();
                fleet.hosts[h].wait(Duration::from_secs(10));
                let ok = settle(&fleet, sessions, Duration::from_secs(60)).await;
                if ok && ran > 0 {
                    report.takeovers.push(killed.elapsed());
                }
                fleet.hosts[h].start();
                format!("kill -9 {name} ({ran} sessions)")
            }
            1 => {
                fleet.hosts[h].signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_secs(12)).await;
                fleet.hosts[h].signal(libc::SIGCONT);
                format!("pause {name} 12 s")
            }
            2 => {
                fleet.hosts[h].signal(libc::SIGTERM);
                fleet.hosts[h].wait(Duration::from_secs(60));
                fleet.hosts[h].start();
                format!("drain and restart {name}")
            }
            3 => {
                let secs = 2 + rng.below(9);
                moto.signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_secs(secs)).await;
                moto.signal(libc::SIGCONT);
                format!("store unreachable {secs} s")
            }
            _ => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "quiet 3 s".to_string()
            }
        };
        if !settle(&fleet, sessions, Duration::from_secs(60)).await {
            report.not_recovered += 1;
            eprintln!("chaos: not recovered after {step}");
        }
        report.manifest_regressions += check_manifests(&fleet, &mut newest).await;
        eprintln!("chaos: {step}");
        report.steps.push(step);
    }
    {
        let o = fleet.app.oracle.lock().unwrap();
        report.double_runs = o.doubles.len();
        report.lost_logins = o.pairings.saturating_sub(sessions as u64);
    }
    fleet.stop().await;
    report
}

/// Waits until every session is connected exactly once; false after
/// `limit`.
async fn settle(fleet: &Fleet, sessions: usize, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if all_connected(&fleet.refs(), sessions).await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

async fn wait_backups(fleet: &Fleet, sessions: usize) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        let mut with = 0;
        for h in fleet.refs() {
            if let Some(list) = h.get("/v1/sessions").await {
                with += list["sessions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| !s["last_backup"].is_null())
                    .count();
            }
        }
        if with >= sessions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Compares each session's newest good backup, by (epoch, created), with
/// the newest seen before; returns the regressions found.
async fn check_manifests(fleet: &Fleet, newest: &mut BTreeMap<String, (u64, String)>) -> usize {
    let mut regressions = 0;
    for h in fleet.refs() {
        let Some(list) = h.get("/v1/sessions").await else {
            continue;
        };
        for s in list["sessions"].as_array().into_iter().flatten() {
            let id = s["id"].as_str().unwrap_or_default().to_string();
            let Some(backups) = h.get(&format!("/v1/sessions/{id}/backups")).await else {
                continue;
            };
            let all = backups["backups"].as_array().cloned().unwrap_or_default();
            let good = all
                .iter()
                .filter(|b| b["damaged"].is_null())
                .map(|b| {
                    (
                        b["epoch"].as_u64().unwrap_or(0),
                        b["created"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .max();
            let Some(good) = good else { continue };
            if let Some(before) = newest.get(&id)
                && good < *before
            {
                // Explained only when the one seen before was a late
                // backup that the lineage refused since.
                let refused = all.iter().any(|b| {
                    b["created"].as_str() == Some(before.1.as_str())
                        && b["damaged"]["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("after the session moved"))
                });
                if !refused {
                    eprintln!("chaos: {id}: newest good backup went from {before:?} to {good:?}");
                    regressions += 1;
                }
            }
            newest.insert(id, good);
        }
    }
    regressions
}
