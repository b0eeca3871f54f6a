//! `vigil login SESSION`: log a session in from the terminal. Waits for its
//! login screen, draws the page's QR code in the terminal (redrawn when the
//! page rotates it), and returns once the session is connected. Everything
//! goes through the running host's admin API; a host still starting (not
//! answering yet, or not yet written the token it generates) is waited for
//! within the same `--timeout`.
//!
//! Exit codes (see `exit`):
//!   0  the session is connected (or already was)
//!   1  error (the host answered with an error, bad config, ...)
//!   5  no host answered at `[api] listen` within `--timeout`
//!   8  no such session on the host
//!   9  `--timeout` ran out before the session connected
//!   10 the session failed or stopped: it will not connect without an
//!      operator (`vigil restart SESSION`, then try again)

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;
use vigil::api::client::{ApiClient, ClientError};
use vigil::config::Config;
use vigil::id::SessionId;
use vigil::qr::Modules;

use super::exit::{GAVE_UP, NOT_RUNNING, TIMED_OUT};
use super::printable;
use super::status::report;

/// What the host is while it does not answer (not a session state).
const UNREACHABLE: &str = "unreachable";

/// How often the session's state and QR code are looked at.
const POLL: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct Args {
    /// The session, as named in vigil.toml.
    session: SessionId,
    /// Give up after this many seconds without the session connecting.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    timeout: f64,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| anyhow::anyhow!("--timeout: {} is not a number of seconds", args.timeout))?;
    let config = Config::load(config_path)?;
    let mut screen = Screen::new(std::io::stdout().is_terminal());
    // An unknown session is exit 8, as for every command (`exit`).
    Ok(
        match wait_for_login(&config, &args.session, timeout, &mut screen).await {
            Ok(code) => code,
            Err(e) => report(&e),
        },
    )
}

async fn wait_for_login(
    config: &Config,
    session: &SessionId,
    timeout: Duration,
    screen: &mut Screen,
) -> Result<ExitCode, ClientError> {
    // A timeout too large for the clock means no timeout.
    let deadline = Instant::now().checked_add(timeout);
    let mut client = ApiClient::for_config(config)?;
    let mut last_state = String::new();
    loop {
        let detail = match client.session(session).await {
            Ok(detail) => detail,
            Err(e) if host_starting(&e, &client) => {
                if last_state != UNREACHABLE {
                    eprintln!("{e}; waiting for the host...");
                    last_state = UNREACHABLE.into();
                }
                if wait_or_give_up(deadline).await {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(NOT_RUNNING));
                }
                // The token `vigil run` generates is written as it starts.
                client = ApiClient::for_config(config)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let state = detail["state"].as_str().unwrap_or("unknown").to_owned();
        match state.as_str() {
            "connected" => {
                let already = screen.drawn.is_none() && last_state.is_empty();
                eprintln!(
                    "{session}: connected{}",
                    if already { " (already)" } else { "" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            "failed" | "stopped" => {
                eprintln!(
                    "{session} is {state}: {}; it will not connect by itself (try `vigil restart {session}`)",
                    printable(detail["reason"].as_str().unwrap_or("no reason given"))
                );
                return Ok(ExitCode::from(GAVE_UP));
            }
            "needs-login" => match client.login_qr(session).await {
                Ok(Some(qr)) => screen.show(session, &qr.text),
                Ok(None) => {}
                // The browser was between launches: look again next time.
                Err(e) if e.code() == Some("state_conflict") => {}
                Err(e) => return Err(e),
            },
            _ => {}
        }
        if state != last_state {
            match (state.as_str(), &screen.drawn) {
                ("needs-login", Some(_)) => {}
                (_, None) => eprintln!("{session} is {state}; waiting for its login screen..."),
                (_, Some(_)) => eprintln!("{session} is {state}..."),
            }
            last_state = state;
        }
        if wait_or_give_up(deadline).await {
            eprintln!(
                "{session}: not connected after {} s (it is {last_state}); giving up",
                timeout.as_secs_f64()
            );
            return Ok(ExitCode::from(TIMED_OUT));
        }
    }
}

/// No host answers yet, or it answered "no token" while none was found:
/// a host still starting.
fn host_starting(e: &ClientError, client: &ApiClient) -> bool {
    matches!(e, ClientError::Unreachable { .. })
        || (e.code() == Some("unauthorized") && !client.has_token())
}

/// Sleeps until the next look; true when `deadline` has passed instead.
async fn wait_or_give_up(deadline: Option<Instant>) -> bool {
    let left = deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()));
    if left.is_zero() {
        return true;
    }
    tokio::time::sleep(POLL.min(left)).await;
    false
}

/// What `vigil login` has drawn on stdout.
struct Screen {
    /// On a terminal, a new code replaces the old one in place.
    terminal: bool,
    /// The text of the code drawn last, and how many lines it took.
    drawn: Option<(String, usize)>,
}

impl Screen {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            drawn: None,
        }
    }

    /// Draws the code for `text` unless it is the one already shown.
    fn show(&mut self, session: &SessionId, text: &str) {
        if self.drawn.as_ref().is_some_and(|(shown, _)| shown == text) {
            return;
        }
        let picture = match Modules::encode(text) {
            Ok(modules) => modules.to_half_blocks(),
            Err(e) => {
                eprintln!("{session}: cannot draw its QR code: {e}");
                return;
            }
        };
        let mut out = String::new();
        match (&self.drawn, self.terminal) {
            // Back to the first line of the old drawing, and clear below.
            (Some((_, lines)), true) => out.push_str(&format!("\x1b[{lines}F\x1b[J")),
            (Some(_), false) => out.push_str("\nThe code changed:\n"),
            (None, _) => {}
        }
        out.push_str(&picture);
        out.push_str(&format!("Scan with the phone to log {session} in.\n"));
        // On a terminal the text (long for real apps) could wrap and spoil
        // the redraw; a script reading stdout gets it.
        if !self.terminal {
            out.push_str(&format!("Code text: {}\n", printable(text)));
        }
        let lines = out.matches('\n').count();
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
        self.drawn = Some((text.to_owned(), lines));
    }
}
