//! The `vigil` command line: parse, call the library, print. No decisions
//! live here.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Serve the fixture web app (a stand-in web app with a persistent login).
    Fixture(cli::fixture::Args),
    #[command(flatten)]
    Storage(cli::storage::Command),
    #[command(flatten)]
    Host(cli::status::Command),
}

fn main() -> ExitCode {
    cli::init_logging();
    let cli = Cli::parse();
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
            Command::Fixture(args) => cli::fixture::run(args).await,
            Command::Storage(command) => cli::storage::run(&cli.config, command).await,
            Command::Host(command) => cli::status::run(&cli.config, command).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", causes(&e));
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
