//! One module per group of subcommands. Each turns parsed arguments into
//! library calls and prints the outcome; exit codes are documented on each
//! command.

pub mod events;
pub mod exit;
pub mod fixture;
pub mod fleet;
pub mod journal;
pub mod login;
pub mod policy;
pub mod run;
pub mod scaffold;
pub mod session;
pub mod status;
pub mod storage;

use vigil::config::LogFormat;

/// Logs go to stderr so that stdout stays machine-readable (`--json`).
/// `RUST_LOG` overrides the default level (`info`; tokio_cron_scheduler at `warn`, chromiumoxide only at
/// `error`, as it warns about every DevTools event newer than its protocol
/// types, which Chromium sends all the time).
/// Text has colours only when stderr is a terminal, so journald and log
/// files get plain text. Every message and field value is escaped
/// (newlines, control characters, bidi controls) and cut when long, so no
/// text can forge a line. JSON is one object per line: `timestamp`,
/// `level`, `target`, `message` and the event's fields at the top level.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,chromiumoxide=error,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Text from policies and pages reaches the log in fields and messages:
    // both formats escape it (see vigil::untrusted), whoever logged it.
    match format {
        LogFormat::Text => builder
            .with_writer(std::io::stderr)
            .fmt_fields(vigil::untrusted::TextFields)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => builder
            .with_writer(vigil::untrusted::JsonLines(std::io::stderr))
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// The log format: `VIGIL_LOG_FORMAT` (`text` or `json`), else `[log]
/// format` of the config at `config`, else text.
pub fn log_format(env: Option<String>, config: &std::path::Path) -> Result<LogFormat, String> {
    match env.filter(|v| !v.trim().is_empty()) {
        Some(v) => v.parse().map_err(|e| format!("VIGIL_LOG_FORMAT: {e}")),
        None => Ok(vigil::config::LogConfig::peek(config).unwrap_or_default()),
    }
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

/// `text` from a web page or a policy, safe to print on a terminal (see
/// [`vigil::untrusted`]).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    vigil::untrusted::for_terminal(text)
}
