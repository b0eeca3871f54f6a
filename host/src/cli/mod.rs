//! One module per group of subcommands. Each turns parsed arguments into
//! library calls and prints the outcome; exit codes are documented on each
//! command.

pub mod policy;
pub mod storage;

/// Logs go to stderr so that stdout stays machine-readable (`--json`).
/// `RUST_LOG` overrides the default level (`info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
