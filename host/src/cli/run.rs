//! `vigil run`: the service. Starts the fixture app when the config asks for
//! it, then the supervisor and the admin API, tells systemd how it goes
//! (when started by systemd), and drains everything on SIGTERM / Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use vigil::api;
use vigil::config::Config;
use vigil::supervisor::Supervisor;
use vigil::systemd::Notifier;
use vigil_fixture::{Fixture, FixtureOptions};

/// systemd gets READY=1 at the latest this long after start, even if a
/// session is still restoring or launching (`/readyz` tells the rest).
const READY_BOUND: Duration = Duration::from_secs(60);

pub async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    // Before any browser starts: a taken port or a missing token fails fast.
    let listener = api::Listener::bind(&config).await?;
    let notifier = Notifier::from_env()?;
    let fixture = match &config.fixture {
        Some(f) => {
            let fixture = Fixture::start(FixtureOptions {
                listen: f.listen,
                idle_after: f.idle_after_secs.map(|s| s.get()),
                auto_pair_after: f.auto_pair_after_secs.map(|s| s.get()),
                state_file: f.state_file.clone(),
                code_rotation: f
                    .code_rotation_secs
                    .map_or(vigil_fixture::DEFAULT_CODE_ROTATION, |s| s.get()),
            })
            .await
            .context("[fixture]")?;
            tracing::info!(url = %fixture.url(), "fixture app serving");
            Some(fixture)
        }
        None => None,
    };
    let supervisor = Supervisor::start(&config).await?;
    let watchdog = match supervisor.fleet() {
        Some(fleet) => Some(start_watchdog(std::sync::Arc::clone(fleet))?),
        None => None,
    };
    let host = api::Host::of(&supervisor);
    let api = listener.serve(host.clone(), Vec::new());
    let heartbeat = notifier.map(|n| {
        let (ready, alive, status) = (host.clone(), host.clone(), host.clone());
        n.start(
            async move { ready.wait_ready().await },
            READY_BOUND,
            move || alive.liveness(),
            move || status.summary(),
        )
    });
    super::wait_for_stop().await?;
    if let Some(heartbeat) = heartbeat {
        heartbeat
            .stop("closing browsers, taking shutdown backups")
            .await;
    }
    supervisor.shutdown(config.service.shutdown_timeout).await;
    api.shutdown().await;
    if let Some(fixture) = fixture {
        fixture.shutdown().await;
    }
    if let Some(beats) = watchdog {
        // Closing its stdin ends the watchdog (no browser is left to kill).
        beats.abort();
    }
    Ok(ExitCode::SUCCESS)
}

/// How often Vigil tells the browser watchdog how long its browsers may
/// still run.
const WATCHDOG_BEAT: Duration = Duration::from_millis(250);

/// Starts the browser watchdog (`vigil browser-watchdog`, in a process
/// group of its own so that a pause of Vigil's group does not pause it)
/// and the task that feeds it the fleet's run budget.
fn start_watchdog(
    fleet: std::sync::Arc<vigil::fleet::Fleet>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncWriteExt;
    let exe = std::env::current_exe().context("cannot find the vigil executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("browser-watchdog")
        .stdin(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .context("cannot start the browser watchdog")?;
    let mut stdin = child.stdin.take().context("the watchdog's stdin")?;
    tracing::info!(pid = child.id(), "browser watchdog started");
    Ok(tokio::spawn(async move {
        loop {
            let budget = fleet
                .run_budget()
                .map_or(0, |b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX));
            if let Err(e) = stdin.write_all(format!("{budget}\n").as_bytes()).await {
                tracing::error!(error = %e, "the browser watchdog is gone");
                return;
            }
            tokio::time::sleep(WATCHDOG_BEAT).await;
        }
        // The child is reaped by tokio when it ends.
    }))
}
