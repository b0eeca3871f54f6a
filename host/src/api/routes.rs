//! Every route of the API, its handler, and whether it needs the token. The
//! router is built from [`endpoints`] alone, so [`routes`] is the complete
//! list the OpenAPI test checks.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;

use super::Host;
use super::auth::{Tokens, require_token};
use super::console;
use super::error::{ApiError, ErrorCode};
use super::metrics::{self, Collector};
use super::views;
use crate::backup::BackupId;
use crate::config::SessionConfig;
use crate::feed::{Item, Subscription};
use crate::id::SessionId;
use crate::journal::Since;
use crate::session::{SessionClient, SessionError};

/// How long a request waits for a backup or a restore (big profiles, slow
/// stores) before answering 504; the operation itself goes on.
const LONG_OPERATION: Duration = Duration::from_secs(15 * 60);
/// The same for a restart or a screenshot (a session that is launching
/// serves them once its page has settled).
const SHORT_OPERATION: Duration = Duration::from_secs(3 * 60);
/// A comment line on an idle event stream this often, so proxies and
/// clients can tell a quiet host from a dead connection.
const EVENTS_KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) struct AppState {
    pub host: Host,
    pub tokens: Tokens,
    pub collectors: Vec<Arc<dyn Collector>>,
    /// Turns true when the API shuts down: event streams end then, rather
    /// than holding the graceful shutdown open.
    pub stopping: watch::Receiver<bool>,
}

type Shared = Arc<AppState>;

/// One route: method, path (axum syntax, `{id}` for a parameter) and
/// whether it needs the bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub needs_token: bool,
}

struct Endpoint {
    route: Route,
    handler: MethodRouter<Shared>,
}

fn endpoint<H, T>(method: Method, path: &'static str, needs_token: bool, handler: H) -> Endpoint
where
    H: Handler<T, Shared>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
    Endpoint {
        route: Route {
            method,
            path,
            needs_token,
        },
        handler: on(filter, handler),
    }
}

fn endpoints() -> Vec<Endpoint> {
    const TOKEN: bool = true;
    const OPEN: bool = false;
    vec![
        endpoint(Method::GET, "/", OPEN, console::index),
        endpoint(Method::GET, "/console/app.js", OPEN, console::script),
        endpoint(Method::GET, "/console/style.css", OPEN, console::style),
        endpoint(Method::GET, "/healthz", OPEN, healthz),
        endpoint(Method::GET, "/readyz", OPEN, readyz),
        endpoint(Method::GET, "/metrics", TOKEN, scrape),
        endpoint(Method::GET, "/v1/sessions", TOKEN, list_sessions),
        endpoint(Method::POST, "/v1/sessions", TOKEN, add_session),
        endpoint(Method::GET, "/v1/sessions/{id}", TOKEN, get_session),
        endpoint(Method::DELETE, "/v1/sessions/{id}", TOKEN, remove_session),
        endpoint(
            Method::GET,
            "/v1/sessions/{id}/backups",
            TOKEN,
            list_backups,
        ),
        endpoint(Method::POST, "/v1/sessions/{id}/backups", TOKEN, backup_now),
        endpoint(Method::POST, "/v1/sessions/{id}/restore", TOKEN, restore),
        endpoint(Method::POST, "/v1/sessions/{id}/restart", TOKEN, restart),
        endpoint(
            Method::GET,
            "/v1/sessions/{id}/screenshot",
            TOKEN,
            screenshot,
        ),
        endpoint(
            Method::GET,
            "/v1/sessions/{id}/screencast",
            TOKEN,
            screencast,
        ),
        endpoint(Method::GET, "/v1/sessions/{id}/journal", TOKEN, journal),
        endpoint(Method::GET, "/v1/sessions/{id}/qr", TOKEN, login_qr),
        endpoint(Method::GET, "/v1/policies", TOKEN, policies),
        endpoint(Method::GET, "/v1/events", TOKEN, events),
        endpoint(Method::GET, "/v1/events/recent", TOKEN, recent_events),
        endpoint(Method::GET, "/v1/hosts", TOKEN, hosts),
        endpoint(Method::POST, "/v1/host/drain", TOKEN, drain),
    ]
}

/// Every route the API serves.
pub fn routes() -> Vec<Route> {
    endpoints().into_iter().map(|e| e.route).collect()
}

pub(super) fn router(state: Shared) -> Router {
    let tokens = Arc::new(state.tokens.clone());
    let (mut guarded, mut open) = (Router::new(), Router::new());
    for Endpoint { route, handler } in endpoints() {
        if route.needs_token {
            guarded = guarded.route(route.path, handler);
        } else {
            open = open.route(route.path, handler);
        }
    }
    guarded
        .route_layer(axum::middleware::from_fn_with_state(tokens, require_token))
        .merge(open)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such route (see docs/openapi.json)",
    )
}

async fn wrong_method(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("this route does not answer {method}"),
    )
}

// ---------------------------------------------------------------- health

/// 200 while the host's liveness check holds (the systemd watchdog's
/// too), 503 with its reason when it does not.
async fn healthz(State(state): State<Shared>) -> Response {
    let (status, health, reason) = match state.host.liveness() {
        Ok(()) => (StatusCode::OK, "ok", None),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            Some(why.to_string()),
        ),
    };
    let body = views::Health {
        status: health,
        reason,
        version: env!("CARGO_PKG_VERSION"),
        started: state.host.started(),
    };
    (status, axum::Json(body)).into_response()
}

async fn readyz(State(state): State<Shared>) -> Response {
    let waiting = state.host.unsettled();
    let ready = waiting.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(views::Readiness { ready, waiting })).into_response()
}

async fn scrape(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::scrape(&state.collectors),
    )
        .into_response()
}

// -------------------------------------------------------------- sessions

fn session(state: &AppState, id: &str) -> Result<SessionClient, ApiError> {
    id.parse::<SessionId>()
        .ok()
        .and_then(|id| state.host.session(&id))
        .ok_or_else(|| {
            let sessions = state.host.sessions();
            let known: Vec<&SessionId> = sessions.iter().map(SessionClient::id).collect();
            ApiError::session_not_found(id, &known)
        })
}

/// Waits for a session command, at most `bound`.
async fn within<T>(
    what: &str,
    session: &SessionClient,
    bound: Duration,
    command: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(bound, command).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::timeout(what, session.id(), bound)),
    }
}

async fn list_sessions(State(state): State<Shared>) -> axum::Json<views::SessionList> {
    axum::Json(views::SessionList {
        sessions: state
            .host
            .sessions()
            .iter()
            .map(|s| views::SessionSummary::from(s.status()))
            .collect(),
    })
}

async fn add_session(State(state): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let spec: SessionConfig = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a session: {{\"id\": \"...\", \"url\": \"https://...\"}} with the \
             optional fields of a [[session]] in vigil.toml (README \"Adding and removing sessions\"): {e}"
        ))
    })?;
    spec.check().map_err(ApiError::bad_request)?;
    let id = spec.id.clone();
    let location = format!("/v1/sessions/{id}");
    match state.host.control().add(spec).await? {
        Some(client) => Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            axum::Json(views::SessionDetail::from(client.status())),
        )
            .into_response()),
        // In a fleet: in the catalog now; the host placement picks starts it.
        None => Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            axum::Json(serde_json::json!({
                "id": id,
                "state": "placing: the fleet starts it on a host within a renewal period",
            })),
        )
            .into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    /// Also delete the session's backups.
    #[serde(default)]
    forget: bool,
}

async fn remove_session(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<axum::Json<crate::supervisor::Removed>, ApiError> {
    let id: SessionId = id
        .parse()
        .map_err(|e: crate::id::SessionIdError| ApiError::bad_request(e.to_string()))?;
    let removed = tokio::time::timeout(
        LONG_OPERATION,
        state.host.control().remove(&id, query.forget),
    )
    .await
    .map_err(|_| ApiError::timeout("the removal", &id, LONG_OPERATION))??;
    Ok(axum::Json(removed))
}

// ----------------------------------------------------------------- fleet

/// The fleet's hosts as this host sees them (its latest listing).
async fn hosts(State(state): State<Shared>) -> axum::Json<views::HostList> {
    axum::Json(match state.host.control().fleet() {
        Some(fleet) => views::HostList::from_view(&fleet.view().borrow()),
        None => views::HostList::alone(),
    })
}

/// Hands every session of this host over to the others and takes no
/// more; the host keeps running until it is stopped.
async fn drain(
    State(state): State<Shared>,
) -> Result<axum::Json<crate::supervisor::Drained>, ApiError> {
    let drained = tokio::time::timeout(LONG_OPERATION, state.host.control().drain())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::Timeout,
                format!(
                    "the drain did not finish within {} s; it goes on",
                    LONG_OPERATION.as_secs()
                ),
            )
        })??;
    Ok(axum::Json(drained))
}

async fn get_session(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<views::SessionDetail>, ApiError> {
    let session = session(&state, &id)?;
    Ok(axum::Json(views::SessionDetail::from(session.status())))
}

async fn list_backups(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<views::BackupList>, ApiError> {
    let session = session(&state, &id)?;
    let entries = state.host.backups().list(session.id()).await?;
    Ok(axum::Json(views::BackupList {
        session: session.id().clone(),
        backups: entries.into_iter().map(views::BackupView::from).collect(),
    }))
}

async fn backup_now(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = session(&state, &id)?;
    let manifest = within("the backup", &session, LONG_OPERATION, session.backup_now()).await?;
    let location = format!("/v1/sessions/{}/backups", session.id());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(views::BackupView::new(manifest, None)),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    /// The backup to restore; the newest good one when absent.
    #[serde(default)]
    backup: Option<BackupId>,
    /// Replace the profile of a connected session (refused without).
    #[serde(default)]
    force: bool,
}

async fn restore(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<views::Restored>, ApiError> {
    let session = session(&state, &id)?;
    // An empty body (curl -X POST) means the newest good backup.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreRequest {
            backup: None,
            force: false,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"backup\": \"<id>\", \"force\": true}} (both optional) or empty: {e}"
            ))
        })?
    };
    let report = within(
        "the restore",
        &session,
        LONG_OPERATION,
        session.restore(request.backup, request.force),
    )
    .await?;
    Ok(axum::Json(views::Restored::from(report)))
}

async fn restart(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = session(&state, &id)?;
    within("the restart", &session, SHORT_OPERATION, session.restart()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(views::Accepted {
            session: session.id().clone(),
            message: "the browser was closed and is starting again".into(),
        }),
    )
        .into_response())
}

async fn screenshot(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = session(&state, &id)?;
    let png = within(
        "the screenshot",
        &session,
        SHORT_OPERATION,
        session.screenshot(),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// The page's screen while the client stays: server-sent events, each
/// `event: frame` with a base64 JPEG as `data:`, at most about 2 a second
/// (a new one only when the page changed). The screencast stops when the
/// client goes; the stream ends when the browser closes (a restart), and
/// the client asks again.
async fn screencast(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let session = session(&state, &id)?;
    let frames = within(
        "starting its screencast",
        &session,
        SHORT_OPERATION,
        session.screencast(),
    )
    .await?;
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.next().await?;
        let event = sse::Event::default()
            .event("frame")
            .data(frame.jpeg_base64.as_str());
        Some((Ok(event), frames))
    })
    .take_until(Box::pin(stopped));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(EVENTS_KEEPALIVE)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalQuery {
    /// A duration ago ("10m") or an RFC 3339 time.
    #[serde(default)]
    since: Option<String>,
}

/// The session's decision journal as JSON lines (`application/x-ndjson`),
/// oldest first: what `vigil journal` prints.
async fn journal(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<JournalQuery>,
) -> Result<Response, ApiError> {
    let session = session(&state, &id)?.id().clone();
    let since = match &query.since {
        None => Since::Start,
        Some(text) => text
            .parse::<Since>()
            .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
    };
    let journal = state.host.journal().clone();
    let lines = tokio::task::spawn_blocking(move || journal.lines(&session, since))
        .await
        .map_err(|e| ApiError::internal(format!("reading the journal stopped: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

async fn login_qr(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = session(&state, &id)?;
    let found = within(
        "reading its QR code",
        &session,
        SHORT_OPERATION,
        session.login_qr(),
    )
    .await?;
    let Some(found) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoQrCode,
            format!(
                "session {}: its page shows no readable QR code (it is {})",
                session.id(),
                session.state()
            ),
        ));
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(views::LoginQr {
            session: session.id().clone(),
            text: found.text,
            png: base64::engine::general_purpose::STANDARD.encode(&found.png),
        }),
    )
        .into_response())
}

// ---------------------------------------------------------------- events

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Replay the kept events numbered above this first.
    after: Option<u64>,
}

/// Server-sent events: each event webhooks carry, as `id:` (its number),
/// `event:` (its name) and `data:` (the webhook body); `lagged` when this
/// client fell behind and lost some. `Last-Event-ID` (what browsers send
/// when they reconnect) or `?after=N` replays the kept events after N.
async fn events(
    State(state): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let Query(query) = query
        .map_err(|e| ApiError::bad_request(format!("the query must be empty or ?after=N: {e}")))?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be an event number from this stream")
                })?,
        ),
    };
    let subscription = state.host.feed().subscribe(last_event_id.or(query.after));
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let stream = futures::stream::unfold(subscription, |mut s: Subscription| async move {
        let item = s.next().await?;
        Some((Ok(sse_event(&item)), s))
    })
    .take_until(Box::pin(stopped));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(EVENTS_KEEPALIVE)))
}

fn sse_event(item: &Item) -> sse::Event {
    match item {
        Item::Event(p) => sse::Event::default()
            .id(p.seq.to_string())
            .event(p.delivery.kind.as_str())
            .data(p.body()),
        Item::Lagged { missed } => sse::Event::default()
            .event("lagged")
            .data(serde_json::json!({ "missed": missed }).to_string()),
    }
}

async fn recent_events(State(state): State<Shared>) -> axum::Json<views::RecentEvents> {
    let feed = state.host.feed();
    let recent = feed.recent();
    axum::Json(views::RecentEvents {
        last_id: recent.last().map_or_else(|| feed.last_seq(), |p| p.seq),
        events: recent
            .iter()
            .map(|p| serde_json::from_str(p.body()).expect("bodies are JSON"))
            .collect(),
    })
}

// -------------------------------------------------------------- policies

async fn policies(State(state): State<Shared>) -> axum::Json<crate::policy::PolicyStatus> {
    axum::Json(state.host.policies().status())
}
