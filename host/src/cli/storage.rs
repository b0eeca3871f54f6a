//! `vigil backup | backups | restore | verify | prune | inspect | import`:
//! profiles and backups, offline (no running service needed). Each command
//! claims the profile it changes, so it refuses to run while the service
//! (or another command) works on the same profile. The exceptions are
//! `backup` and `restore`: when the profile is claimed and the host of this
//! config answers at `[api] listen`, they ask it through the admin API.
//!
//! Exit codes: see [`super::exit`] (3 refused to protect a profile, 4
//! damaged backups or no good one, 6 no such backup, 7 no identity for an
//! encrypted backup).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigil::api::client::{ApiClient, ClientError};
use vigil::archive::Progress;
use vigil::backup::{self, BackupEntry, BackupError, BackupId, Backups, NoQuiesce};
use vigil::config::Config;
use vigil::id::SessionId;
use vigil::volume::{LockState, Presence, Profile, StaleReason, VolumeError};

use super::exit::NO_GOOD_BACKUP as DAMAGED;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Back up a session's profile now and print the new backup's id.
    /// With `vigil run` running, the running host takes the backup.
    ///
    /// Exit codes: 0 published, 1 error, 3 refused (critical files missing,
    /// profile held by a running browser or by another Vigil process; with
    /// a running host: the page asks for a login).
    Backup {
        /// The session, as named in vigil.toml.
        session: SessionId,
    },
    /// List a session's backups, newest first.
    ///
    /// Exit codes: 0 listed, 1 error.
    Backups {
        /// The session, as named in the store.
        session: SessionId,
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Restore a session's profile from a backup: by default the newest
    /// good one, falling back to older ones when it is damaged. With `vigil
    /// run` running, the running host closes the session's browser,
    /// restores and relaunches it.
    ///
    /// Exit codes: 0 restored, 1 error, 3 refused (a complete profile is in
    /// place, or the running session is connected, and --force was not
    /// given; or the profile is in use), 4 no good backup.
    Restore {
        /// The session, as named in vigil.toml.
        session: SessionId,
        /// Restore this backup, and only this one.
        #[arg(long)]
        backup: Option<BackupId>,
        /// Replace a complete profile (or a connected session's).
        #[arg(long)]
        force: bool,
    },
    /// Download backups and check size, sha256, archive structure and
    /// critical files; names every bad object and marks it damaged.
    ///
    /// Exit codes: 0 all good, 1 error, 4 damaged backups found.
    Verify {
        /// The session, as named in the store.
        session: SessionId,
        /// Every backup of the session, not only the newest.
        #[arg(long)]
        all: bool,
    },
    /// Delete expired backups (keep_days / keep_last) and leftovers of
    /// interrupted uploads, in every session of the store.
    ///
    /// Exit codes: 0 done, 1 error.
    Prune {
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a session's profile: size, critical files, lock state.
    ///
    /// Exit codes: 0 shown, 1 error.
    Inspect {
        /// The session, as named in vigil.toml.
        session: SessionId,
        #[arg(long)]
        json: bool,
    },
    /// Import an existing login as a session's profile: a Chromium
    /// user-data-dir, a whatsapp-web.js LocalAuth folder
    /// (.wwebjs_auth/session-<id>), or a .tar.gz of one.
    ///
    /// Exit codes: 0 imported, 1 error, 3 refused (complete profile in
    /// place without --force, source held by a running browser, critical
    /// files missing).
    Import {
        /// The session, as named in vigil.toml.
        session: SessionId,
        path: PathBuf,
        /// Replace a complete profile.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let outcome = match command {
        Command::Backup { session } => match backup(&config, &session).await {
            Err(f) if f.is_claimed() => match running_host(&config, f).await? {
                Ok(host) => return Ok(answer(backup_through(&host, &session).await)),
                Err(f) => Err(f),
            },
            other => other,
        },
        Command::Backups { session, json } => list(&config, &session, json).await,
        Command::Restore {
            session,
            backup,
            force,
        } => match restore(&config, &session, backup.as_ref(), force).await {
            Err(f) if f.is_claimed() => match running_host(&config, f).await? {
                Ok(host) => {
                    let restored = restore_through(&host, &session, backup.as_ref(), force).await;
                    return Ok(answer(restored));
                }
                Err(f) => Err(f),
            },
            other => other,
        },
        Command::Verify { session, all } => verify(&config, &session, all).await,
        Command::Prune { dry_run, json } => prune(&config, dry_run, json).await,
        Command::Inspect { session, json } => inspect(&config, &session, json).await,
        Command::Import {
            session,
            path,
            force,
        } => import(&config, &session, &path, force).await,
    };
    match outcome {
        Ok(code) => Ok(code),
        Err(Failure::Backup(e)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit_code(&e)))
        }
        Err(Failure::Other(e)) => Err(e),
    }
}

enum Failure {
    Backup(BackupError),
    Other(anyhow::Error),
}

impl Failure {
    /// Another Vigil process holds the profile: most likely `vigil run`.
    fn is_claimed(&self) -> bool {
        matches!(
            self,
            Failure::Backup(BackupError::Volume(VolumeError::Claimed { .. }))
        )
    }
}

impl From<BackupError> for Failure {
    fn from(e: BackupError) -> Self {
        Self::Backup(e)
    }
}

impl From<VolumeError> for Failure {
    fn from(e: VolumeError) -> Self {
        Self::Backup(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

fn exit_code(e: &BackupError) -> u8 {
    super::exit::of_backup_error(e)
}

/// The session's profile, as configured. Sessions must be in the config
/// for commands that touch a profile.
fn profile(config: &Config, session: &SessionId) -> anyhow::Result<Profile> {
    if config.session(session).is_none() {
        let known: Vec<&str> = config.sessions.iter().map(|s| s.id.as_str()).collect();
        anyhow::bail!(
            "session {session} is not in {} (known: {})",
            config.file.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    Ok(Profile::new(
        config.profile_dir(session),
        config.critical_files(session),
    ))
}

/// The profile is claimed by another process: when it is the host running
/// on this config (its API answers at `[api] listen`), the command goes
/// through it; otherwise the claim error stands. Deciding on the claim,
/// not on the port alone, keeps a host of another config on the same port
/// from being asked.
async fn running_host(
    config: &Config,
    claimed: Failure,
) -> anyhow::Result<Result<ApiClient, Failure>> {
    // /healthz needs no token: a missing token must not hide a running host.
    if !ApiClient::new(config.api.listen, None).is_running().await {
        return Ok(Err(claimed));
    }
    let client = ApiClient::for_config(config)?;
    eprintln!(
        "the Vigil host at {} holds the profile; asking it",
        client.addr()
    );
    Ok(Ok(client))
}

fn answer(outcome: Result<ExitCode, ClientError>) -> ExitCode {
    outcome.unwrap_or_else(|e| super::status::report(&e))
}

async fn backup_through(host: &ApiClient, session: &SessionId) -> Result<ExitCode, ClientError> {
    let backup = host.backup_now(session).await?;
    eprintln!(
        "backed up {} ({} files, {} -> {}) through the running host",
        session,
        backup["files"],
        size(backup["profile_bytes"].as_u64().unwrap_or(0)),
        size(backup["size_bytes"].as_u64().unwrap_or(0)),
    );
    println!("{}", backup["id"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

async fn restore_through(
    host: &ApiClient,
    session: &SessionId,
    id: Option<&BackupId>,
    force: bool,
) -> Result<ExitCode, ClientError> {
    // The host refuses a connected session without --force (the same
    // care as offline, where a complete profile needs --force).
    let report = host
        .restore(session, id.map(BackupId::as_str), force)
        .await?;
    for skipped in report["skipped"].as_array().into_iter().flatten() {
        eprintln!(
            "skipped damaged backup {}: {}",
            skipped["backup"].as_str().unwrap_or("?"),
            skipped["reason"].as_str().unwrap_or("?")
        );
    }
    let restored = report["backup"].as_str().unwrap_or_default();
    eprintln!(
        "restored {session} from backup {restored} ({} files, {}) through the running host; its browser is starting again",
        report["files"],
        size(report["bytes"].as_u64().unwrap_or(0)),
    );
    println!("{restored}");
    Ok(ExitCode::SUCCESS)
}

fn open(config: &Config) -> Result<Backups, Failure> {
    Ok(Backups::open(&config.backup)?)
}

async fn claim(profile: Profile) -> Result<vigil::volume::ProfileClaim, Failure> {
    Ok(tokio::task::spawn_blocking(move || profile.claim())
        .await
        .context("claiming the profile")??)
}

async fn backup(config: &Config, session: &SessionId) -> Result<ExitCode, Failure> {
    let claimed = claim(profile(config, session)?).await?;
    let backups = open(config)?;
    let progress = Progress::default();
    let line = ProgressLine::start("archiving", &progress);
    let result = backups
        .backup(session, &claimed, Arc::new(NoQuiesce), &progress)
        .await;
    line.stop().await;
    let manifest = result?;
    eprintln!(
        "backed up {} ({} files, {} -> {}) to {}",
        session,
        manifest.files,
        size(manifest.profile_bytes),
        size(manifest.size),
        backups.store_url()
    );
    println!("{}", manifest.id);
    Ok(ExitCode::SUCCESS)
}

async fn list(config: &Config, session: &SessionId, json: bool) -> Result<ExitCode, Failure> {
    let backups = open(config)?;
    let entries = backups.list(session).await?;
    if json {
        // The API's own view, so scripts read one set of field names.
        let list = vigil::api::views::BackupList {
            session: session.clone(),
            backups: entries
                .into_iter()
                .map(vigil::api::views::BackupView::from)
                .collect(),
        };
        println!(
            "{}",
            vigil::untrusted::pretty_json(&list).context("writing JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        eprintln!("no backups of {session} in {}", backups.store_url());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<20} {:>10} {:>7}  STATUS",
        "ID", "CREATED (UTC)", "SIZE", "FILES"
    );
    for e in &entries {
        let m = &e.manifest;
        let status = match &e.failure {
            None if m.encrypted => "ok (encrypted)".to_string(),
            None => "ok".to_string(),
            Some(f) => format!("DAMAGED: {}", super::printable(&f.reason)),
        };
        println!(
            "{:<26} {:<20} {:>10} {:>7}  {}",
            m.id,
            m.created.format("%Y-%m-%d %H:%M:%S"),
            size(m.size),
            m.files,
            status
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore(
    config: &Config,
    session: &SessionId,
    id: Option<&BackupId>,
    force: bool,
) -> Result<ExitCode, Failure> {
    let claimed = claim(profile(config, session)?).await?;
    let backups = open(config)?;
    let progress = Progress::default();
    let line = ProgressLine::start("restoring", &progress);
    let result = match id {
        Some(id) => {
            backups
                .restore(session, id, &claimed, force, &progress)
                .await
        }
        None => {
            backups
                .restore_newest(session, &claimed, force, &progress)
                .await
        }
    };
    line.stop().await;
    let report = result?;
    for (id, why) in &report.skipped {
        eprintln!("skipped damaged backup {id}: {why}");
    }
    eprintln!(
        "restored {} from backup {} into {} ({} files, {})",
        session,
        report.id,
        claimed.dir().display(),
        report.files,
        size(report.bytes)
    );
    println!("{}", report.id);
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: &Config, session: &SessionId, all: bool) -> Result<ExitCode, Failure> {
    let backups = open(config)?;
    let listing = backups.listing(session).await?;
    let mut bad = 0;
    for (key, why) in &listing.unreadable {
        println!(
            "BAD  {key}: unreadable manifest: {}",
            super::printable(&why.to_string())
        );
        bad += 1;
    }
    let chosen: Vec<&BackupEntry> = if all {
        listing.entries.iter().collect()
    } else {
        listing.entries.iter().take(1).collect()
    };
    if chosen.is_empty() {
        eprintln!("no backups of {session} in {}", backups.store_url());
    }
    for e in chosen {
        let m = &e.manifest;
        match backups.verify(session, &m.id).await {
            Ok(summary) => {
                let depth = if summary.entries.is_some() {
                    "archive and critical files checked"
                } else {
                    "checksum checked; encrypted, no identity to look inside"
                };
                println!(
                    "ok   {} {} sha256:{} ({depth})",
                    m.id,
                    size(summary.size),
                    summary.sha256
                );
            }
            Err(err) if err.is_damaged_backup() => {
                println!("BAD  {}: {}", m.id, super::printable(&err.to_string()));
                bad += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(if bad > 0 {
        ExitCode::from(DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn prune(config: &Config, dry_run: bool, json: bool) -> Result<ExitCode, Failure> {
    let backups = open(config)?;
    let report = backups.prune(chrono::Utc::now(), dry_run).await?;
    if json {
        println!(
            "{}",
            vigil::untrusted::pretty_json(&report).context("writing JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for s in &report.sessions {
        for id in &s.deleted {
            println!("{}: {verb} backup {id}", s.session);
        }
        for key in &s.leftovers {
            println!("{}: {verb} leftover {key}", s.session);
        }
        println!("{}: keeping {} backups", s.session, s.kept.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn inspect(config: &Config, session: &SessionId, json: bool) -> Result<ExitCode, Failure> {
    let profile = profile(config, session)?;
    let inventory = tokio::task::spawn_blocking(move || profile.inventory())
        .await
        .context("reading the profile")??;
    if json {
        println!(
            "{}",
            vigil::untrusted::pretty_json(&inventory).context("writing JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("profile   {}", inventory.dir.display());
    if !inventory.exists {
        println!("exists    no");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "size      {} in {} files",
        size(inventory.size_bytes),
        inventory.files
    );
    for (i, c) in inventory.critical.iter().enumerate() {
        let state = match c.state {
            Presence::Missing => "MISSING".to_string(),
            Presence::Empty => "EMPTY".to_string(),
            Presence::Present { bytes } => format!("present ({})", size(bytes)),
        };
        println!(
            "{:<10}{:<24} {state}",
            if i == 0 { "critical" } else { "" },
            c.path
        );
    }
    let lock = match &inventory.lock {
        LockState::Free => "free".to_string(),
        LockState::Held { host, pid } => {
            format!("HELD by pid {pid} on {host} (a browser is running)")
        }
        LockState::Stale { target, why } => format!(
            "stale ({target}: {}); cleared at the next launch or restore",
            match why {
                StaleReason::OtherHost => "written on another host",
                StaleReason::DeadProcess => "process is gone",
                StaleReason::Unrecognized => "not hostname-pid",
            }
        ),
    };
    println!("lock      {lock}");
    Ok(ExitCode::SUCCESS)
}

async fn import(
    config: &Config,
    session: &SessionId,
    path: &Path,
    force: bool,
) -> Result<ExitCode, Failure> {
    let claimed = claim(profile(config, session)?).await?;
    let excludes = backup::BackupOptions::from_config(&config.backup).excludes;
    let progress = Progress::default();
    let line = ProgressLine::start("importing", &progress);
    let result = backup::import(session, path, &claimed, &excludes, force, &progress).await;
    line.stop().await;
    let report = result?;
    eprintln!(
        "imported {} into {} ({} files, {})",
        report.source.display(),
        report.profile.display(),
        report.files,
        size(report.bytes)
    );
    Ok(ExitCode::SUCCESS)
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A line on stderr, rewritten in place, while a long operation runs; only
/// when stderr is a terminal (logs and pipes stay clean).
struct ProgressLine(
    Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
);

impl ProgressLine {
    fn start(verb: &'static str, progress: &Progress) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let progress = progress.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        eprint!("\r\x1b[K{verb}: {} in {} files", size(progress.bytes()), progress.files());
                    }
                    _ = &mut stopped => break,
                }
            }
            eprint!("\r\x1b[K");
        });
        Self(Some((task, stop)))
    }

    async fn stop(self) {
        if let Some((task, stop)) = self.0 {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
