//! All sessions of one host: start them from the catalog (the `vigil.toml`
//! sessions seeded into it, and those added at runtime), add and remove
//! them while running, run the backup schedule and the policy reload
//! watcher, and drain everything on shutdown. Owns every task it starts;
//! knows nothing of HTTP or of how a session decides (that is `session`
//! and `policy`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::backup::{BackupError, Backups};
use crate::config::{Config, SessionConfig};
use crate::feed::EventFeed;
use crate::fleet::{self, Fleet, FleetError, FleetStore, HostId, Tenure};
use crate::id::SessionId;
use crate::journal::{self, Journal, JournalError};
use crate::policy::{PolicyError, PolicyRuntime, PolicySource, ReloadWatcher, RuntimeOptions};
use crate::schedule::{Schedule, ScheduleError, Task};
use crate::session::{
    RestoreSource, SessionClient, SessionDeps, SessionError, SessionEvent, SessionHandle,
    SessionSpec, SessionState,
};
use crate::webhook::{self, WebhookError, WebhookSender, Webhooks};

mod placing;
pub use placing::{Drained, HandedOver};

/// Why the host could not start, or could not add or remove a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    #[error(
        "{}: [fleet] needs a store every host shares with atomic conditional writes; the store {store} \
         is on this machine's disk and cannot fence across machines. Remove [fleet] to run one host on it",
        file.display()
    )]
    FleetOnLocalStore {
        file: std::path::PathBuf,
        store: String,
    },
    #[error(
        "this host is not in a fleet (its config has no [fleet]): there is nothing to hand over"
    )]
    NotInFleet,
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("policies: {0}")]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("decision journal: {0}")]
    Journal(#[from] JournalError),
    /// The session catalog refused or failed (a duplicate id, a session
    /// defined in a vigil.toml, the store unreachable).
    #[error(transparent)]
    Catalog(#[from] FleetError),
    #[error("session {session}: {source}")]
    Session {
        session: SessionId,
        source: SessionError,
    },
    #[error("the host is shutting down")]
    ShuttingDown,
}

/// The running host.
pub struct Supervisor {
    sessions: Arc<SessionSet>,
    policies: Arc<PolicyRuntime>,
    journal: Journal,
    backups: Arc<Backups>,
    events: broadcast::Sender<SessionEvent>,
    watcher: Option<ReloadWatcher>,
    schedule: Option<Schedule>,
    webhooks: Option<Webhooks>,
    /// Forwards session and policy events to the feed and the webhooks.
    notifier: Option<tokio::task::JoinHandle<()>>,
    /// Tells the notifier to forward what is left and end.
    notifier_stop: watch::Sender<bool>,
    webhook_sender: WebhookSender,
    feed: Arc<EventFeed>,
    started: SystemTime,
    /// In a fleet: the task that claims and hands over sessions, and its
    /// stop switch.
    placer: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// In a fleet: forwards its events to the feed and the webhooks.
    fleet_events: Option<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Opens the backup store and the policies, seeds the `vigil.toml`
    /// sessions into the catalog, then starts every session of the catalog
    /// (at most `[service] max_concurrent_launches` browsers launching at
    /// once), the policy watcher and the backup schedule. If the catalog
    /// cannot be read, the `vigil.toml` sessions start alone.
    pub async fn start(config: &Config) -> Result<Self, SupervisorError> {
        let webhooks = Webhooks::start(&config.webhooks, &config.webhook_delivery)?;
        let backups = Arc::new(Backups::open(&config.backup)?);
        let fleet = match &config.fleet {
            Some(fleet_config) => {
                let store = FleetStore::of(&backups);
                // The config check refuses this already; a store opened
                // some other way must not slip through.
                if store.is_local() {
                    return Err(SupervisorError::FleetOnLocalStore {
                        file: config.file.clone(),
                        store: backups.store_url().to_string(),
                    });
                }
                Some(Arc::new(
                    Fleet::start(fleet_config.clone(), store, Arc::new(fleet::BootClock)).await?,
                ))
            }
            None => None,
        };
        let policies = Arc::new(
            PolicyRuntime::start(
                RuntimeOptions::new(PolicySource::Directory(config.policy.dir.clone()))
                    .cache_dir(config.policy_cache_dir()),
            )
            .await?,
        );
        let watcher = policies.watch()?;
        let journal = Journal::open(&journal::dir(&config.data_dir), &config.journal)?;
        let (events, _) = broadcast::channel(1024);
        let webhook_sender = webhooks.sender();
        let feed = Arc::new(EventFeed::new(webhook_sender.host()));
        // Subscribed before any session starts, so none of their events is
        // missed; the notifier starts once the sessions' clients exist.
        let (session_events, policy_events) = (events.subscribe(), policies.subscribe());
        let (notifier_stop, stop_rx) = watch::channel(false);
        let deps = SessionDeps {
            policies: Arc::clone(&policies),
            journal: journal.clone(),
            backups: Arc::clone(&backups),
            launches: Arc::new(Semaphore::new(
                config.service.max_concurrent_launches.max(1),
            )),
            events: events.clone(),
        };
        let sessions = Arc::new(SessionSet::new(
            config,
            deps,
            FleetStore::of(&backups),
            fleet.clone(),
        ));
        let notifier = tokio::spawn(notify(
            session_events,
            policy_events,
            Outlets {
                feed: Arc::clone(&feed),
                webhooks: webhook_sender.clone(),
                sessions: sessions.watch(),
            },
            stop_rx,
        ));
        let specs = match fleet::catalog::seed(&sessions.catalog, &config.sessions, &sessions.host)
            .await
        {
            Ok((catalog, _)) => catalog.specs().cloned().collect(),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "cannot read the session catalog in the store: starting the vigil.toml sessions only; \
                     sessions added at runtime come back at the next start"
                );
                config.sessions.clone()
            }
        };
        if specs.is_empty() {
            tracing::warn!(
                config = %config.file.display(),
                "no session yet: add one with `vigil session add` or a [[session]] in the config"
            );
        }
        let fleet_events = fleet.as_ref().map(|fleet| {
            tokio::spawn(placing::forward_events(
                Arc::clone(fleet),
                Arc::clone(&feed),
                webhook_sender.clone(),
            ))
        });
        let placer = match &fleet {
            // In a fleet, sessions start where placement puts them.
            Some(fleet) => {
                let (stop, stopped) = watch::channel(false);
                let task = tokio::spawn(placing::run(
                    Arc::clone(&sessions),
                    Arc::clone(fleet),
                    stopped,
                ));
                Some((stop, task))
            }
            None => {
                for spec in &specs {
                    sessions.spawn(spec).await;
                }
                None
            }
        };
        let schedule = Schedule::start(
            "backup",
            &config.backup.schedule,
            scheduled_backups(Arc::clone(&sessions), Arc::clone(&backups)),
        )
        .await?;
        tracing::info!(
            sessions = specs.len(),
            store = backups.store_url(),
            policies = %config.policy.dir.display(),
            "vigil started"
        );
        Ok(Self {
            sessions,
            policies,
            journal,
            backups,
            events,
            watcher: Some(watcher),
            schedule: Some(schedule),
            webhooks: Some(webhooks),
            notifier: Some(notifier),
            notifier_stop,
            webhook_sender,
            feed,
            started: SystemTime::now(),
            placer,
            fleet_events,
        })
    }

    /// This host's membership in the fleet, if it runs one.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.sessions.fleet.as_ref()
    }

    pub fn session(&self, id: &SessionId) -> Option<SessionClient> {
        self.sessions.clients.borrow().get(id).cloned()
    }

    /// Every session, ordered by id.
    pub fn sessions(&self) -> Vec<SessionClient> {
        self.sessions.clients.borrow().values().cloned().collect()
    }

    /// The running sessions, to add and remove while the host runs.
    pub fn session_set(&self) -> &Arc<SessionSet> {
        &self.sessions
    }

    pub fn policies(&self) -> &Arc<PolicyRuntime> {
        &self.policies
    }

    pub fn backups(&self) -> &Arc<Backups> {
        &self.backups
    }

    /// The journal of every session's policy decisions.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Transitions, backups and restores of every session, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Every event webhooks carry, numbered, for the API's event stream.
    pub fn feed(&self) -> &Arc<EventFeed> {
        &self.feed
    }

    /// A handle on the webhooks' queues and counters (empty when none is
    /// configured).
    pub fn webhook_sender(&self) -> WebhookSender {
        self.webhook_sender.clone()
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Stops the schedule and the watcher, tells every session to close its
    /// browser gracefully (and take its shutdown backup), and waits up to
    /// `bound` for them; sessions still busy then are aborted, which kills
    /// their browsers.
    pub async fn shutdown(mut self, bound: Duration) {
        tracing::info!(
            bound_s = bound.as_secs(),
            "shutting down: closing browsers, taking shutdown backups"
        );
        if let Some(schedule) = self.schedule.take() {
            schedule.shutdown().await;
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.stop().await;
        }
        if let Some((stop, task)) = self.placer.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(fleet) = self.sessions.fleet.clone() {
            // Others take the sessions at once, from the backups taken now,
            // rather than after a lease.
            if tokio::time::timeout(bound, self.sessions.drain())
                .await
                .is_err()
            {
                tracing::error!(
                    bound_s = bound.as_secs(),
                    "draining did not finish in time; the sessions left move after a lease"
                );
            }
            self.sessions.stop_all(bound).await;
            fleet.leave().await;
        }
        if let Some(task) = self.fleet_events.take() {
            // Let the last moves go out before the feed closes.
            tokio::task::yield_now().await;
            task.abort();
        }
        self.sessions.stop_all(bound).await;
        // Every session has made its last decision: write the journal out.
        let journal = self.journal.clone();
        let _ = tokio::task::spawn_blocking(move || journal.close()).await;
        // Last, so the shutdown backups' events still go out: the notifier
        // forwards every event already raised, then the webhooks flush.
        let _ = self.notifier_stop.send(true);
        if let Some(notifier) = self.notifier.take()
            && let Err(e) = notifier.await
            && e.is_panic()
        {
            tracing::error!("the webhook notifier panicked: {e}");
        }
        if let Some(webhooks) = self.webhooks.take() {
            let report = webhooks.shutdown().await;
            if report.abandoned > 0 {
                tracing::warn!(
                    abandoned = report.abandoned,
                    "webhook events not delivered before shutdown"
                );
            }
        }
        tracing::info!("vigil stopped");
    }
}

/// One running session and the switch that stops it alone.
struct Running {
    handle: SessionHandle,
    stop: watch::Sender<bool>,
    /// In a fleet: the ownership it runs under.
    tenure: Option<Tenure>,
}

/// What removing a session did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub session: SessionId,
    /// Whether a final backup was published before the browser closed.
    pub final_backup: Option<String>,
    /// Objects deleted from the store (`forget`).
    pub forgotten_objects: usize,
}

/// This host's running sessions, which the admin API adds to and removes
/// from while the host runs. Every change goes through the catalog first,
/// so it survives a restart.
pub struct SessionSet {
    config: Config,
    deps: SessionDeps,
    catalog: FleetStore,
    /// This host's name in the catalog's record of who defined what.
    host: HostId,
    running: Mutex<BTreeMap<SessionId, Running>>,
    clients: watch::Sender<Arc<BTreeMap<SessionId, SessionClient>>>,
    /// Set once shutdown began: no session starts after that.
    stopping: AtomicBool,
    /// In a fleet: this host's membership; sessions start only once
    /// claimed.
    fleet: Option<Arc<Fleet>>,
    /// Wakes the placer (a session was added).
    nudge: tokio::sync::Notify,
    /// Draining: hands everything over, takes nothing.
    draining: AtomicBool,
}

impl SessionSet {
    fn new(
        config: &Config,
        deps: SessionDeps,
        catalog: FleetStore,
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        let host = config
            .fleet
            .as_ref()
            .map(|f| f.host_id.clone())
            .or_else(|| HostId::new(&crate::volume::hostname()).ok())
            .unwrap_or_else(|| HostId::new("local").expect("a valid host id"));
        Self {
            config: config.clone(),
            deps,
            catalog,
            host,
            running: Mutex::new(BTreeMap::new()),
            clients: watch::channel(Arc::new(BTreeMap::new())).0,
            stopping: AtomicBool::new(false),
            fleet,
            nudge: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
        }
    }

    /// This host's membership, in a fleet.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// The running sessions, ordered by id, updated as they come and go.
    pub fn watch(&self) -> watch::Receiver<Arc<BTreeMap<SessionId, SessionClient>>> {
        self.clients.subscribe()
    }

    /// Adds `spec` to the catalog and starts it; in a fleet, the host
    /// placement picks starts it (None here). A duplicate id is refused
    /// ([`FleetError::DuplicateSession`]).
    pub async fn add(&self, spec: SessionConfig) -> Result<Option<SessionClient>, SupervisorError> {
        // Under the lock: a removal of the same id waits for the start.
        let mut running = self.running.lock().await;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(SupervisorError::ShuttingDown);
        }
        if running.contains_key(&spec.id) {
            return Err(FleetError::DuplicateSession { session: spec.id }.into());
        }
        fleet::catalog::add(&self.catalog, spec.clone(), &self.host).await?;
        tracing::info!(session = %spec.id, url = %spec.url, "session added");
        if self.fleet.is_some() {
            self.nudge.notify_one();
            return Ok(None);
        }
        Ok(Some(self.start_locked(&mut running, &spec, None)))
    }

    /// Removes session `id` from the catalog and stops it, after a final
    /// backup when it is connected; with `forget`, deletes its backups too.
    /// A session defined in a `vigil.toml` is refused
    /// ([`FleetError::DefinedInConfig`]).
    pub async fn remove(&self, id: &SessionId, forget: bool) -> Result<Removed, SupervisorError> {
        let mut running = self.running.lock().await;
        fleet::catalog::remove(&self.catalog, id).await?;
        let mut final_backup = None;
        if let Some(r) = running.remove(id) {
            self.publish(&running);
            let owned = r.tenure.is_some();
            final_backup = self.stop_backed_up(r, !forget).await;
            if owned && let Some(fleet) = &self.fleet {
                let handover = final_backup.as_deref().and_then(|b| b.parse().ok());
                if let Err(e) = fleet.release(id, handover).await {
                    tracing::warn!(session = %id, error = %e, "could not release the removed session");
                }
            }
        }
        let forgotten_objects = if forget {
            self.deps.backups.forget(id).await?
        } else {
            0
        };
        tracing::info!(session = %id, forget, forgotten_objects, "session removed");
        Ok(Removed {
            session: id.clone(),
            final_backup,
            forgotten_objects,
        })
    }

    /// Stops a session gracefully, after a final backup when it is
    /// connected and `backup` says so (or the one it takes as it stops,
    /// when the config asks for shutdown backups). Returns the id of that
    /// final backup.
    async fn stop_backed_up(&self, r: Running, backup: bool) -> Option<String> {
        let client = r.handle.client().clone();
        let id = client.id().clone();
        let connected = matches!(
            client.state(),
            SessionState::Connected | SessionState::Degraded
        );
        let mut final_backup = None;
        // The session backs up as it stops when the config says so;
        // otherwise take the final backup here.
        if connected && backup && !self.config.backup.on_shutdown {
            match client.backup_now().await {
                Ok(m) => final_backup = Some(m.id.to_string()),
                Err(e) => tracing::warn!(session = %id, error = %e, "final backup failed"),
            }
        }
        let last = |c: &SessionClient| c.status().last_backup.map(|b| b.id);
        let before = last(&client);
        let _ = r.stop.send(true);
        r.handle.join().await;
        let after = last(&client);
        if final_backup.is_none() && after != before {
            final_backup = after;
        }
        final_backup
    }

    async fn spawn(&self, spec: &SessionConfig) {
        let mut running = self.running.lock().await;
        self.start_locked(&mut running, spec, None);
    }

    fn start_locked(
        &self,
        running: &mut BTreeMap<SessionId, Running>,
        spec: &SessionConfig,
        tenure: Option<Tenure>,
    ) -> SessionClient {
        let (stop, stop_rx) = watch::channel(false);
        let mut session_spec = SessionSpec::from_config(&self.config, spec);
        session_spec.tenure = tenure.clone();
        let handle = SessionHandle::spawn(session_spec, self.deps.clone(), stop_rx);
        let client = handle.client().clone();
        running.insert(
            spec.id.clone(),
            Running {
                handle,
                stop,
                tenure,
            },
        );
        self.publish(running);
        client
    }

    fn publish(&self, running: &BTreeMap<SessionId, Running>) {
        self.clients.send_replace(Arc::new(
            running
                .iter()
                .map(|(id, r)| (id.clone(), r.handle.client().clone()))
                .collect(),
        ));
    }

    /// Stops every session (graceful close, shutdown backup), killing
    /// those still busy after `bound`.
    async fn stop_all(&self, bound: Duration) {
        let running = {
            let mut running = self.running.lock().await;
            self.stopping.store(true, Ordering::Relaxed);
            std::mem::take(&mut *running)
        };
        for r in running.values() {
            let _ = r.stop.send(true);
        }
        let aborts: Vec<_> = running
            .values()
            .map(|r| (r.handle.client().id().clone(), r.handle.abort_handle()))
            .collect();
        let drain = futures::future::join_all(running.into_values().map(|r| r.handle.join()));
        if tokio::time::timeout(bound, drain).await.is_err() {
            for (id, abort) in aborts {
                if !abort.is_finished() {
                    tracing::error!(session = %id, "did not stop within {} s; killing it", bound.as_secs());
                    abort.abort();
                }
            }
        }
    }
}

/// The scheduled run: ask each running session for a backup, one at a
/// time (a quiesced backup closes that session's browser briefly), then
/// apply retention. Sessions that need a login are skipped: their profile
/// would bury the last logged-in backup.
fn scheduled_backups(set: Arc<SessionSet>, backups: Arc<Backups>) -> Task {
    Arc::new(move || {
        let sessions: Vec<SessionClient> = set.clients.borrow().values().cloned().collect();
        let backups = Arc::clone(&backups);
        Box::pin(async move {
            for session in &sessions {
                let state = session.state();
                if !matches!(state, SessionState::Connected | SessionState::Degraded) {
                    tracing::info!(session = %session.id(), %state, "scheduled backup skipped");
                    continue;
                }
                if let Err(e) = session.backup_now().await {
                    tracing::error!(session = %session.id(), error = %e, "scheduled backup failed");
                }
            }
            match backups.prune(chrono::Utc::now(), false).await {
                Ok(report) => {
                    let deleted: usize = report.sessions.iter().map(|s| s.deleted.len()).sum();
                    tracing::info!(deleted, "scheduled retention done");
                }
                Err(e) => tracing::error!(error = %e, "scheduled retention failed"),
            }
        })
    })
}

/// Where events go: the feed (the API's stream), then the webhooks, with
/// the same body; and the sessions, to look at a login screen.
struct Outlets {
    feed: Arc<EventFeed>,
    webhooks: WebhookSender,
    /// The running sessions, as they come and go.
    sessions: watch::Receiver<Arc<BTreeMap<SessionId, SessionClient>>>,
}

impl Outlets {
    fn publish(&self, event: &webhook::Event) {
        let published = self.feed.publish(event);
        self.webhooks.send_delivery(published.delivery.clone());
    }

    fn publish_session_event(&self, event: &SessionEvent) {
        if let Some(event) = webhook_event(event) {
            self.publish(&event);
        }
    }
}

/// How long the stopping notifier waits for the looks at login screens
/// still under way (their sessions have stopped: they end within a pause).
const LOOKS_AT_STOP: Duration = Duration::from_secs(3);

/// Publishes what operators can be told about. Lagging behind the
/// broadcast loses the oldest events, as a full webhook queue does, and is
/// logged. A session that turns needs-login gets its `session.needs_login`
/// event once its login screen was looked at (see [`needs_login`]); the
/// look runs aside, so other events are never held up by it. When `stop`
/// turns true, publishes every event already raised, then ends.
async fn notify(
    mut sessions: broadcast::Receiver<SessionEvent>,
    mut policies: broadcast::Receiver<crate::policy::ReloadEvent>,
    outlets: Outlets,
    mut stop: watch::Receiver<bool>,
) {
    use broadcast::error::{RecvError, TryRecvError};
    let (mut sessions_open, mut policies_open) = (true, true);
    let mut looks: JoinSet<webhook::Event> = JoinSet::new();
    while sessions_open || policies_open || !looks.is_empty() {
        tokio::select! {
            // Events win over the stop: none raised before it is left behind.
            biased;
            event = sessions.recv(), if sessions_open => match event {
                Ok(event) => {
                    outlets.publish_session_event(&event);
                    if let SessionEvent::StateChanged { session, to: SessionState::NeedsLogin, .. } = &event
                        && let Some(client) = outlets.sessions.borrow().get(session).cloned()
                    {
                        looks.spawn(needs_login(client));
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "webhooks fell behind session events"),
                Err(RecvError::Closed) => sessions_open = false,
            },
            event = policies.recv(), if policies_open => match event {
                Ok(event) => outlets.publish(&webhook::Event::from(&event)),
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "webhooks fell behind policy reloads"),
                Err(RecvError::Closed) => policies_open = false,
            },
            Some(looked) = looks.join_next(), if !looks.is_empty() => match looked {
                Ok(event) => outlets.publish(&event),
                Err(e) => tracing::error!(error = %e, "looking at a login screen failed"),
            },
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    loop {
        match sessions.try_recv() {
            Ok(event) => outlets.publish_session_event(&event),
            Err(TryRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "webhooks fell behind session events");
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    loop {
        match policies.try_recv() {
            Ok(event) => outlets.publish(&webhook::Event::from(&event)),
            Err(TryRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "webhooks fell behind policy reloads");
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    // Looks still under way end quickly: their sessions have stopped.
    let _ = tokio::time::timeout(LOOKS_AT_STOP, async {
        while let Some(looked) = looks.join_next().await {
            if let Ok(event) = looked {
                outlets.publish(&event);
            }
        }
    })
    .await;
}

/// Tries to read a QR code on a login screen this many times...
const LOGIN_LOOKS: u32 = 5;
/// ...this far apart: a page may draw its code a moment after it says
/// it needs a login.
const LOGIN_LOOK_PAUSE: Duration = Duration::from_secs(1);
/// One look waits at most this long for the session (it serves commands
/// between its own steps).
const LOGIN_LOOK_BOUND: Duration = Duration::from_secs(20);

/// The `session.needs_login` event of `session`, with the text of the QR
/// code its page shows, or none when no code could be read while it kept
/// asking for a login.
async fn needs_login(session: SessionClient) -> webhook::Event {
    let mut qr = None;
    for look in 1..=LOGIN_LOOKS {
        if session.state() != SessionState::NeedsLogin {
            break;
        }
        match tokio::time::timeout(LOGIN_LOOK_BOUND, session.login_qr()).await {
            Ok(Ok(Some(found))) => {
                qr = Some(found.text);
                break;
            }
            Ok(Ok(None)) => {
                tracing::debug!(session = %session.id(), look, "no QR code on the login screen yet")
            }
            Ok(Err(e)) => {
                tracing::debug!(session = %session.id(), look, error = %e, "cannot look at the login screen")
            }
            Err(_) => {
                tracing::debug!(session = %session.id(), look, "the session did not take a screenshot in time")
            }
        }
        if look < LOGIN_LOOKS {
            tokio::time::sleep(LOGIN_LOOK_PAUSE).await;
        }
    }
    if qr.is_none() {
        tracing::info!(session = %session.id(), "needs a login; no readable QR code on its page");
    }
    webhook::Event::SessionNeedsLogin {
        session: session.id().clone(),
        qr,
    }
}

/// The webhook form of a session event; a fresh start is not a restore and
/// is told by the state change to needs-login instead.
fn webhook_event(event: &SessionEvent) -> Option<webhook::Event> {
    let backup_id = |id: &str| id.parse::<crate::backup::BackupId>().ok();
    Some(match event {
        SessionEvent::StateChanged {
            session,
            from,
            to,
            reason,
        } => webhook::Event::SessionStateChanged {
            session: session.clone(),
            from: *from,
            to: *to,
            reason: reason.clone(),
        },
        SessionEvent::BackupSaved {
            session,
            id,
            size_bytes,
            took,
        } => webhook::Event::BackupSaved {
            session: session.clone(),
            backup: backup_id(id)?,
            size_bytes: *size_bytes,
            duration: *took,
        },
        SessionEvent::BackupFailed { session, error } => webhook::Event::BackupFailed {
            session: session.clone(),
            error: error.clone(),
        },
        SessionEvent::Restored {
            session,
            source,
            backup,
            took,
        } => webhook::Event::RestoreDone {
            session: session.clone(),
            source: match source {
                RestoreSource::Disk => webhook::RestoreSource::Disk,
                RestoreSource::Backup => {
                    webhook::RestoreSource::Backup(backup.as_deref().and_then(backup_id)?)
                }
                RestoreSource::Fresh => return None,
            },
            duration: *took,
        },
        SessionEvent::RestoreFailed {
            session,
            backup,
            error,
        } => webhook::Event::RestoreFailed {
            session: session.clone(),
            backup: backup.as_deref().and_then(backup_id),
            error: error.clone(),
        },
    })
}
