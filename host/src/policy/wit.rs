//! The WIT side shared by every role: the interfaces' bindings, the state
//! a call's Store carries, the host imports every policy gets (log, clock,
//! config, memory), and the facts in WIT types. Each role's own world and
//! conversions are in `role/`.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use super::config::{ConfigValue, PolicyConfig};
use super::memory::{KvMemory, MemoryRefusal};
use super::types as plain;
use crate::id::SessionId;

/// The interfaces every world imports (`types`, `log`, `clock`, `config`,
/// `memory`), generated once from one of the worlds (any would do: they
/// import the same ones). Each role's world (`role/`) maps its imports onto
/// these, so the host implements them once, here.
#[allow(dead_code)] // the keepalive world's export glue here is unused: role/keepalive.rs has its own
pub(crate) mod shared {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "keepalive",
    });
}

use shared::vigil::policy::{clock, config, log, memory, types as wit};

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
    /// The call's one "now": every clock the guest reads stands still at
    /// it, so a journaled call replays exactly.
    now_ms: u64,
    policy: Arc<str>,
    session: SessionId,
    log_lines: u32,
}

impl CallState {
    pub fn new(
        memory_cap: u64,
        memory: KvMemory,
        config: Arc<PolicyConfig>,
        now_ms: u64,
        policy: Arc<str>,
        session: SessionId,
    ) -> Self {
        // An empty WASI context: no directories, environment or sockets;
        // clocks stopped at the call's time, randomness fixed, so a
        // decision depends only on the call's inputs.
        let output = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(WasiClock(now_ms))
            .monotonic_clock(WasiClock(now_ms))
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
            now_ms,
            policy,
            session,
            log_lines: 0,
        }
    }

    /// Sends what the guest printed to the log, one event per line, and
    /// returns it (a panic message says why a call trapped).
    pub fn flush_output(&self) -> String {
        let bytes = self.output.contents();
        if bytes.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(MAX_LOG_LINES as usize)
        {
            tracing::warn!(policy = %self.policy, session = %self.session, output = line, "plugin output");
        }
        text
    }
}

const FIXED_RANDOM: [u8; 16] = *b"vigil-policy-rng";

/// The call's time as WASI's wall and monotonic clocks, standing still.
struct WasiClock(u64);

impl HostWallClock for WasiClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl HostMonotonicClock for WasiClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.saturating_mul(1_000_000)
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
            let cut = message.len() - end;
            message.truncate(end);
            message.push_str(&format!("…[cut {cut} bytes]"));
        }
        let (policy, session) = (&*self.policy, &self.session);
        match level {
            log::Level::Trace => tracing::trace!(policy, %session, text = %message, "policy log"),
            log::Level::Debug => tracing::debug!(policy, %session, text = %message, "policy log"),
            log::Level::Info => tracing::info!(policy, %session, text = %message, "policy log"),
            log::Level::Warn => tracing::warn!(policy, %session, text = %message, "policy log"),
            log::Level::Error => tracing::error!(policy, %session, text = %message, "policy log"),
        }
    }
}

impl clock::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        self.now_ms
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

/// The facts of the load-time self-check call.
pub(crate) fn self_check_facts() -> plain::Facts {
    let mut facts = plain::Facts::new(
        SessionId::new("self-check").expect("valid id"),
        plain::SessionState::Connected,
    );
    facts.last_probe_detail = "connected".into();
    facts
}
