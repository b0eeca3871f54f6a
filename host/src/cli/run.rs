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
    Ok(ExitCode::SUCCESS)
}
