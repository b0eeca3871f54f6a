//! `vigil status | screenshot | restart`: ask the running host, through its
//! admin API (address from `[api] listen`, token as `vigil run` found it).
//!
//! Exit codes: see [`super::exit`] (3 refused in the session's current
//! state, 5 no host answers at `[api] listen`, 8 no such session).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use super::printable;
use anyhow::Context;
use serde_json::Value;
use vigil::api::client::{ApiClient, ClientError};
use vigil::config::Config;
use vigil::id::SessionId;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show every session of the running host: state, since when, last
    /// backup, last policy decision.
    ///
    /// Exit codes: 0 shown, 1 error, 5 no host running.
    Status {
        /// The host's JSON (GET /v1/sessions) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Save a PNG of a session's page (the login QR code, for instance).
    ///
    /// Exit codes: 0 saved, 1 error, 3 no browser running for the session,
    /// 5 no host running, 8 no such session.
    Screenshot {
        /// The session, as named in vigil.toml.
        session: SessionId,
        /// Where to write the PNG (`-` for stdout). Default: SESSION.png.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Close a session's browser and start it again.
    ///
    /// Exit codes: 0 restarting, 1 error, 5 no host running, 8 no such
    /// session.
    Restart {
        /// The session, as named in vigil.toml.
        session: SessionId,
    },
}

pub async fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let client = ApiClient::for_config(&config)?;
    let outcome = match command {
        Command::Status { json } => status(&client, json).await,
        Command::Screenshot { session, output } => {
            screenshot(&client, &session, output.as_deref()).await
        }
        Command::Restart { session } => restart(&client, &session).await,
    };
    Ok(match outcome {
        Ok(code) => code,
        Err(e) => report(&e),
    })
}

/// Prints an API failure and turns it into the documented exit code.
pub fn report(e: &ClientError) -> ExitCode {
    eprintln!("error: {}", printable(&e.to_string()));
    super::exit::code(super::exit::of_client_error(e))
}

async fn status(client: &ApiClient, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client.sessions().await?;
    if json {
        println!(
            "{}",
            vigil::untrusted::pretty_json(&answer).expect("a JSON value prints")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    let now = SystemTime::now();
    let rows: Vec<[String; 5]> = sessions.iter().map(|s| row(s, now)).collect();
    print!(
        "{}",
        table(
            ["SESSION", "STATE", "SINCE", "LAST BACKUP", "LAST DECISION"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// One session's cells; the decision and errors may quote a policy or a
/// page, so every text cell is escaped for the terminal.
fn row(s: &Value, now: SystemTime) -> [String; 5] {
    let text = |v: &Value| printable(v.as_str().unwrap_or("-")).into_owned();
    let backup = match (&s["last_backup"], s["last_backup_error"].as_str()) {
        (_, Some(error)) => format!("FAILED: {}", printable(&shorten(error, 60))),
        (Value::Null, None) => "never".to_owned(),
        (b, None) => format!("{} ago", ago(&b["at"], now)),
    };
    let decision = match &s["last_decision"] {
        Value::Null => "-".to_owned(),
        d => format!(
            "{}: {}",
            printable(d["role"].as_str().unwrap_or("?")),
            printable(&shorten(d["decision"].as_str().unwrap_or("?"), 60))
        ),
    };
    let state = match &s["owner"] {
        Value::Null => text(&s["state"]),
        o => format!(
            "{} (on {}, epoch {})",
            text(&s["state"]),
            o["host"].as_str().unwrap_or("?"),
            o["epoch"]
        ),
    };
    [
        text(&s["id"]),
        state,
        format!("{} ago", ago(&s["since"], now)),
        backup,
        decision,
    ]
}

/// "42s", "5m", "3h", "2d" since an RFC 3339 time.
fn ago(at: &Value, now: SystemTime) -> String {
    let Some(at) = at.as_str().and_then(|t| humantime::parse_rfc3339(t).ok()) else {
        return "?".into();
    };
    let secs = now.duration_since(at).unwrap_or_default().as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}

/// Columns padded to their widest cell; the last one is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

async fn screenshot(
    client: &ApiClient,
    session: &SessionId,
    output: Option<&Path>,
) -> Result<ExitCode, ClientError> {
    let png = client.screenshot(session).await?;
    let target = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{session}.png")));
    let written = if target == Path::new("-") {
        use std::io::Write;
        std::io::stdout()
            .write_all(&png)
            .context("writing to stdout")
    } else {
        std::fs::write(&target, &png).with_context(|| format!("writing {}", target.display()))
    };
    if let Err(e) = written {
        eprintln!("error: {e:#}");
        return Ok(ExitCode::from(1));
    }
    if target != Path::new("-") {
        eprintln!(
            "saved a screenshot of {session} to {} ({} bytes)",
            target.display(),
            png.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn restart(client: &ApiClient, session: &SessionId) -> Result<ExitCode, ClientError> {
    let answer = client.restart(session).await?;
    eprintln!(
        "{session}: {}",
        answer["message"].as_str().unwrap_or("restarting")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_every_column_but_the_last() {
        let rows = [["main".to_string(), "connected".to_string(), "x".to_string()]];
        assert_eq!(
            table(["SESSION", "STATE", "NOTE"], &rows),
            "SESSION  STATE      NOTE\nmain     connected  x\n"
        );
    }

    #[test]
    fn ages_read_at_a_glance() {
        let now = humantime::parse_rfc3339("2025-03-01T12:00:00Z").unwrap();
        let at = |t: &str| ago(&Value::from(t), now);
        assert_eq!(at("2025-03-01T11:59:18.500Z"), "41s");
        assert_eq!(at("2025-03-01T11:00:00Z"), "1h");
        assert_eq!(at("2025-02-27T12:00:00Z"), "2d");
        assert_eq!(ago(&Value::Null, now), "?");
    }
}
