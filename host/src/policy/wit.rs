//! The WIT side: bindings generated from `wit/`, the state a call's Store
//! carries, the host imports every policy gets (log, clock, config, memory),
//! and conversions between the WIT types and the plain types of `types.rs`.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use super::clock::Clock;
use super::config::{ConfigValue, PolicyConfig};
use super::memory::{KvMemory, MemoryRefusal};
use super::types as plain;
use crate::id::SessionId;

pub(crate) mod keepalive {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "keepalive",
    });
}

pub(crate) mod watchdog {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "watchdog",
        with: { "vigil:policy": super::keepalive::vigil::policy },
    });
}

pub(crate) mod restore {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "restore",
        with: { "vigil:policy": super::keepalive::vigil::policy },
    });
}

use keepalive::vigil::policy::{clock, config, log, memory, types as wit};

/// Log lines one call may write; the rest are dropped (with one warning).
const MAX_LOG_LINES: u32 = 32;
const MAX_LOG_LINE_BYTES: usize = 1024;

/// What a guest may print to stdout/stderr in one call (a panic message,
/// say); it goes to the log.
const OUTPUT_CAPACITY: usize = 4096;

/// Everything one call's Store holds. Built fresh for every call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    output: MemoryOutputPipe,
    table: ResourceTable,
    pub limiter: MemoryCap,
    pub memory: KvMemory,
    config: Arc<PolicyConfig>,
    clock: Arc<dyn Clock>,
    policy: Arc<str>,
    session: SessionId,
    log_lines: u32,
}

impl CallState {
    pub fn new(
        memory_cap: u64,
        memory: KvMemory,
        config: Arc<PolicyConfig>,
        clock: Arc<dyn Clock>,
        policy: Arc<str>,
        session: SessionId,
    ) -> Self {
        // An empty WASI context: no directories, environment or sockets;
        // clocks from the host's (maybe fake) clock, randomness fixed, so a
        // decision depends only on the call's inputs.
        let output = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(WasiClock(clock.clone()))
            .monotonic_clock(WasiClock(clock.clone()))
            .secure_random(Deterministic::new(FIXED_RANDOM.to_vec()))
            .insecure_random(Deterministic::new(FIXED_RANDOM.to_vec()))
            .insecure_random_seed(0x5eed)
            .build();
        CallState {
            wasi,
            output,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                cap: usize::try_from(memory_cap).unwrap_or(usize::MAX),
                hit: false,
                peak: 0,
            },
            memory,
            config,
            clock,
            policy,
            session,
            log_lines: 0,
        }
    }

    /// Sends what the guest printed to the log, one event per line.
    pub fn flush_output(&self) {
        let bytes = self.output.contents();
        if bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(MAX_LOG_LINES as usize)
        {
            tracing::warn!(policy = %self.policy, session = %self.session, "plugin output: {line}");
        }
    }
}

const FIXED_RANDOM: [u8; 16] = *b"vigil-policy-rng";

/// The host clock as WASI's wall and monotonic clocks.
struct WasiClock(Arc<dyn Clock>);

impl HostWallClock for WasiClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.now_ms())
    }
}

impl HostMonotonicClock for WasiClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.now_ms().saturating_mul(1_000_000)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Denies linear memory past the policy's cap and remembers that it did,
/// so the call's failure is counted as a memory-limit hit.
pub(crate) struct MemoryCap {
    cap: usize,
    pub hit: bool,
    /// The largest linear memory granted so far (a memory's creation at
    /// instantiation counts as growing it from 0).
    pub peak: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        if desired > self.cap {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit: the plugin asked for {desired} bytes, its cap is {}",
                self.cap
            )));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        Ok(desired <= 100_000)
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(policy = %self.policy, session = %self.session, "policy logs too much; dropping the rest of this call's lines");
            }
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE_BYTES {
            let mut end = MAX_LOG_LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let (policy, session) = (&*self.policy, &self.session);
        match level {
            log::Level::Trace => tracing::trace!(policy, %session, "{message}"),
            log::Level::Debug => tracing::debug!(policy, %session, "{message}"),
            log::Level::Info => tracing::info!(policy, %session, "{message}"),
            log::Level::Warn => tracing::warn!(policy, %session, "{message}"),
            log::Level::Error => tracing::error!(policy, %session, "{message}"),
        }
    }
}

impl clock::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        self.clock.now_ms()
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<config::Value> {
        self.config.get(&key).map(|v| match v {
            ConfigValue::Text(s) => config::Value::Text(s.clone()),
            ConfigValue::Integer(i) => config::Value::Integer(*i),
            ConfigValue::Float(f) => config::Value::Float(*f),
            ConfigValue::Boolean(b) => config::Value::Boolean(*b),
            ConfigValue::TextList(l) => config::Value::TextList(l.clone()),
        })
    }

    fn keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }
}

impl memory::Host for CallState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.memory.get(&key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), memory::MemoryError> {
        self.memory.set(&key, value).map_err(|e| match e {
            MemoryRefusal::Full => memory::MemoryError::Full,
            MemoryRefusal::BadKey => memory::MemoryError::BadKey,
        })
    }

    fn remove(&mut self, key: String) {
        self.memory.remove(&key);
    }
}

impl wit::Host for CallState {}

pub(crate) fn facts(f: &plain::Facts) -> wit::Facts {
    let ms = |d: std::time::Duration| d.as_millis().try_into().unwrap_or(u64::MAX);
    wit::Facts {
        session_id: f.session.as_str().to_owned(),
        state: match f.state {
            plain::SessionState::Starting => wit::SessionState::Starting,
            plain::SessionState::Restoring => wit::SessionState::Restoring,
            plain::SessionState::Launching => wit::SessionState::Launching,
            plain::SessionState::Connected => wit::SessionState::Connected,
            plain::SessionState::Degraded => wit::SessionState::Degraded,
            plain::SessionState::NeedsLogin => wit::SessionState::NeedsLogin,
            plain::SessionState::Stopped => wit::SessionState::Stopped,
            plain::SessionState::Failed => wit::SessionState::Failed,
        },
        ms_in_state: ms(f.time_in_state),
        consecutive_probe_failures: f.consecutive_probe_failures,
        restarts_last_hour: f.restarts_last_hour,
        ms_since_activity: f.since_activity.map(ms),
        ms_since_backup: f.since_backup.map(ms),
        last_probe_detail: f.last_probe_detail.clone(),
        ms_since_connected: f.since_connected.map(ms),
        launch_failures: f.launch_failures,
        missing_critical_files: f.missing_critical_files.clone(),
    }
}

pub(crate) fn inventory(i: &plain::Inventory) -> wit::Inventory {
    wit::Inventory {
        exists: i.exists,
        critical_files: i
            .critical_files
            .iter()
            .map(|c| wit::CriticalFile {
                path: c.path.clone(),
                present: c.present,
                non_empty: c.non_empty,
            })
            .collect(),
        size_bytes: i.size_bytes,
        lock: match i.lock {
            plain::LockState::None => wit::LockState::None,
            plain::LockState::Stale => wit::LockState::Stale,
            plain::LockState::Held => wit::LockState::Held,
        },
    }
}

pub(crate) fn backups(b: &[plain::BackupFacts]) -> Vec<wit::Backup> {
    b.iter()
        .map(|b| wit::Backup {
            id: b.id.clone(),
            age_ms: b.age.as_millis().try_into().unwrap_or(u64::MAX),
            size_bytes: b.size_bytes,
            verified: b.verified,
            restore_failed: b.restore_failed,
        })
        .collect()
}

pub(crate) fn action(a: wit::Action) -> plain::Action {
    match a {
        wit::Action::MouseMove(p) => plain::Action::MouseMove { x: p.x, y: p.y },
        wit::Action::KeyPress(key) => plain::Action::KeyPress { key },
        wit::Action::Focus => plain::Action::Focus,
        wit::Action::WakeLock => plain::Action::WakeLock,
        wit::Action::Presence => plain::Action::Presence,
        wit::Action::ReloadPage => plain::Action::ReloadPage,
        wit::Action::RunScript(script) => plain::Action::RunScript { script },
        wit::Action::BackupNow => plain::Action::BackupNow,
        wit::Action::Nothing => plain::Action::Nothing,
    }
}

pub(crate) fn verdict(v: wit::Verdict) -> plain::Verdict {
    match v {
        wit::Verdict::Healthy => plain::Verdict::Healthy,
        wit::Verdict::Degraded(reason) => plain::Verdict::Degraded { reason },
        wit::Verdict::ReloadPage(reason) => plain::Verdict::ReloadPage { reason },
        wit::Verdict::RestartBrowser(reason) => plain::Verdict::RestartBrowser { reason },
        wit::Verdict::RestoreFromBackup(reason) => plain::Verdict::RestoreFromBackup { reason },
        wit::Verdict::GiveUp(reason) => plain::Verdict::GiveUp { reason },
    }
}

pub(crate) fn plan(p: wit::Plan) -> plain::Plan {
    let reason = p.reason;
    match p.choice {
        wit::Choice::UseDisk => plain::Plan::UseDisk { reason },
        wit::Choice::RestoreBackup(id) => plain::Plan::RestoreBackup { id, reason },
        wit::Choice::StartFresh => plain::Plan::StartFresh { reason },
        wit::Choice::Wait(ms) => plain::Plan::Wait {
            after: std::time::Duration::from_millis(ms),
            reason,
        },
    }
}
