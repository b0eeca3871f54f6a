//! One module per group of subcommands. Each turns parsed arguments into
//! library calls and prints the outcome; exit codes are documented on each
//! command.

pub mod events;
pub mod exit;
pub mod fixture;
pub mod login;
pub mod policy;
pub mod run;
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

/// `text` safe to print on a terminal: control characters (escape
/// sequences, carriage returns, newlines...) and the invisible characters
/// that reorder text are shown as `\u{..}` instead of acting. For text
/// from web pages and policies, which Vigil does not control.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let acts = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn page_text_cannot_drive_the_terminal() {
        assert_eq!(printable("2@abc,DEF=="), "2@abc,DEF==");
        assert_eq!(
            printable("a\u{1b}[2Jb\r\nc\u{202e}d\u{9b}"),
            "a\\u{1b}[2Jb\\u{d}\\u{a}c\\u{202e}d\\u{9b}"
        );
    }
}
