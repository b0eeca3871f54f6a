//! The HTTP admin API served by `vigil run`: sessions, backups, policy
//! status, screenshots and login QR codes, the event stream (SSE),
//! `/metrics`, `/healthz` and `/readyz`, the screencast of a session's
//! page, and the web console at `/` (see `console`). Owns the
//! routes, the bearer-token check, the JSON shapes of responses and
//! errors, and the Prometheus text. It only reads and commands sessions
//! through their [`SessionClient`]s: it never touches a profile, a browser
//! or the store behind a session's back.
//!
//! The routes are listed once, in [`routes`]; the router is built from that
//! list, and the tests hold it against `docs/openapi.json`.
//!
//! Starting: [`Listener::bind`] (before any browser starts, so a taken
//! port or a missing token fails fast), then [`Listener::serve`] once the
//! supervisor runs, then [`ApiServer::shutdown`] after the supervisor has
//! drained (the API keeps answering while shutdown backups run).

mod auth;
pub mod client;
mod console;
mod error;
pub mod metrics;
mod routes;
pub mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backup::Backups;
use crate::feed::EventFeed;
use crate::id::SessionId;
use crate::journal::Journal;
use crate::policy::PolicyRuntime;
use crate::session::{SessionClient, SessionState};
use crate::supervisor::{SessionSet, Supervisor};
use crate::webhook::{WebhookSender, WebhookStats};

pub use auth::{ApiToken, TokenSource, generated_token_path};
pub use error::{ApiError, ErrorCode};
pub use metrics::{Collector, Exposition, Family, MetricKind};
pub use routes::{Route, routes};

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiStartError {
    #[error(
        "[api] listen = \"{listen}\" is not a loopback address, and no token is set: set VIGIL_API_TOKEN or [api] token_file in {}",
        config.display()
    )]
    TokenRequired { listen: SocketAddr, config: PathBuf },
    #[error("the API token from {source_name}: {reason}")]
    BadToken { source_name: String, reason: String },
    #[error("cannot write the generated API token to {}: {source}", path.display())]
    WriteToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[api] listen = \"{listen}\": cannot listen there: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
}

/// What the API sees of the running host: every session's client, the
/// policy runtime, the backup store and the webhooks' counters. Cheap to
/// clone.
#[derive(Clone)]
pub struct Host {
    /// The running sessions, as they come and go.
    sessions: watch::Receiver<Arc<BTreeMap<SessionId, SessionClient>>>,
    /// Where sessions are added and removed.
    control: Arc<SessionSet>,
    policies: Arc<PolicyRuntime>,
    journal: Journal,
    backups: Arc<Backups>,
    webhooks: WebhookSender,
    feed: Arc<EventFeed>,
    started: SystemTime,
}

impl Host {
    pub fn of(supervisor: &Supervisor) -> Self {
        Self {
            sessions: supervisor.session_set().watch(),
            control: Arc::clone(supervisor.session_set()),
            policies: Arc::clone(supervisor.policies()),
            journal: supervisor.journal().clone(),
            backups: Arc::clone(supervisor.backups()),
            webhooks: supervisor.webhook_sender(),
            feed: Arc::clone(supervisor.feed()),
            started: supervisor.started(),
        }
    }

    pub fn session(&self, id: &SessionId) -> Option<SessionClient> {
        self.sessions.borrow().get(id).cloned()
    }

    /// Every session, ordered by id.
    pub fn sessions(&self) -> Vec<SessionClient> {
        self.sessions.borrow().values().cloned().collect()
    }

    /// Adds and removes sessions while the host runs.
    pub fn control(&self) -> &Arc<SessionSet> {
        &self.control
    }

    pub fn policies(&self) -> &Arc<PolicyRuntime> {
        &self.policies
    }

    pub fn backups(&self) -> &Arc<Backups> {
        &self.backups
    }

    /// Every session's decision journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The events webhooks carry, for `/v1/events`.
    pub fn feed(&self) -> &Arc<EventFeed> {
        &self.feed
    }

    /// Deliveries per configured webhook.
    pub fn webhook_stats(&self) -> Vec<WebhookStats> {
        self.webhooks.stats()
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Sessions still starting, restoring or launching.
    pub fn unsettled(&self) -> Vec<SessionId> {
        self.sessions()
            .into_iter()
            .filter(|s| !s.state().is_settled())
            .map(|s| s.id().clone())
            .collect()
    }

    /// Every session is past start-up: what `/readyz` and systemd's
    /// READY=1 wait for.
    pub fn ready(&self) -> bool {
        self.sessions().iter().all(|s| s.state().is_settled())
    }

    pub async fn wait_ready(&self) {
        for session in self.sessions() {
            let mut status = session.watch();
            let _ = status.wait_for(|s| s.state.is_settled()).await;
        }
    }

    /// The host's liveness check, the one behind both `/healthz` and the
    /// systemd watchdog: every session's task still runs. A task that ended
    /// outside a shutdown has panicked; the host is broken and should be
    /// restarted.
    pub fn liveness(&self) -> Result<(), NotAlive> {
        let ended: Vec<SessionId> = self
            .sessions()
            .iter()
            .filter(|s| s.watch().has_changed().is_err())
            .map(|s| s.id().clone())
            .collect();
        if ended.is_empty() {
            Ok(())
        } else {
            Err(NotAlive { ended })
        }
    }

    /// "2 sessions: 1 connected, 1 needs-login", for `systemctl status`.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for s in self.sessions() {
            *counts.entry(s.state().as_str()).or_default() += 1;
        }
        let parts: Vec<String> = SessionState::ALL
            .iter()
            .filter_map(|s| counts.get(s.as_str()).map(|n| format!("{n} {s}")))
            .collect();
        let n = self.sessions.borrow().len();
        format!(
            "{n} session{}: {}",
            if n == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }
}

/// Why the host is not alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAlive {
    /// Sessions whose task has ended.
    pub ended: Vec<SessionId>,
}

impl std::fmt::Display for NotAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.ended.iter().map(SessionId::as_str).collect();
        write!(
            f,
            "the task of session {} has ended (it panicked, or the host is shutting down); restart the host",
            names.join(", ")
        )
    }
}

/// The API's address, bound, with its token; not serving yet.
pub struct Listener {
    listener: tokio::net::TcpListener,
    token: ApiToken,
    read_token: Option<ApiToken>,
}

impl Listener {
    /// Resolves the tokens (see [`ApiToken::for_server`] and
    /// [`ApiToken::read_only_for_server`]) and binds `[api] listen`.
    pub async fn bind(config: &crate::config::Config) -> Result<Self, ApiStartError> {
        let token = ApiToken::for_server(config, std::env::var("VIGIL_API_TOKEN").ok())?;
        let read_token = ApiToken::read_only_for_server(
            config,
            std::env::var("VIGIL_API_READ_TOKEN").ok(),
            &token,
        )?;
        Ok(Self::bind_with(config.api.listen, token)
            .await?
            .with_read_token(read_token))
    }

    /// Binds `listen`, serving with `token`.
    pub async fn bind_with(listen: SocketAddr, token: ApiToken) -> Result<Self, ApiStartError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ApiStartError::Bind { listen, source })?;
        Ok(Self {
            listener,
            token,
            read_token: None,
        })
    }

    /// Also accepts `read_token`, for GET requests only.
    pub fn with_read_token(mut self, read_token: Option<ApiToken>) -> Self {
        self.read_token = read_token;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// Starts answering requests about `host`. `/metrics` shows the host's
    /// own families and then each of `collectors` (webhooks, ...), in order.
    pub fn serve(self, host: Host, collectors: Vec<Arc<dyn Collector>>) -> ApiServer {
        let addr = self.local_addr();
        let (reloads, counting) = metrics::ReloadTally::start(host.policies());
        let mut all: Vec<Arc<dyn Collector>> = vec![
            Arc::new(metrics::HostMetrics::new(host.clone(), reloads)),
            Arc::new(metrics::ProcessMetrics::new(host.started())),
        ];
        all.extend(collectors);
        let (stop, mut stopped) = watch::channel(false);
        let state = Arc::new(routes::AppState {
            host,
            tokens: auth::Tokens {
                admin: self.token,
                read: self.read_token,
            },
            collectors: all,
            stopping: stopped.clone(),
        });
        let router = routes::router(state);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(self.listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "the admin API stopped serving");
            }
        });
        tracing::info!(%addr, "admin API serving");
        ApiServer {
            addr,
            stop,
            task,
            counting,
        }
    }
}

/// The API while it serves.
pub struct ApiServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Counts policy reloads for `/metrics`.
    counting: JoinHandle<()>,
}

impl ApiServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish for a few seconds,
    /// then drops what is left.
    pub async fn shutdown(self) {
        const GRACE: Duration = Duration::from_secs(5);
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(GRACE, self.task).await.is_err() {
            tracing::warn!(
                "admin API requests still running after {} s; dropping them",
                GRACE.as_secs()
            );
            abort.abort();
        }
        // It only waits on a broadcast channel: nothing to finish.
        self.counting.abort();
    }
}
