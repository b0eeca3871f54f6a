//! [`PolicyRuntime`]: one per process. Loads policy files, answers the
//! session layer's questions through the bound plugin (or the built-in
//! defaults), falls back safely when a plugin fails, and swaps in new
//! versions atomically on reload. Every role goes through the same
//! [`decide`](PolicyRuntime::decide); the typed methods are its names.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast};

use super::call::{self, CallSetup, Called, Target};
use super::catalog::{Catalog, LoadedPolicy, builtin_binding};
use super::clock::{Clock, SystemClock};
use super::config::PolicyConfig;
use super::engine::{MAX_CONCURRENT_CALLS, PolicyEngine};
use super::error::PolicyError;
use super::file::Limits;
use super::memory::{KvMemory, MemoryBank};
use super::metrics::{BUILTIN_PLUGIN, Metrics, MetricsSnapshot};
use super::reload::{PolicySource, ReloadTools, Reloader};
use super::role::{Keepalive, PolicyRole, Restore, Watchdog};
use super::status::{
    Binding, CallRecord, Decision, FallbackCause, PolicyStatus, ReloadEvent, ServedBy,
};
use super::types::{Action, BackupFacts, Facts, Inventory, Plan, RestoreQuestion, Role, Verdict};
use crate::id::SessionId;

/// How to build a [`PolicyRuntime`].
#[derive(Clone)]
pub struct RuntimeOptions {
    pub source: PolicySource,
    /// Compiled components are kept here; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Limits for policies whose file sets none.
    pub default_limits: Limits,
    pub clock: Arc<dyn Clock>,
}

impl RuntimeOptions {
    pub fn new(source: PolicySource) -> Self {
        RuntimeOptions {
            source,
            cache_dir: None,
            default_limits: Limits::default(),
            clock: Arc::new(SystemClock),
        }
    }

    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default_limits = limits;
        self
    }
}

/// The policy runtime. Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct PolicyRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    engine: PolicyEngine,
    reloader: Reloader,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    memory: MemoryBank,
    metrics: Metrics,
    events: broadcast::Sender<ReloadEvent>,
    call_slots: Semaphore,
}

/// The config of the built-in defaults: none.
static NO_CONFIG: LazyLock<Arc<PolicyConfig>> = LazyLock::new(|| Arc::new(PolicyConfig::new()));

impl PolicyRuntime {
    /// Builds the runtime and loads every policy. Blocking (compiles
    /// plugins): call it before the async loop or in `spawn_blocking`.
    /// A broken policy file does not stop the start: it is logged, shown
    /// in [`status`](Self::status), and its sessions use other files or the
    /// built-in defaults. Fails only when the engine cannot be built or the
    /// policy folder cannot be read.
    pub fn new(options: RuntimeOptions) -> Result<Self, PolicyError> {
        if let PolicySource::Directory(dir) = &options.source {
            std::fs::read_dir(dir).map_err(|source| PolicyError::Directory {
                dir: dir.clone(),
                source,
            })?;
        }
        let runtime = PolicyRuntime {
            shared: Arc::new(Shared {
                engine: PolicyEngine::new(options.cache_dir)?,
                reloader: Reloader::new(options.source, options.default_limits),
                catalog: Catalog::default(),
                clock: options.clock,
                memory: MemoryBank::default(),
                metrics: Metrics::default(),
                events: broadcast::channel(64).0,
                call_slots: Semaphore::new(MAX_CONCURRENT_CALLS as usize - 8),
            }),
        };
        runtime.reload_now();
        Ok(runtime)
    }

    /// [`new`](Self::new) without blocking the async executor.
    pub async fn start(options: RuntimeOptions) -> Result<Self, PolicyError> {
        tokio::task::spawn_blocking(move || Self::new(options))
            .await
            .map_err(|e| PolicyError::Engine(format!("loading policies panicked: {e}")))?
    }

    /// What to do to keep `facts.session` looking used.
    pub async fn keepalive(&self, facts: &Facts) -> Decision<Vec<Action>> {
        self.decide::<Keepalive>(facts.clone()).await
    }

    /// The watchdog's verdict on `facts.session`.
    pub async fn watchdog(&self, facts: &Facts) -> Decision<Verdict> {
        self.decide::<Watchdog>(facts.clone()).await
    }

    /// Where `session`'s profile should come from.
    pub async fn restore(
        &self,
        session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
    ) -> Decision<Plan> {
        self.decide::<Restore>(restore_question(session, inventory, backups))
            .await
    }

    /// [`keepalive`](Self::keepalive) on the calling thread (CLI, tests,
    /// benchmarks; never on an async executor thread).
    pub fn keepalive_blocking(&self, facts: &Facts) -> Decision<Vec<Action>> {
        self.decide_blocking::<Keepalive>(facts)
    }

    /// [`watchdog`](Self::watchdog) on the calling thread.
    pub fn watchdog_blocking(&self, facts: &Facts) -> Decision<Verdict> {
        self.decide_blocking::<Watchdog>(facts)
    }

    /// [`restore`](Self::restore) on the calling thread.
    pub fn restore_blocking(
        &self,
        session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
    ) -> Decision<Plan> {
        self.decide_blocking::<Restore>(&restore_question(session, inventory, backups))
    }

    /// One decision of role `R`: the bound plugin in its own sandbox off
    /// the async executor (at most [`MAX_CONCURRENT_CALLS`] at once), or
    /// the built-in defaults inline.
    pub(crate) async fn decide<R: PolicyRole>(&self, input: R::Input) -> Decision<R::Answer> {
        let Some(policy) = self.shared.catalog.resolve(R::session(&input), R::ROLE) else {
            return self.shared.decide::<R>(None, &input);
        };
        let _slot = self.shared.call_slots.acquire().await;
        let shared = self.shared.clone();
        let fallback_for = (policy.clone(), input.clone());
        tokio::task::spawn_blocking(move || shared.decide::<R>(Some(&policy), &input))
            .await
            .unwrap_or_else(|_| interrupted::<R>(&fallback_for.0, &fallback_for.1))
    }

    /// [`decide`](Self::decide) on the calling thread.
    pub(crate) fn decide_blocking<R: PolicyRole>(&self, input: &R::Input) -> Decision<R::Answer> {
        let policy = self.shared.catalog.resolve(R::session(input), R::ROLE);
        self.shared.decide::<R>(policy.as_deref(), input)
    }

    /// The call a journal recorded, made again with this runtime's policy
    /// of role `R` (the one a single policy file loads, whatever sessions
    /// it names) at the recorded clock, with the recorded memory, and with
    /// `config` (the policy file's own when `None`). Nothing is kept or
    /// counted. `None` when no policy of that role is loaded.
    pub(crate) fn replay<R: PolicyRole>(
        &self,
        input: &R::Input,
        now_ms: u64,
        config: Option<Arc<PolicyConfig>>,
        memory: KvMemory,
    ) -> Option<Decision<R::Answer>> {
        let catalog = self.shared.catalog.current();
        let policy = catalog.iter().find(|p| p.file.role == R::ROLE)?;
        let setup = CallSetup {
            now_ms,
            config: config.unwrap_or_else(|| policy.config.clone()),
            memory,
        };
        let called = call::call::<R>(&self.shared.engine, Target::Policy(policy), input, setup);
        Some(called.decision)
    }

    /// The `[config]` of the policy of role `R` a [`replay`](Self::replay)
    /// calls.
    pub(crate) fn loaded_config<R: PolicyRole>(&self) -> Option<Arc<PolicyConfig>> {
        let catalog = self.shared.catalog.current();
        let policy = catalog.iter().find(|p| p.file.role == R::ROLE)?;
        Some(policy.config.clone())
    }

    /// Which policy serves `session` in `role`, how often, with which
    /// limits and permissions.
    ///
    /// When several files match, the highest `priority` wins; on a tie the
    /// file whose name sorts first (byte order) wins.
    pub fn binding(&self, session: &SessionId, role: Role) -> Binding {
        match self.shared.catalog.resolve(session, role) {
            Some(p) => p.binding(),
            None => builtin_binding(role, self.shared.reloader.default_limits()),
        }
    }

    /// Reload events as they happen (accepted, rejected, removed).
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.shared.events.subscribe()
    }

    /// Looks at every policy file and plugin now and swaps in what changed.
    /// Blocking. The watcher calls this; tests and tools may too.
    pub fn reload_now(&self) -> Vec<ReloadEvent> {
        let shared = &self.shared;
        shared.reloader.reconcile(&ReloadTools {
            engine: &shared.engine,
            catalog: &shared.catalog,
            clock: &*shared.clock,
            events: &shared.events,
        })
    }

    pub fn status(&self) -> PolicyStatus {
        self.shared.reloader.status(&self.shared.catalog)
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Drops every policy's memory of `session` (for example when the
    /// session is deleted, or before a scenario re-runs).
    pub fn forget_memory(&self, session: &SessionId) {
        self.shared.memory.forget(session);
    }

    /// Sets the memory the policy bound to `session` in `role` keeps of
    /// it (a scenario's starting memory).
    pub fn seed_memory(&self, session: &SessionId, role: Role, memory: KvMemory) {
        let key = self
            .shared
            .memory_key(self.shared.catalog.resolve(session, role).as_deref(), role);
        self.shared.memory.commit(&key, session, memory);
    }

    /// The folders the watcher must watch: the policy source and every
    /// referenced plugin's folder.
    pub(crate) fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        self.shared.reloader.watch_dirs()
    }
}

fn restore_question(
    session: &SessionId,
    inventory: &Inventory,
    backups: &[BackupFacts],
) -> RestoreQuestion {
    RestoreQuestion {
        session: session.clone(),
        inventory: inventory.clone(),
        backups: backups.to_vec(),
    }
}

/// The answer when the blocking task running a call was lost.
fn interrupted<R: PolicyRole>(policy: &LoadedPolicy, input: &R::Input) -> Decision<R::Answer> {
    let cause = FallbackCause::Interrupted;
    Decision {
        value: R::fallback(input, &cause.to_string()),
        served_by: ServedBy::Fallback {
            policy: policy.reference(),
            cause,
        },
        took: Duration::ZERO,
        refused: Vec::new(),
        binding: policy.binding(),
        record: CallRecord {
            now_ms: 0,
            config: policy.config.clone(),
            memory_before: KvMemory::default(),
            memory_after: None,
            plugin_sha256: Some(Arc::from(policy.plugin.sha256.as_str())),
            file_sha256: Some(policy.file_sha256.clone()),
        },
    }
}

impl Shared {
    /// Whose memory a call works on: the policy's (by file name), or the
    /// built-in defaults' of that role.
    fn memory_key(&self, policy: Option<&LoadedPolicy>, role: Role) -> String {
        match policy {
            Some(p) => p.name.to_string(),
            None => format!("builtin/{role}"),
        }
    }

    /// One call of `policy` (or the built-in defaults) with the session's
    /// memory, kept when the call succeeded; counted.
    fn decide<R: PolicyRole>(
        &self,
        policy: Option<&LoadedPolicy>,
        input: &R::Input,
    ) -> Decision<R::Answer> {
        let session = R::session(input);
        let key = self.memory_key(policy, R::ROLE);
        let setup = CallSetup {
            now_ms: self.clock.now_ms(),
            config: policy.map_or_else(|| NO_CONFIG.clone(), |p| p.config.clone()),
            memory: self.memory.checkout(&key, session),
        };
        let target = match policy {
            Some(p) => Target::Policy(p),
            None => Target::BuiltIn {
                limits: self.reloader.default_limits(),
            },
        };
        let Called {
            decision,
            keep,
            tally,
        } = call::call::<R>(&self.engine, target, input, setup);
        if let Some(memory) = keep {
            self.memory.commit(&key, session, memory);
        }
        let plugin = policy.map_or_else(|| BUILTIN_PLUGIN.to_string(), |p| p.plugin.file_name());
        self.metrics.record(&plugin, R::ROLE, decision.took, tally);
        decision
    }
}
