//! `vigil hosts`: the fleet's membership records, read from the store (no
//! host needs to run here).
//!
//! Exit codes: 0 shown, 1 error (store unreachable).

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use vigil::backup::Backups;
use vigil::config::Config;
use vigil::fleet::{FleetStore, HostState, membership};

pub async fn hosts(config_path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let backups = Backups::open(&config.backup)?;
    let records = membership::snapshot(&FleetStore::of(&backups)).await?;
    if as_json {
        println!(
            "{}",
            vigil::untrusted::pretty_json(&json!({ "hosts": records })).expect("JSON prints")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        eprintln!("no host has joined a fleet on {}", backups.store_url());
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now();
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            let state = match &r.state {
                HostState::Active => "active".to_string(),
                HostState::Draining => "draining".to_string(),
                HostState::Dead { by } => format!("dead (declared by {by})"),
            };
            let sessions = if r.owned.is_empty() {
                "-".to_string()
            } else {
                r.owned
                    .keys()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let ago = (now - r.renewed).num_seconds().max(0);
            [
                r.host.to_string(),
                r.incarnation.short().to_string(),
                state,
                format!("{ago}s ago"),
                format!("{} {sessions}", r.owned.len()),
            ]
        })
        .collect();
    let header = ["HOST", "RUN", "STATE", "RENEWED", "SESSIONS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header.map(str::to_string)).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
    eprintln!(
        "RENEWED is as each host's own clock wrote it; hosts judge each other only by records changing."
    );
    Ok(ExitCode::SUCCESS)
}

/// `vigil drain`: asks the running host to hand every session over.
pub async fn drain(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let client = vigil::api::client::ApiClient::for_config(&config)?;
    match client.drain().await {
        Ok(answer) => {
            let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
            if sessions.is_empty() {
                eprintln!("drained: this host ran no session");
            }
            for s in &sessions {
                let id = s["session"].as_str().unwrap_or("?");
                let backup = s["backup"]
                    .as_str()
                    .map_or("no backup (not connected)".to_string(), |b| {
                        format!("backup {b}")
                    });
                let released = if s["released"].as_bool() == Some(true) {
                    "released"
                } else {
                    "NOT released (the store did not answer; it moves after a lease)"
                };
                eprintln!("{id}: handed over with {backup}; {released}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(super::status::report(&e)),
    }
}
