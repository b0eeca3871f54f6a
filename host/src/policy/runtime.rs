//! [`PolicyRuntime`]: one per process. Loads policy files, answers the
//! supervisor's questions through the bound plugin (or the built-in
//! defaults), falls back safely when a plugin fails, and swaps in new
//! versions atomically on reload.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast};

use super::answer::{accept_actions, accept_plan, accept_verdict};
use super::builtin;
use super::clock::{Clock, SystemClock};
use super::config::PolicyConfig;
use super::engine::{CallFailure, MAX_CONCURRENT_CALLS, Plugin, PolicyEngine, RolePre};
use super::error::PolicyError;
use super::file::{Limits, Permissions, PolicyFile};
use super::memory::{KvMemory, MemoryBank};
use super::metrics::{BUILTIN_PLUGIN, CallTally, Metrics, MetricsSnapshot};
use super::reload::ReloadBook;
use super::status::{
    Binding, Decision, FallbackCause, PolicyRef, PolicyStatus, ReloadEvent, ServedBy,
};
use super::types::{Action, BackupFacts, Facts, Inventory, Plan, Role, SessionState, Verdict};
use super::wit::{self, CallState};
use crate::id::SessionId;

/// Where the runtime finds its policies.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// Every `*.toml` file directly in this folder (not subfolders).
    Directory(PathBuf),
    /// One policy file.
    File(PathBuf),
    /// A bare plugin bound to every session, for `vigil policy test` on a
    /// `.wasm`.
    Plugin {
        wasm: PathBuf,
        role: Role,
        config: PolicyConfig,
        permissions: Permissions,
    },
}

impl PolicySource {
    pub(super) fn path(&self) -> &Path {
        match self {
            PolicySource::Directory(p) | PolicySource::File(p) => p,
            PolicySource::Plugin { wasm, .. } => wasm,
        }
    }
}

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
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(super) engine: PolicyEngine,
    pub(super) source: PolicySource,
    pub(super) default_limits: Limits,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) catalog: RwLock<Arc<Vec<Arc<LoadedPolicy>>>>,
    pub(super) reload: Mutex<ReloadBook>,
    /// Held for a whole reload, so reloads run one at a time while the
    /// book above stays free for status readers.
    pub(super) reloading: Mutex<()>,
    pub(super) memory: MemoryBank,
    pub(super) metrics: Metrics,
    pub(super) events: broadcast::Sender<ReloadEvent>,
    pub(super) call_slots: Semaphore,
}

/// A policy file that passed every check and serves.
pub(crate) struct LoadedPolicy {
    pub(super) file: PolicyFile,
    pub(super) name: Arc<str>,
    pub(super) limits: Limits,
    pub(super) config: Arc<PolicyConfig>,
    pub(super) plugin: Arc<Plugin>,
    pub(super) loaded_at_ms: u64,
}

impl LoadedPolicy {
    fn reference(&self) -> PolicyRef {
        PolicyRef {
            file: self.file.path.clone(),
            plugin: self.plugin.path.clone(),
            sha256: self.plugin.short_sha().to_owned(),
        }
    }
}

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
                source: options.source,
                default_limits: options.default_limits,
                clock: options.clock,
                catalog: RwLock::new(Arc::new(Vec::new())),
                reload: Mutex::new(ReloadBook::default()),
                reloading: Mutex::new(()),
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
        let Some(policy) = self.shared.resolve(&facts.session, Role::Keepalive) else {
            return self.shared.builtin_keepalive(facts);
        };
        let _slot = self.shared.call_slots.acquire().await;
        let (shared, facts) = (self.shared.clone(), facts.clone());
        let fallback = policy.reference();
        tokio::task::spawn_blocking(move || shared.keepalive_with(&policy, &facts))
            .await
            .unwrap_or_else(|_| interrupted(fallback, builtin::keepalive_fallback()))
    }

    /// The watchdog's verdict on `facts.session`.
    pub async fn watchdog(&self, facts: &Facts) -> Decision<Verdict> {
        let Some(policy) = self.shared.resolve(&facts.session, Role::Watchdog) else {
            return self.shared.builtin_watchdog(facts);
        };
        let _slot = self.shared.call_slots.acquire().await;
        let (shared, facts) = (self.shared.clone(), facts.clone());
        let fallback = policy.reference();
        tokio::task::spawn_blocking(move || shared.watchdog_with(&policy, &facts))
            .await
            .unwrap_or_else(|_| {
                interrupted(fallback, builtin::watchdog_fallback("call interrupted"))
            })
    }

    /// Where `session`'s profile should come from.
    pub async fn restore(
        &self,
        session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
    ) -> Decision<Plan> {
        let Some(policy) = self.shared.resolve(session, Role::Restore) else {
            return self.shared.builtin_restore(session, inventory, backups);
        };
        let _slot = self.shared.call_slots.acquire().await;
        let shared = self.shared.clone();
        let (session, inventory, backups) = (session.clone(), inventory.clone(), backups.to_vec());
        let fallback = policy.reference();
        let fallback_plan = builtin::restore_fallback(&inventory, "call interrupted");
        tokio::task::spawn_blocking(move || {
            shared.restore_with(&policy, &session, &inventory, &backups)
        })
        .await
        .unwrap_or_else(|_| interrupted(fallback, fallback_plan))
    }

    /// [`keepalive`](Self::keepalive) on the calling thread (CLI, tests,
    /// benchmarks; never on an async executor thread).
    pub fn keepalive_blocking(&self, facts: &Facts) -> Decision<Vec<Action>> {
        match self.shared.resolve(&facts.session, Role::Keepalive) {
            Some(policy) => self.shared.keepalive_with(&policy, facts),
            None => self.shared.builtin_keepalive(facts),
        }
    }

    /// [`watchdog`](Self::watchdog) on the calling thread.
    pub fn watchdog_blocking(&self, facts: &Facts) -> Decision<Verdict> {
        match self.shared.resolve(&facts.session, Role::Watchdog) {
            Some(policy) => self.shared.watchdog_with(&policy, facts),
            None => self.shared.builtin_watchdog(facts),
        }
    }

    /// [`restore`](Self::restore) on the calling thread.
    pub fn restore_blocking(
        &self,
        session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
    ) -> Decision<Plan> {
        match self.shared.resolve(session, Role::Restore) {
            Some(policy) => self
                .shared
                .restore_with(&policy, session, inventory, backups),
            None => self.shared.builtin_restore(session, inventory, backups),
        }
    }

    /// Which policy serves `session` in `role`, how often, with which
    /// limits and permissions.
    ///
    /// When several files match, the highest `priority` wins; on a tie the
    /// file whose name sorts first (byte order) wins.
    pub fn binding(&self, session: &SessionId, role: Role) -> Binding {
        match self.shared.resolve(session, role) {
            Some(p) => Binding {
                role,
                policy: Some(p.reference()),
                interval: p.file.interval,
                limits: p.limits,
                permissions: p.file.permissions,
            },
            None => Binding {
                role,
                policy: None,
                interval: PolicyFile::default_interval(role),
                limits: self.shared.default_limits,
                permissions: Permissions::default(),
            },
        }
    }

    /// Reload events as they happen (accepted, rejected, removed).
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.shared.events.subscribe()
    }

    /// Looks at every policy file and plugin now and swaps in what changed.
    /// Blocking. The watcher calls this; tests and tools may too.
    pub fn reload_now(&self) -> Vec<ReloadEvent> {
        self.shared.reconcile()
    }

    pub fn status(&self) -> PolicyStatus {
        self.shared.status()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Drops every policy's memory of `session` (for example when the
    /// session is deleted, or before a scenario re-runs).
    pub fn forget_memory(&self, session: &SessionId) {
        self.shared.memory.forget(session);
    }

    /// The folders the watcher must watch: the policy source and every
    /// referenced plugin's folder.
    pub(crate) fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = self
            .shared
            .reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .plugin_dirs
            .clone();
        match &self.shared.source {
            PolicySource::Directory(d) => {
                dirs.insert(d.clone());
            }
            PolicySource::File(f) | PolicySource::Plugin { wasm: f, .. } => {
                dirs.insert(parent(f));
            }
        }
        dirs
    }
}

pub(super) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn interrupted<T>(policy: PolicyRef, value: T) -> Decision<T> {
    Decision {
        value,
        served_by: ServedBy::Fallback {
            policy,
            cause: FallbackCause::Interrupted,
        },
        took: Duration::ZERO,
        refused: Vec::new(),
    }
}

fn cause_of(failure: CallFailure) -> (FallbackCause, CallTally) {
    let mut tally = CallTally {
        fallback: true,
        ..CallTally::default()
    };
    let cause = match failure {
        CallFailure::Trap(message) => {
            tally.trap = true;
            FallbackCause::Trap { message }
        }
        CallFailure::Timeout(limit) => {
            tally.timeout = true;
            FallbackCause::Timeout { limit }
        }
        CallFailure::MemoryLimit(limit_bytes) => {
            tally.memory_limit = true;
            FallbackCause::MemoryLimit { limit_bytes }
        }
    };
    (cause, tally)
}

/// The facts of the load-time self-check call.
fn self_check_facts() -> Facts {
    let mut facts = Facts::new(
        SessionId::new("self-check").expect("valid id"),
        SessionState::Connected,
    );
    facts.last_probe_detail = "connected".into();
    facts
}

enum Answer<T> {
    Value(T, Vec<Action>),
    Invalid(String),
}

impl Shared {
    fn resolve(&self, session: &SessionId, role: Role) -> Option<Arc<LoadedPolicy>> {
        let catalog = self
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        catalog
            .iter()
            .filter(|p| p.file.role == role && p.file.matches(session.as_str()))
            .max_by_key(|p| (p.file.priority, Reverse(p.name.clone())))
            .cloned()
    }

    fn builtin_memory_key(role: Role) -> String {
        format!("builtin/{role}")
    }

    fn builtin_keepalive(&self, facts: &Facts) -> Decision<Vec<Action>> {
        let started = Instant::now();
        let key = Self::builtin_memory_key(Role::Keepalive);
        let mut memory = self.memory.checkout(&key, &facts.session);
        let value = builtin::keepalive(facts, &PolicyConfig::new(), &mut memory);
        self.memory.commit(&key, &facts.session, memory);
        self.builtin_decision(Role::Keepalive, value, started)
    }

    fn builtin_watchdog(&self, facts: &Facts) -> Decision<Verdict> {
        let started = Instant::now();
        let key = Self::builtin_memory_key(Role::Watchdog);
        let mut memory = self.memory.checkout(&key, &facts.session);
        let value = builtin::watchdog(
            facts,
            &PolicyConfig::new(),
            self.clock.now_ms(),
            &mut memory,
        );
        self.memory.commit(&key, &facts.session, memory);
        self.builtin_decision(Role::Watchdog, value, started)
    }

    fn builtin_restore(
        &self,
        _session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
    ) -> Decision<Plan> {
        let started = Instant::now();
        let value = builtin::restore(inventory, backups, &PolicyConfig::new());
        self.builtin_decision(Role::Restore, value, started)
    }

    fn builtin_decision<T>(&self, role: Role, value: T, started: Instant) -> Decision<T> {
        let took = started.elapsed();
        self.metrics
            .record(BUILTIN_PLUGIN, role, took, CallTally::default());
        Decision {
            value,
            served_by: ServedBy::BuiltIn,
            took,
            refused: Vec::new(),
        }
    }

    fn call_state(
        &self,
        policy: &LoadedPolicy,
        session: &SessionId,
        memory: KvMemory,
    ) -> CallState {
        CallState::new(
            policy.limits.memory_bytes,
            memory,
            policy.config.clone(),
            self.clock.clone(),
            policy.name.clone(),
            session.clone(),
        )
    }

    /// One call of a loaded plugin: fresh Store, limits, memory copy-in and
    /// (on success) copy-out, validation, fallback, counting, logging.
    fn decide<T, R>(
        &self,
        policy: &LoadedPolicy,
        session: &SessionId,
        call: impl FnOnce(&mut wasmtime::Store<CallState>, &RolePre) -> wasmtime::Result<R>,
        accept: impl FnOnce(R) -> Answer<T>,
        fallback: impl FnOnce(&str) -> T,
        keep_memory: bool,
    ) -> Decision<T> {
        let started = Instant::now();
        let memory = self.memory.checkout(&policy.name, session);
        let state = self.call_state(policy, session, memory);
        let pre = &policy.plugin.pre;
        let (outcome, memory) = self
            .engine
            .call(policy.limits, state, |store| call(store, pre));
        let (result, mut tally) = match outcome {
            Ok(raw) => match accept(raw) {
                Answer::Value(value, refused) => {
                    if keep_memory {
                        self.memory.commit(&policy.name, session, memory);
                    }
                    (Ok((value, refused)), CallTally::default())
                }
                Answer::Invalid(reason) => (
                    Err(FallbackCause::InvalidAnswer { reason }),
                    CallTally {
                        invalid_answer: true,
                        fallback: true,
                        ..CallTally::default()
                    },
                ),
            },
            Err(failure) => {
                let (cause, tally) = cause_of(failure);
                (Err(cause), tally)
            }
        };
        let took = started.elapsed();
        let role = policy.file.role;
        let decision = match result {
            Ok((value, refused)) => {
                for action in &refused {
                    tracing::warn!(policy = %policy.name, %session, action = action.kind(), "refused: the policy file does not grant run_script");
                }
                tally.refused_actions = refused.len() as u64;
                Decision {
                    value,
                    served_by: ServedBy::Policy(policy.reference()),
                    took,
                    refused,
                }
            }
            Err(cause) => {
                tracing::warn!(policy = %policy.name, plugin = %policy.plugin.path.display(), %session, %role, %cause, "policy call failed; using the safe fallback");
                Decision {
                    value: fallback(&cause.to_string()),
                    served_by: ServedBy::Fallback {
                        policy: policy.reference(),
                        cause,
                    },
                    took,
                    refused: Vec::new(),
                }
            }
        };
        self.metrics
            .record(&policy.plugin.file_name(), role, took, tally);
        decision
    }

    fn keepalive_with(&self, policy: &LoadedPolicy, facts: &Facts) -> Decision<Vec<Action>> {
        self.keepalive_call(policy, facts, true)
    }

    fn keepalive_call(
        &self,
        policy: &LoadedPolicy,
        facts: &Facts,
        keep_memory: bool,
    ) -> Decision<Vec<Action>> {
        let input = wit::facts(facts);
        let permissions = policy.file.permissions;
        self.decide(
            policy,
            &facts.session,
            |store, pre| match pre {
                RolePre::Keepalive(pre) => {
                    pre.instantiate(&mut *store)?.call_tick(&mut *store, &input)
                }
                _ => Err(wasmtime::Error::msg("plugin is not linked as a keepalive")),
            },
            |raw| match accept_actions(raw.into_iter().map(wit::action).collect(), permissions) {
                Ok((allowed, refused)) => Answer::Value(allowed, refused),
                Err(reason) => Answer::Invalid(reason),
            },
            |_| builtin::keepalive_fallback(),
            keep_memory,
        )
    }

    fn watchdog_with(&self, policy: &LoadedPolicy, facts: &Facts) -> Decision<Verdict> {
        self.watchdog_call(policy, facts, true)
    }

    fn watchdog_call(
        &self,
        policy: &LoadedPolicy,
        facts: &Facts,
        keep_memory: bool,
    ) -> Decision<Verdict> {
        let input = wit::facts(facts);
        self.decide(
            policy,
            &facts.session,
            |store, pre| match pre {
                RolePre::Watchdog(pre) => pre
                    .instantiate(&mut *store)?
                    .call_check(&mut *store, &input),
                _ => Err(wasmtime::Error::msg("plugin is not linked as a watchdog")),
            },
            |raw| Answer::Value(accept_verdict(wit::verdict(raw)), Vec::new()),
            builtin::watchdog_fallback,
            keep_memory,
        )
    }

    fn restore_with(
        &self,
        policy: &LoadedPolicy,
        session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
    ) -> Decision<Plan> {
        self.restore_call(policy, session, inventory, backups, true)
    }

    fn restore_call(
        &self,
        policy: &LoadedPolicy,
        session: &SessionId,
        inventory: &Inventory,
        backups: &[BackupFacts],
        keep_memory: bool,
    ) -> Decision<Plan> {
        let (wit_inventory, wit_backups) = (wit::inventory(inventory), wit::backups(backups));
        self.decide(
            policy,
            session,
            |store, pre| match pre {
                RolePre::Restore(pre) => pre.instantiate(&mut *store)?.call_decide(
                    &mut *store,
                    session.as_str(),
                    &wit_inventory,
                    &wit_backups,
                ),
                _ => Err(wasmtime::Error::msg(
                    "plugin is not linked as a restore policy",
                )),
            },
            |raw| match accept_plan(wit::plan(raw), backups) {
                Ok(plan) => Answer::Value(plan, Vec::new()),
                Err(reason) => Answer::Invalid(reason),
            },
            |cause| builtin::restore_fallback(inventory, cause),
            keep_memory,
        )
    }

    /// One call with made-up inputs; its memory is thrown away. A plugin
    /// that cannot answer this is refused at load.
    pub(super) fn self_check(&self, policy: &LoadedPolicy) -> Result<(), FallbackCause> {
        let facts = self_check_facts();
        let served_by = match policy.file.role {
            Role::Keepalive => self.keepalive_call(policy, &facts, false).served_by,
            Role::Watchdog => self.watchdog_call(policy, &facts, false).served_by,
            Role::Restore => {
                let backups = [BackupFacts {
                    id: "self-check-backup".into(),
                    age: Duration::from_secs(3600),
                    size_bytes: 1 << 20,
                    verified: true,
                    restore_failed: false,
                }];
                self.restore_call(
                    policy,
                    &facts.session,
                    &Inventory::missing(),
                    &backups,
                    false,
                )
                .served_by
            }
        };
        match served_by {
            ServedBy::Fallback { cause, .. } => Err(cause),
            _ => Ok(()),
        }
    }
}
