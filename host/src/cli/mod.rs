//! One module per group of subcommands. Each turns parsed arguments into
//! library calls and prints the outcome; exit codes are documented on each
//! command.

pub mod exit;
pub mod fixture;
pub mod policy;
pub mod run;
pub mod scaffold;
pub mod status;
pub mod storage;

/// Logs go to stderr so that stdout stays machine-readable (`--json`).
/// `RUST_LOG` overrides the default level (`info`; tokio_cron_scheduler at `warn`, chromiumoxide only at
/// `error`, as it warns about every DevTools event newer than its protocol
/// types, which Chromium sends all the time).
/// Colours only when stderr is a terminal, so journald and log files get
/// plain text.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,chromiumoxide=error,tokio_cron_scheduler=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
