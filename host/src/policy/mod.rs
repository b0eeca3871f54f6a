//! Policies: the wasmtime runtime for keepalive, watchdog and restore
//! decisions, with limits, fallbacks, hot reload and scenario tests.
//!
//! Owns: the engine, compiled plugins, policy files, the policies' private
//! memory, call counters and reload status. Never imports `session`,
//! `supervisor`, `browser`, `volume` or `backup`, and never acts: it only
//! answers with plain values ([`Action`], [`Verdict`], [`Plan`]) that the
//! session layer carries out. A plugin can never make the host panic or
//! stop: every failure becomes the role's safe fallback for that call.
//!
//! Read in this order: [`types`] (the contract in plain Rust), [`file`]
//! (policy files), [`runtime`] ([`PolicyRuntime`], the API other layers
//! call), [`status`] (provenance, events, status), [`answer`] (what makes
//! an answer valid), [`builtin`] (the seed behaviour in Rust, and the
//! fallbacks), [`scenario`] (`vigil policy test`). Internal: `role` (one
//! lifecycle per role behind one trait), `call` (the one call path),
//! `catalog` (what serves now), `engine` (wasmtime, limits, compile cache),
//! `wit` (shared bindings and host imports), `reload` and `watch` (hot
//! reload). Arrows point down that list: `runtime` uses `reload`, `call`
//! and `catalog`; none of them uses `runtime`.

pub mod answer;
pub mod builtin;
mod call;
mod catalog;
pub mod clock;
pub mod config;
mod engine;
pub mod error;
pub mod file;
pub mod memory;
pub mod metrics;
mod reload;
pub(crate) mod role;
pub mod runtime;
pub mod scenario;
pub mod status;
pub mod types;
mod watch;
mod wit;

pub use clock::{Clock, FakeClock, SystemClock};
pub use config::{ConfigValue, PolicyConfig};
pub use engine::{CompileSource, Footprint};
pub use error::PolicyError;
pub use file::{Limits, Permissions, PolicyFile};
pub use memory::MEMORY_CAP_BYTES;
pub use metrics::{CallCounters, MetricsSnapshot};
pub use reload::PolicySource;
pub use runtime::{PolicyRuntime, RuntimeOptions};
pub use status::{
    Binding, CallRecord, Decision, FallbackCause, PolicyRef, PolicyStatus, Rejection, ReloadEvent,
    ServedBy,
};
pub use types::{
    Action, BackupFacts, CriticalFile, Facts, Inventory, LockState, Plan, RestoreQuestion, Role,
    SessionState, Verdict,
};
pub use watch::ReloadWatcher;
