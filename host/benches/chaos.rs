//! A seeded chaos run on a fleet of real `vigil run` processes (3 hosts,
//! 6 sessions, 6 s leases, a moto server of its own): hosts killed with
//! everything they started, paused past their lease, drained and
//! restarted, the store paused, each followed by a wait until every
//! session is connected again. Prints double runs, lost logins, manifest
//! regressions (all must be 0) and the takeover time after kills (p50,
//! max). About 50 steps, 10 minutes; a short run is in tests/fleet_run.rs.
//!
//! `cargo bench -p vigil --bench chaos [-- --steps N --seed S]`

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (mut steps, mut seed) = (50, 1);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().and_then(|n| n.parse().ok()).unwrap_or(steps),
            "--seed" => seed = args.next().and_then(|n| n.parse().ok()).unwrap_or(seed),
            _ => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(common::chaos::run(seed, steps, 3, 6));
    println!("chaos: seed {seed}");
    report.print();
    let clean =
        report.double_runs == 0 && report.lost_logins == 0 && report.manifest_regressions == 0;
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
