//! Vigil keeps logged-in browser sessions alive: it owns the Chromium
//! profiles on a volume, backs them up to object storage, restores them on
//! start, and keeps each browser connected, following small sandboxed
//! WebAssembly policies.
//!
//! A map of the crate, in the order a newcomer should read it:
//!
//! - [`id`]: identifiers shared by every layer ([`id::SessionId`]).
//! - [`config`]: `vigil.toml` -> typed config, errors with file:line:col.
//! - [`volume`]: one profile directory: inventory, locks, atomic replace.
//! - [`archive`]: profile <-> tar.gz stream, checksums.
//! - [`backup`]: backups in object storage: put, list, verify, prune, fetch.
//! - [`schedule`]: cron jobs for backups and retention.
//! - [`policy`]: the wasmtime runtime for keepalive / watchdog / restore
//!   policies, with limits, fallbacks and hot reload.
//! - [`browser`]: Chromium through chromiumoxide: launch, probe, act.
//! - [`session`]: one session's life, the state machine.
//! - [`fleet`]: many hosts on one store: the catalog of sessions, host
//!   membership, ownership with fencing, placement.
//! - [`supervisor`]: all sessions: start, restore, stop, drain.
//! - [`webhook`]: signed event notifications to the operator's services.
//! - [`api`]: the HTTP admin API, `/metrics`, and its client.
//! - [`systemd`]: READY / WATCHDOG / STOPPING notifications.
//!
//! Dependencies point one way: `supervisor` -> (`fleet`, `session`) ->
//! (`browser`, `volume`, `backup`, `policy`). `volume`, `archive`, `backup`
//! and `policy` never import `session`, `fleet` or `supervisor`, and nothing
//! here knows a web app by name.

pub mod api;
pub mod archive;
pub mod backup;
pub mod browser;
pub mod config;
pub mod fixture;
pub mod fleet;
pub mod id;
pub mod policy;
pub mod schedule;
pub mod session;
pub mod supervisor;
pub mod systemd;
pub mod volume;
pub mod webhook;
