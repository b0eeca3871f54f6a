//! `vigil run`: the service. Starts the fixture app when the config asks for
//! it, then the supervisor, and drains everything on SIGTERM / Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use vigil::config::Config;
use vigil::fixture::{Fixture, FixtureOptions};
use vigil::supervisor::Supervisor;

pub async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let fixture = match &config.fixture {
        Some(f) => {
            let fixture = Fixture::start(FixtureOptions {
                listen: f.listen,
                idle_after: f.idle_after_secs.map(|s| s.get()),
                auto_pair_after: f.auto_pair_after_secs.map(|s| s.get()),
                state_file: f.state_file.clone(),
            })
            .await
            .context("[fixture]")?;
            tracing::info!(url = %fixture.url(), "fixture app serving");
            Some(fixture)
        }
        None => None,
    };
    let supervisor = Supervisor::start(&config).await?;
    super::wait_for_stop().await?;
    supervisor
        .shutdown(Duration::from_secs(config.service.shutdown_timeout_secs))
        .await;
    if let Some(fixture) = fixture {
        fixture.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}
