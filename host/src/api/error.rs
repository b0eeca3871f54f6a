//! Errors as the API answers them: an HTTP status and
//! `{"error": {"code": "...", "message": "..."}}`. Codes are stable (clients
//! and scripts match on them); messages are for people and may change.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::backup::BackupError;
use crate::fleet::FleetError;
use crate::id::SessionId;
use crate::session::SessionError;
use crate::supervisor::SupervisorError;
use crate::volume::VolumeError;

/// Every error code the API answers with (listed in `docs/openapi.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No token, or not the right one (401).
    Unauthorized,
    /// The read-only token, on a request that changes something (403).
    Forbidden,
    /// No such route (404).
    NotFound,
    /// The route exists, not with this method (405).
    MethodNotAllowed,
    /// The request body or a parameter is malformed (400).
    BadRequest,
    /// No session with this id on this host (404).
    SessionNotFound,
    /// No backup with this id for this session (404).
    BackupNotFound,
    /// The session's page shows no QR code that can be read (404): it is
    /// connected, or still loading its login screen.
    NoQrCode,
    /// Not possible in the session's current state (409), e.g. a screenshot
    /// with no browser, a backup of a page asking for a login.
    StateConflict,
    /// Refused to protect a profile (409): critical files missing, profile
    /// held by another process.
    Refused,
    /// No good backup to restore from (409).
    NoGoodBackup,
    /// The backup is encrypted and this host has no identity that opens
    /// it (409): set `[backup] identity`.
    NoIdentity,
    /// A session with this id already exists (409).
    SessionExists,
    /// The session is defined in a `vigil.toml`: remove it there (409).
    DefinedInConfig,
    /// The host is shutting down (503).
    ShuttingDown,
    /// The backup store failed or is unreachable (502).
    StoreError,
    /// The backup read from the store is damaged (502).
    BackupDamaged,
    /// The browser failed to do what was asked (502).
    BrowserError,
    /// The operation did not finish in time (504); it may still complete in
    /// the session.
    Timeout,
    /// Anything else (500): the message says what.
    Internal,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }

    pub fn session_not_found(id: &str, known: &[&SessionId]) -> Self {
        let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::SessionNotFound,
            format!(
                "no session {id:?} on this host (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    }

    pub fn timeout(what: &str, session: &SessionId, after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Timeout,
            format!(
                "session {session}: {what} did not finish within {} s; it may still complete, see GET /v1/sessions/{session}",
                after.as_secs()
            ),
        )
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            SessionError::NotNow { .. } => (StatusCode::CONFLICT, ErrorCode::StateConflict),
            SessionError::Refused { .. } => (StatusCode::CONFLICT, ErrorCode::Refused),
            SessionError::Stopped { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ShuttingDown)
            }
            SessionError::Backup(e) => backup_status(&e),
            SessionError::Browser(_) => (StatusCode::BAD_GATEWAY, ErrorCode::BrowserError),
            SessionError::Volume(e) => volume_status(&e),
            SessionError::Qr { .. } => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        };
        Self::new(status, code, message)
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let message = e.to_string();
        match e {
            SupervisorError::Catalog(f) => {
                let (status, code) = match f {
                    FleetError::DuplicateSession { .. } => {
                        (StatusCode::CONFLICT, ErrorCode::SessionExists)
                    }
                    FleetError::DefinedInConfig { .. } => {
                        (StatusCode::CONFLICT, ErrorCode::DefinedInConfig)
                    }
                    FleetError::NoSuchSession { .. } => {
                        (StatusCode::NOT_FOUND, ErrorCode::SessionNotFound)
                    }
                    _ => (StatusCode::BAD_GATEWAY, ErrorCode::StoreError),
                };
                Self::new(status, code, message)
            }
            SupervisorError::Backup(b) => Self::from(b),
            SupervisorError::Session { source, .. } => Self::from(source),
            SupervisorError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                message,
            ),
            SupervisorError::NotInFleet => {
                Self::new(StatusCode::CONFLICT, ErrorCode::StateConflict, message)
            }
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                message,
            ),
        }
    }
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let (status, code) = backup_status(&e);
        Self::new(status, code, e.to_string())
    }
}

fn backup_status(e: &BackupError) -> (StatusCode, ErrorCode) {
    match e {
        BackupError::NotFound { .. } => (StatusCode::NOT_FOUND, ErrorCode::BackupNotFound),
        BackupError::NoGoodBackup { .. } => (StatusCode::CONFLICT, ErrorCode::NoGoodBackup),
        BackupError::NoIdentity { .. } | BackupError::Identity { .. } => {
            (StatusCode::CONFLICT, ErrorCode::NoIdentity)
        }
        BackupError::MissingCritical { .. }
        | BackupError::NoProfile { .. }
        | BackupError::WouldOverwrite { .. } => (StatusCode::CONFLICT, ErrorCode::Refused),
        BackupError::Volume(v) => volume_status(v),
        e if e.is_damaged_backup() => (StatusCode::BAD_GATEWAY, ErrorCode::BackupDamaged),
        BackupError::Store { .. } | BackupError::Open { .. } => {
            (StatusCode::BAD_GATEWAY, ErrorCode::StoreError)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
    }
}

fn volume_status(e: &VolumeError) -> (StatusCode, ErrorCode) {
    match e {
        VolumeError::Held { .. } | VolumeError::Claimed { .. } => {
            (StatusCode::CONFLICT, ErrorCode::Refused)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = ?self.code, message = %self.message, "admin API request failed");
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile that cannot be claimed is a conflict only when another
    /// Vigil process holds it; an I/O failure is the host's, and says so.
    #[test]
    fn a_failed_claim_keeps_its_cause_and_its_status() {
        let held: ApiError = SessionError::Volume(VolumeError::Claimed {
            dir: "/srv/vigil/data/profiles/main".into(),
        })
        .into();
        assert_eq!(
            (held.status, held.code),
            (StatusCode::CONFLICT, ErrorCode::Refused)
        );
        assert!(
            held.message.contains("another Vigil process"),
            "{}",
            held.message
        );

        let io: ApiError = SessionError::Volume(VolumeError::Io {
            path: "/srv/vigil/data/profiles/.main.vigil-claim".into(),
            op: "open the claim file",
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        })
        .into();
        assert_eq!(
            (io.status, io.code),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
        );
        assert!(io.message.contains("open the claim file"), "{}", io.message);
        assert!(io.message.contains("ermission denied"), "{}", io.message);
        assert!(
            !io.message.contains("another Vigil process"),
            "{}",
            io.message
        );
    }
}
