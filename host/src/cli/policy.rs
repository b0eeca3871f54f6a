//! `vigil policy ...`: placeholder until the policy runtime lands.

use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate a policy file and the plugins it names.
    Check { file: std::path::PathBuf },
}

pub async fn run(_config: &Path, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file } => {
            anyhow::bail!("{}: policy check is not built yet", file.display())
        }
    }
}
