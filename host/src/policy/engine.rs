//! The one wasmtime `Engine` of the process and what hangs off it: the
//! epoch ticker that bounds every call in wall-clock time, the compile
//! cache on disk, one linker per role, and the call itself with its memory
//! cap. Knows nothing of policy files or sessions' state.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::answer::excerpt;
use super::config::PolicyConfig;
use super::error::PolicyError;
use super::file::{Limits, MAX_MEMORY_BYTES};
use super::memory::KvMemory;
use super::role::{PolicyRole, dispatch};
use super::types::Role;
use super::wit::CallState;
use crate::id::SessionId;

/// How often the epoch advances while calls run: the granularity of
/// timeouts.
const TICK: Duration = Duration::from_millis(1);

/// The bound on the one instantiation that measures a plugin's footprint.
const FOOTPRINT_TIMEOUT: Duration = Duration::from_secs(1);

/// Component instances the pooling allocator keeps slots for: the most
/// calls that can run at once. More wait for a slot.
pub(crate) const MAX_CONCURRENT_CALLS: u32 = 64;

/// Bytes of each memory (and table) slot reset in place rather than
/// returned to the kernel.
const KEEP_RESIDENT: usize = 256 << 10;

/// Where a compiled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompileSource {
    /// Compiled now (and written to the cache if there is one).
    Compiled,
    /// Loaded from the compile cache.
    Cache,
}

pub(crate) struct Plugin {
    pub path: PathBuf,
    /// Full hex sha256 of the `.wasm` bytes.
    pub sha256: String,
    /// The role's [`PolicyRole::Pre`]: compiled, linked, ready to
    /// instantiate per call.
    pre: Box<dyn Any + Send + Sync>,
    pub compiled_from: CompileSource,
    pub load_time: Duration,
    pub footprint: Footprint,
}

/// What an instance of a plugin costs before any call, measured at load
/// with one throwaway instance under the highest limits. Every call pays
/// it again (a fresh instance per call), which is what matters for a
/// Python or JavaScript component, whose interpreter is its start state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// Size of the `.wasm`.
    pub size_bytes: u64,
    /// Linear memory of a fresh instance, before its first call.
    pub start_memory_bytes: u64,
    /// Time to make a fresh instance, in microseconds.
    pub instantiate_us: u64,
}

impl Plugin {
    /// The first 12 hex digits of the sha256, as shown to operators.
    pub fn short_sha(&self) -> &str {
        &self.sha256[..12]
    }

    pub fn file_name(&self) -> String {
        super::file::file_name(&self.path)
    }

    /// The plugin prepared for role `R`; `None` if it was loaded for
    /// another role.
    pub fn pre<R: PolicyRole>(&self) -> Option<&R::Pre> {
        self.pre.downcast_ref()
    }
}

/// Why one call gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallFailure {
    Trap(String),
    Timeout(Duration),
    MemoryLimit(u64),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Trap(m) => write!(f, "trap: {m}"),
            CallFailure::Timeout(t) => write!(f, "timeout after {} ms", t.as_millis()),
            CallFailure::MemoryLimit(b) => write!(f, "memory cap of {} MiB", b >> 20),
        }
    }
}

pub(crate) struct PolicyEngine {
    engine: Engine,
    /// One linker per role: WASI (empty) plus the role world's imports.
    linkers: BTreeMap<Role, Linker<CallState>>,
    cache: CompileCache,
    ticker: EpochTicker,
}

impl PolicyEngine {
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let engine = build_engine()?;
        let mut linkers = BTreeMap::new();
        for role in Role::ALL {
            let mut l = Linker::new(&engine);
            // Rust std guests import WASI p2 even when they use none of it;
            // CallState's WasiCtx gives them nothing (no dirs, env, sockets).
            wasmtime_wasi::p2::add_to_linker_sync(&mut l).map_err(engine_error)?;
            dispatch!(role, R => R::link(&mut l)).map_err(engine_error)?;
            linkers.insert(role, l);
        }
        Ok(PolicyEngine {
            linkers,
            cache: CompileCache::new(cache_dir, &engine),
            ticker: EpochTicker::start(engine.clone()),
            engine,
        })
    }

    /// Compiles (or loads from the cache) and links a plugin for `role`.
    /// `policy` names the policy file in errors; `sha256` is the full hex
    /// sha256 of `bytes` (the caller has it already: hashing a 18 MB
    /// component is not free).
    pub fn load(
        &self,
        policy: &Path,
        plugin: &Path,
        role: Role,
        bytes: &[u8],
        sha256: String,
    ) -> Result<Plugin, PolicyError> {
        let started = Instant::now();
        let compile_error = |e: wasmtime::Error| PolicyError::Compile {
            policy: policy.to_path_buf(),
            plugin: plugin.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let (component, compiled_from) = self
            .cache
            .component(&self.engine, bytes, &sha256)
            .map_err(compile_error)?;
        // The image each call's linear memory is mapped from, made now
        // rather than by the first call: for a Python or JavaScript
        // component that is megabytes copied, and it must not count against
        // the self-check's (or the first session's) time limit.
        component
            .initialize_copy_on_write_image()
            .map_err(compile_error)?;
        let wrong_world = |e: wasmtime::Error| PolicyError::WrongWorld {
            policy: policy.to_path_buf(),
            plugin: plugin.to_path_buf(),
            role,
            reason: format!("{e:#}"),
        };
        let linked = self.linkers[&role]
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre: Box<dyn Any + Send + Sync> =
            dispatch!(role, R => Box::new(R::prepare(linked.clone()).map_err(wrong_world)?));
        let load_time = started.elapsed();
        let footprint = self.footprint(&linked, plugin, bytes.len());
        Ok(Plugin {
            path: plugin.to_path_buf(),
            sha256,
            pre,
            compiled_from,
            load_time,
            footprint,
        })
    }

    /// Instantiates `linked` once, calling nothing, to see what an
    /// instance costs: the highest memory cap, and a second (a plugin whose
    /// start never ends must not hold a reload up for long). The same for
    /// every role: making the instance is all it measures. A failure here
    /// shows again in the self-check call.
    fn footprint(&self, linked: &InstancePre<CallState>, plugin: &Path, size: usize) -> Footprint {
        let generous = Limits {
            timeout: FOOTPRINT_TIMEOUT,
            memory_bytes: MAX_MEMORY_BYTES,
        };
        let state = CallState::new(
            generous.memory_bytes,
            KvMemory::default(),
            Arc::new(PolicyConfig::new()),
            0,
            Arc::from(super::file::file_name(plugin)),
            SessionId::new("footprint").expect("valid id"),
        );
        let mut peak = 0;
        let started = Instant::now();
        let _ = self.call(generous, state, |store| {
            let instantiated = linked.instantiate(&mut *store).map(drop);
            peak = store.data().limiter.peak;
            instantiated
        });
        Footprint {
            size_bytes: size as u64,
            start_memory_bytes: peak as u64,
            instantiate_us: started.elapsed().as_micros().try_into().unwrap_or(u64::MAX),
        }
    }

    /// Runs `call` in a fresh Store bounded by `limits`. Returns the memory
    /// the call left (the caller keeps it only if the answer is good).
    pub fn call<R>(
        &self,
        limits: Limits,
        state: CallState,
        call: impl FnOnce(&mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> (Result<R, CallFailure>, KvMemory) {
        let _running = self.ticker.enter();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = limits.timeout.as_micros().div_ceil(TICK.as_micros()) as u64;
        store.set_epoch_deadline(ticks.max(1));
        store.epoch_deadline_trap();
        let outcome = call(&mut store);
        let output = store.data().flush_output();
        let limit_hit = store.data().limiter.hit;
        let memory = std::mem::take(&mut store.data_mut().memory);
        drop(store);
        let outcome = outcome.map_err(|e| {
            if limit_hit {
                CallFailure::MemoryLimit(limits.memory_bytes)
            } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                CallFailure::Timeout(limits.timeout)
            } else {
                CallFailure::Trap(trap_cause(&e, &output))
            }
        });
        (outcome, memory)
    }
}

/// What happened, in words: the guest's panic message when it printed
/// one, the trap's own name ("stack overflow"), or the error's root cause;
/// never wasmtime's "error while executing at wasm backtrace:" heading.
/// Cut to about 200 characters: a guest chooses its panic message.
fn trap_cause(error: &wasmtime::Error, output: &str) -> String {
    if let Some(at) = output.find("panicked at") {
        let panic: Vec<&str> = output[at..]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note:"))
            .take(2)
            .collect();
        return excerpt(&panic.join(" "));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "stack overflow".to_string(),
        Some(Trap::UnreachableCodeReached) => {
            "unreachable code reached (a wasm `unreachable`, as after an abort)".to_string()
        }
        Some(trap) => excerpt(&trap.to_string()),
        None => excerpt(&error.root_cause().to_string()),
    }
}

fn engine_error(e: wasmtime::Error) -> PolicyError {
    PolicyError::Engine(format!("{e:#}"))
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config
}

fn build_engine() -> Result<Engine, PolicyError> {
    // Pooling makes a fresh instance per call cheap (slots are reused,
    // memory is reset copy-on-write). Some sandboxes refuse the large
    // virtual reservation; then fall back to plain allocation.
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_CONCURRENT_CALLS)
        .total_core_instances(MAX_CONCURRENT_CALLS * 8)
        .total_memories(MAX_CONCURRENT_CALLS * 2)
        .total_tables(MAX_CONCURRENT_CALLS * 8)
        .total_stacks(MAX_CONCURRENT_CALLS)
        .max_memory_size(MAX_MEMORY_BYTES as usize)
        // Resetting a slot's first pages with memset instead of madvise
        // keeps them mapped: the next call takes no page faults there.
        // 256 KiB covers a plugin built with a 64 KiB stack (see
        // .cargo/config.toml) plus its data and a small heap.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut pooled = base_config();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "pooling allocator unavailable; instantiating on demand");
            Engine::new(&base_config()).map_err(engine_error)
        }
    }
}

/// Advances the engine's epoch every [`TICK`] while at least one call runs,
/// and sleeps otherwise. Stopped and joined on drop.
struct EpochTicker {
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Running<'a> {
    active: &'a AtomicUsize,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let active = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (active, stop) = (active.clone(), stop.clone());
            thread::Builder::new()
                .name("vigil-policy-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if active.load(Ordering::SeqCst) == 0 {
                            thread::park_timeout(Duration::from_secs(1));
                        } else {
                            thread::sleep(TICK);
                            engine.increment_epoch();
                        }
                    }
                })
                .ok()
        };
        if thread.is_none() {
            tracing::error!(
                "cannot start the policy epoch thread: plugin calls have no time bound"
            );
        }
        EpochTicker {
            active,
            stop,
            thread,
        }
    }

    fn enter(&self) -> Running<'_> {
        if self.active.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
        Running {
            active: &self.active,
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Compiled components on disk, keyed by the wasm's sha256 and the
/// engine's compatibility hash (wasmtime version + settings), so a new
/// wasmtime never loads an old artifact. Written via temp file + rename.
struct CompileCache {
    dir: Option<PathBuf>,
    compat: String,
}

impl CompileCache {
    fn new(dir: Option<PathBuf>, engine: &Engine) -> Self {
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let compat = hex(&hasher.0.finalize())[..16].to_string();
        CompileCache { dir, compat }
    }

    fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, CompileSource)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, CompileSource::Compiled));
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.compat));
        if path.exists() {
            // SAFETY: the cache directory belongs to Vigil's operator, and
            // the name pins both the wasm's hash and the engine's
            // compatibility hash; wasmtime still checks the header.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, CompileSource::Cache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "unusable compile cache entry; recompiling")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = write_atomically(dir, &path, &component.serialize()?) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
        }
        Ok((component, CompileSource::Compiled))
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
