//! The `vigil` command line: parse, call the library, print. No decisions
//! live here.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil::config::LogFormat;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Keeps logged-in browser sessions alive"
)]
struct Cli {
    /// The service configuration.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CONFIG",
        default_value = "vigil.toml"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: restore, launch and keep every configured session
    /// alive until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown,
    /// 1 when it cannot start (bad config, store or policies, the API's
    /// address taken, or a non-loopback API address without a token).
    Run,
    /// Check and test policies (no browser, no network).
    Policy {
        #[command(subcommand)]
        command: cli::policy::Command,
    },
    /// Log a session in from this terminal: wait for its login screen, draw
    /// its QR code here (redrawn as the page rotates it) and return once
    /// the session is connected.
    ///
    /// Exit codes: 0 connected, 1 error, 5 no host running, 8 no such
    /// session, 9 timed out, 10 the session failed or stopped.
    Login(cli::login::Args),
    /// Print what the running host reported lately (the events webhooks
    /// carry); with --follow, keep printing new ones.
    ///
    /// Exit codes: 0 done, 1 error, 5 no host running (or it went away).
    Events(cli::events::Args),
    /// Serve the fixture web app (a stand-in web app with a persistent login).
    Fixture(cli::fixture::Args),
    /// Print a session's decision journal: every policy call, one JSON
    /// line each (read from data_dir/journal on this host). Exit codes: 0
    /// printed, 1 error.
    Journal(cli::journal::Args),
    #[command(flatten)]
    Storage(cli::storage::Command),
    #[command(flatten)]
    Host(cli::status::Command),
    /// Show the hosts of the fleet sharing this config's store: host, run,
    /// state, last renewal, sessions owned (read from the store). Exit
    /// codes: 0 shown, 1 error.
    Hosts {
        #[arg(long)]
        json: bool,
    },
    /// Internal: the browser watchdog `vigil run` starts beside itself in a
    /// fleet (kills its browsers when Vigil stops confirming they may run).
    #[command(hide = true, name = "browser-watchdog")]
    BrowserWatchdog,
    /// Hand every session of the running host over to the other hosts of
    /// the fleet (backup, stop, release) and take no more; the host keeps
    /// running until stopped. For a Kubernetes preStop hook. Exit codes: 0
    /// drained, 1 error, 5 no running host.
    Drain,
    /// Add, remove and list sessions while Vigil runs (the catalog in the
    /// backup store).
    Session {
        #[command(subcommand)]
        command: cli::session::Command,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match cli::log_format(std::env::var("VIGIL_LOG_FORMAT").ok(), &cli.config) {
        Ok(format) => format,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    cli::init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run => cli::run::run(&cli.config).await,
            Command::Policy { command } => cli::policy::run(&cli.config, command).await,
            Command::Login(args) => cli::login::run(&cli.config, args).await,
            Command::Events(args) => cli::events::run(&cli.config, args).await,
            Command::Fixture(args) => cli::fixture::run(args).await,
            Command::Journal(args) => cli::journal::run(&cli.config, args),
            Command::Storage(command) => cli::storage::run(&cli.config, command).await,
            Command::Host(command) => cli::status::run(&cli.config, command).await,
            Command::Session { command } => cli::session::run(&cli.config, command).await,
            Command::Hosts { json } => cli::fleet::hosts(&cli.config, json).await,
            Command::Drain => cli::fleet::drain(&cli.config).await,
            Command::BrowserWatchdog => {
                vigil::browser::watchdog::serve()?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            match log_format {
                // A log collector reads stderr as JSON lines: the last words
                // must be one too.
                LogFormat::Json => tracing::error!(error = causes(&e), "vigil stopped"),
                // The causes may quote a policy or a page.
                LogFormat::Text => eprintln!(
                    "error: {}",
                    vigil::untrusted::for_terminal_lines(&causes(&e))
                ),
            }
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, each said once: our errors often name their
/// cause in their own message already ("cannot read X: No such file..."),
/// and anyhow's `{:#}` would repeat it.
fn causes(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}
