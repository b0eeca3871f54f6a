//! `vigil fixture`: serve the fixture web app (a stand-in for a web app with
//! a persistent login) until Ctrl-C or SIGTERM. Prints its URL on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vigil_fixture::{Fixture, FixtureOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on. Keep the port stable across browser restarts:
    /// Chromium files the page's IndexedDB under the origin, port included.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Mark a page idle when it reports no user input for this many seconds.
    #[arg(long, value_name = "SECS")]
    idle_after: Option<f64>,
    /// Pair every login code by itself after this many seconds (a demo with
    /// no phone to scan the code).
    #[arg(long, value_name = "SECS")]
    auto_pair: Option<f64>,
    /// Keep paired devices in this JSON file across restarts.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Show a new login QR code every this many seconds; the code it
    /// replaces can no longer be paired.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    code_rotation: f64,
}

fn seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("--{flag}: {s} is not a number of seconds"))
        })
        .transpose()
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fixture = Fixture::start(FixtureOptions {
        listen: args.listen,
        idle_after: seconds("idle-after", args.idle_after)?,
        auto_pair_after: seconds("auto-pair", args.auto_pair)?,
        state_file: args.state,
        code_rotation: seconds("code-rotation", Some(args.code_rotation))?
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow::anyhow!("--code-rotation must be more than 0 seconds"))?,
    })
    .await?;
    println!("{}", fixture.url());
    super::wait_for_stop().await?;
    fixture.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
