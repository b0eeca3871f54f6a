//! `vigil session add | remove | list`: the sessions of the catalog.
//! `add` and `remove` ask the running host (it starts or stops the
//! session, and writes the catalog in the store); `list` reads the catalog
//! from the store itself, so it works with no host running.
//!
//! Exit codes: see [`super::exit`] (8: no such session, 11: the id
//! already exists, 12: the session is defined in a vigil.toml).

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};
use vigil::api::client::{ApiClient, ClientError};
use vigil::backup::Backups;
use vigil::config::{Config, SessionConfig};
use vigil::fleet::{FleetStore, Origin, catalog};
use vigil::id::SessionId;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Add a session to the running host. It is kept in the store's
    /// catalog, so it survives restarts.
    ///
    /// Exit codes: 0 added and starting, 1 error, 5 no host running, 11 the
    /// id already exists.
    Add {
        /// The new session's id (letters, digits, '-', '_', '.').
        id: SessionId,
        /// The web app it keeps open.
        #[arg(long)]
        url: String,
        /// A JavaScript expression answering 'connected', 'needs-login' or
        /// anything else (see README "The probe").
        #[arg(long, conflicts_with_all = ["probe_connected", "probe_needs_login"])]
        probe_script: Option<String>,
        /// A CSS selector present when the page is connected.
        #[arg(long, requires = "probe_needs_login")]
        probe_connected: Option<String>,
        /// A CSS selector present when the page asks for a login.
        #[arg(long, requires = "probe_connected")]
        probe_needs_login: Option<String>,
    },
    /// Stop a session (after a final backup) and remove it from the
    /// catalog. Its backups stay unless --forget.
    ///
    /// Exit codes: 0 removed, 1 error, 5 no host running, 8 no such
    /// session, 12 the session is defined in a vigil.toml (remove it there).
    Remove {
        id: SessionId,
        /// Also delete every backup of the session.
        #[arg(long)]
        forget: bool,
    },
    /// List the sessions of the catalog (read from the store; no host
    /// needs to run).
    ///
    /// Exit codes: 0 listed, 1 error (store unreachable).
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let outcome = match command {
        Command::List { json } => return list(&config, json).await,
        Command::Add {
            id,
            url,
            probe_script,
            probe_connected,
            probe_needs_login,
        } => {
            let client = ApiClient::for_config(&config)?;
            let mut body = json!({ "id": id, "url": url });
            if let Some(script) = probe_script {
                body["probe"] = json!({ "script": script });
            } else if let (Some(c), Some(n)) = (probe_connected, probe_needs_login) {
                body["probe"] = json!({ "connected": c, "needs_login": n });
            }
            client.add_session(body).await.map(|answer| {
                eprintln!(
                    "{id}: added; {}",
                    answer["state"].as_str().unwrap_or("starting")
                );
                ExitCode::SUCCESS
            })
        }
        Command::Remove { id, forget } => {
            let client = ApiClient::for_config(&config)?;
            client.remove_session(&id, forget).await.map(|answer| {
                let backup = answer["final_backup"]
                    .as_str()
                    .map_or(String::new(), |b| format!("; final backup {b}"));
                let forgotten = if forget {
                    format!(
                        "; {} objects deleted from the store",
                        answer["forgotten_objects"].as_u64().unwrap_or(0)
                    )
                } else {
                    "; its backups stay".to_string()
                };
                eprintln!("{id}: removed{backup}{forgotten}");
                ExitCode::SUCCESS
            })
        }
    };
    Ok(match outcome {
        Ok(code) => code,
        Err(e) => report(&e),
    })
}

fn report(e: &ClientError) -> ExitCode {
    super::status::report(e)
}

async fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let backups = Backups::open(&config.backup)?;
    let stored = catalog::load(&FleetStore::of(&backups)).await?.value;
    let mut rows: Vec<(SessionConfig, String)> = stored
        .sessions
        .values()
        .map(|e| {
            let from = match &e.origin {
                Origin::Config { hosts } => format!(
                    "vigil.toml ({})",
                    hosts
                        .iter()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Origin::Api { by, .. } => format!("api ({by})"),
            };
            (e.spec.clone(), from)
        })
        .collect();
    for s in &config.sessions {
        if !stored.sessions.contains_key(&s.id) {
            rows.push((s.clone(), "vigil.toml (not in the catalog yet)".into()));
        }
    }
    rows.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    if json {
        let sessions: Vec<Value> = rows
            .iter()
            .map(|(spec, from)| {
                let mut v = serde_json::to_value(spec).expect("a session serializes");
                v["from"] = Value::from(from.clone());
                v
            })
            .collect();
        println!(
            "{}",
            vigil::untrusted::pretty_json(&json!({ "sessions": sessions })).expect("JSON prints")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows
        .iter()
        .map(|(s, _)| s.id.as_str().len())
        .max()
        .unwrap_or(0)
        .max("SESSION".len());
    let url_width = rows
        .iter()
        .map(|(s, _)| s.url.as_str().len())
        .max()
        .unwrap_or(0)
        .max("URL".len());
    println!("{:<width$}  {:<url_width$}  FROM", "SESSION", "URL");
    for (spec, from) in &rows {
        println!(
            "{:<width$}  {:<url_width$}  {from}",
            spec.id.as_str(),
            spec.url.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
