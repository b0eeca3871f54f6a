//! `vigil journal SESSION [--since ...]`: the decision journal of a session
//! as JSON lines on stdout, read from `data_dir/journal` of this host (no
//! running host needed; the admin API serves the same lines).
//!
//! Exit codes: 0 printed (nothing when no call is that recent), 1 error
//! (bad config, no journal for the session).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use vigil::config::Config;
use vigil::id::SessionId;
use vigil::journal::{self, Since};

#[derive(clap::Args)]
pub struct Args {
    /// The session, as named in vigil.toml.
    session: SessionId,
    /// Only calls made this long ago or later ("10m", "2h") or since an
    /// RFC 3339 time ("2026-01-01T10:00:00Z").
    #[arg(long, value_parser = parse_since)]
    since: Option<Since>,
}

fn parse_since(text: &str) -> Result<Since, String> {
    text.parse()
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let dir = journal::dir(&config.data_dir);
    let path = journal::path(&dir, &args.session);
    let lines = journal::read(&dir, &args.session, args.since.unwrap_or_default())?;
    if lines.is_empty() && !path.exists() {
        anyhow::bail!(
            "no journal for session {} at {} (it has made no policy decision yet, or [journal] enabled = false)",
            args.session,
            path.display()
        );
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        // The exact JSON, with what JSON leaves raw (bidi controls) escaped.
        writeln!(out, "{}", vigil::untrusted::json_for_terminal(&line))?;
    }
    Ok(ExitCode::SUCCESS)
}
