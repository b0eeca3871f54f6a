//! Every exit code of the CLI, in one place, so that a cause has the same
//! code whichever command meets it, offline or through the running host.
//! The README's "Exit codes" table lists them; keep the two in step.
//! 0 is success and 2 a bad command line (clap's own code).

use std::process::ExitCode;

use vigil::api::client::ClientError;
use vigil::backup::BackupError;
use vigil::volume::VolumeError;

/// Any other error (bad config, store unreachable, disk full, the host
/// answered with an error).
pub const ERROR: u8 = 1;
/// Refused to protect a profile or a working login: a complete profile
/// without `--force`, a connected session without `--force`, a profile
/// held by a running browser or by another Vigil process, critical files
/// missing, or not possible in the session's current state.
pub const REFUSED: u8 = 3;
/// Damaged backups found (`verify`), or no good backup to restore.
pub const NO_GOOD_BACKUP: u8 = 4;
/// No host answers at `[api] listen`.
pub const NOT_RUNNING: u8 = 5;
/// The backup named with `--backup` does not exist.
pub const NO_SUCH_BACKUP: u8 = 6;
/// The backup is encrypted and no identity opens it (`[backup] identity`
/// unset, unreadable, or holding another key).
pub const NO_IDENTITY: u8 = 7;
/// No session with this id on the running host (`vigil login`,
/// `screenshot`, `restart`, `session remove`, ...: the API's
/// `session_not_found`).
pub const NO_SUCH_SESSION: u8 = 8;
/// `vigil login`: `--timeout` ran out before the session connected.
pub const TIMED_OUT: u8 = 9;
/// `vigil login`: the session failed or stopped; it will not connect
/// without an operator.
pub const GAVE_UP: u8 = 10;
/// `vigil session add`: a session with this id already exists (the API's
/// `session_exists`).
pub const SESSION_EXISTS: u8 = 11;
/// `vigil session remove`: the session is defined in a `vigil.toml`;
/// remove it there (the API's `defined_in_config`).
pub const DEFINED_IN_CONFIG: u8 = 12;

pub fn code(n: u8) -> ExitCode {
    ExitCode::from(n)
}

/// The exit code of a backup or restore that failed on this machine.
pub fn of_backup_error(e: &BackupError) -> u8 {
    match e {
        BackupError::WouldOverwrite { .. }
        | BackupError::MissingCritical { .. }
        | BackupError::NoProfile { .. }
        | BackupError::Volume(VolumeError::Held { .. } | VolumeError::Claimed { .. }) => REFUSED,
        BackupError::NotFound { .. } => NO_SUCH_BACKUP,
        BackupError::NoIdentity { .. } | BackupError::Identity { .. } => NO_IDENTITY,
        BackupError::NoGoodBackup { .. } => NO_GOOD_BACKUP,
        e if e.is_damaged_backup() => NO_GOOD_BACKUP,
        _ => ERROR,
    }
}

/// The exit code of a request the running host refused or failed, by the
/// API's stable error code.
pub fn of_client_error(e: &ClientError) -> u8 {
    match e {
        ClientError::Unreachable { .. } => NOT_RUNNING,
        e => match e.code() {
            Some("state_conflict" | "refused") => REFUSED,
            Some("no_good_backup" | "backup_damaged") => NO_GOOD_BACKUP,
            Some("backup_not_found") => NO_SUCH_BACKUP,
            Some("no_identity") => NO_IDENTITY,
            Some("session_not_found") => NO_SUCH_SESSION,
            Some("session_exists") => SESSION_EXISTS,
            Some("defined_in_config") => DEFINED_IN_CONFIG,
            _ => ERROR,
        },
    }
}
