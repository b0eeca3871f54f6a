//! `vigil events [--follow] [--json]`: what the running host reported
//! lately (the events webhooks carry), from its admin API. Without
//! `--follow`, the events the host keeps in memory (its last 200) and
//! exit; with it, those and then each new one as it happens, until Ctrl-C.
//!
//! One line per event: a readable summary, or with `--json` the body a
//! webhook receives. Notices (events lost by a client that fell behind,
//! the host going away) go to stderr.
//!
//! Exit codes:
//!   0  done (or stopped with Ctrl-C / SIGTERM)
//!   1  error
//!   5  no host answers at `[api] listen`, or it went away while followed

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use vigil::api::client::{ApiClient, ClientError, StreamItem};
use vigil::config::Config;

use super::exit::NOT_RUNNING;
use super::printable;
use super::status::report;

#[derive(clap::Args)]
pub struct Args {
    /// Keep printing new events as they happen.
    #[arg(short, long)]
    follow: bool,
    /// One JSON body per line (as webhooks receive it) instead of a summary.
    #[arg(long)]
    json: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let client = ApiClient::for_config(&config)?;
    let outcome = if args.follow {
        tokio::select! {
            outcome = follow(&client, args.json) => outcome,
            stopped = super::wait_for_stop() => {
                stopped?;
                Ok(ExitCode::SUCCESS)
            }
        }
    } else {
        recent(&client, args.json).await
    };
    Ok(outcome.unwrap_or_else(|e| report(&e)))
}

async fn recent(client: &ApiClient, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client.recent_events().await?;
    for body in answer["events"].as_array().into_iter().flatten() {
        println!("{}", line(body, json));
    }
    Ok(ExitCode::SUCCESS)
}

async fn follow(client: &ApiClient, json: bool) -> Result<ExitCode, ClientError> {
    // After 0: the kept events first, then the new ones, with no gap.
    let mut stream = client.events(Some(0)).await?;
    loop {
        match stream.next().await {
            Ok(Some(StreamItem::Event { body, .. })) => println!("{}", line(&body, json)),
            Ok(Some(StreamItem::Lagged { missed })) => {
                eprintln!("vigil events: fell behind the host; {missed} event(s) were lost")
            }
            Ok(None) => {
                eprintln!("vigil events: the host ended the stream (it is shutting down)");
                return Ok(ExitCode::from(NOT_RUNNING));
            }
            Err(e) => {
                eprintln!("vigil events: lost the host: {e}");
                return Ok(ExitCode::from(NOT_RUNNING));
            }
        }
    }
}

fn line(body: &Value, json: bool) -> String {
    if json {
        // The exact body, with what JSON leaves raw (bidi controls) escaped.
        return vigil::untrusted::line_json(body).expect("a JSON value prints");
    }
    let text = |v: &Value| v.as_str().map(|s| printable(s).into_owned());
    let event = text(&body["event"]).unwrap_or_else(|| "?".into());
    format!(
        "{}  {event}  {}",
        text(&body["timestamp"]).unwrap_or_else(|| "-".into()),
        summary(&event, &body["data"])
    )
}

/// What happened, in a few words; text from pages and policies escaped.
fn summary(event: &str, data: &Value) -> String {
    let s = |key: &str| {
        data[key]
            .as_str()
            .map_or_else(|| "-".to_owned(), |v| printable(v).into_owned())
    };
    let millis = |key: &str| {
        data[key]
            .as_u64()
            .map_or_else(|| "?".into(), |n| format!("{n} ms"))
    };
    match event {
        "session.state_changed" => format!(
            "{}: {} -> {} ({})",
            s("session"),
            s("from"),
            s("to"),
            s("reason")
        ),
        "session.needs_login" => match data["qr"].as_str() {
            Some(qr) => format!(
                "{}: needs a login; QR code: {}",
                s("session"),
                printable(qr)
            ),
            None => format!("{}: needs a login; no readable QR code", s("session")),
        },
        "backup.saved" => format!(
            "{}: backup {} ({} bytes, {})",
            s("session"),
            s("backup"),
            data["size_bytes"].as_u64().unwrap_or(0),
            millis("duration_ms")
        ),
        "backup.failed" => format!("{}: {}", s("session"), s("error")),
        "restore.done" => match data["backup"].as_str() {
            Some(backup) => format!(
                "{}: restored backup {} ({})",
                s("session"),
                printable(backup),
                millis("duration_ms")
            ),
            None => format!(
                "{}: profile on disk used ({})",
                s("session"),
                millis("duration_ms")
            ),
        },
        "restore.failed" => format!("{}: backup {}: {}", s("session"), s("backup"), s("error")),
        "policy.reloaded" => format!(
            "{}: plugin {} ({})",
            s("file"),
            s("plugin"),
            s("plugin_sha256")
        ),
        "policy.rejected" => format!(
            "{}: {} (still serving: {})",
            s("file"),
            s("reason"),
            s("still_serving")
        ),
        "policy.removed" => s("file"),
        "session.moved" => format!(
            "{}: from {} to {} (epoch {})",
            s("session"),
            s("from"),
            s("to"),
            data["epoch"]
        ),
        "host.joined" => format!("{} joined as run {}", s("host"), s("incarnation")),
        "host.lost" => format!(
            "{} (run {}) declared dead by {}",
            s("host"),
            s("incarnation"),
            s("by")
        ),
        _ => printable(&data.to_string()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_event_reads_as_one_line() {
        let body = json!({
            "version": 1,
            "event": "session.state_changed",
            "timestamp": "2026-03-01T02:00:00.500Z",
            "data": { "session": "main", "from": "needs-login", "to": "connected", "reason": "probe: connected" },
        });
        assert_eq!(
            line(&body, false),
            "2026-03-01T02:00:00.500Z  session.state_changed  main: needs-login -> connected (probe: connected)"
        );
        assert_eq!(line(&body, true), body.to_string());
        assert_eq!(
            summary(
                "session.needs_login",
                &json!({ "session": "main", "qr": null })
            ),
            "main: needs a login; no readable QR code"
        );
    }

    #[test]
    fn page_text_in_an_event_is_escaped() {
        let data = json!({ "session": "main", "qr": "x\u{1b}]0;pwned\u{7}\nnext" });
        let shown = summary("session.needs_login", &data);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("\\x1b]0;pwned"), "{shown}");
    }
}
