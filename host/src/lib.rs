//! Vigil keeps logged-in browser sessions alive: it owns the Chromium
//! profiles on a volume, backs them up to object storage, restores them on
//! start, and keeps each browser connected, following small sandboxed
//! WebAssembly policies.
//!
//! A map of the crate, in the order a newcomer should read it:
//!
//! - [`id`]: identifiers shared by every layer ([`id::SessionId`]).
//! - [`action`]: what a keepalive may ask for: the one action type from a
//!   policy's accepted answer to the browser.
//! - [`fields`]: the shapes of values in files (durations, sizes, paths
//!   relative to the file, URLs) and `file:line:col`, parsed once: the
//!   one duration grammar of `vigil.toml` and policy files is here.
//! - [`config`]: `vigil.toml` -> typed config; each section's types live
//!   with the module it configures.
//! - [`volume`]: one profile directory: inventory, locks, atomic replace.
//! - [`archive`]: profile <-> tar.gz stream, checksums.
//! - [`backup`]: backups in object storage: put, list, verify, prune, fetch.
//! - [`schedule`]: cron jobs for backups and retention.
//! - [`secret`]: secrets named by `vigil.toml` (a file or a variable), read late.
//! - [`policy`]: the wasmtime runtime for keepalive / watchdog / restore
//!   policies (one lifecycle per role), with limits, fallbacks and hot
//!   reload.
//! - [`journal`]: every policy decision as a JSON line; replaying a
//!   journal against another policy; a slice as a scenario.
//! - [`browser`]: Chromium through chromiumoxide: launch, probe, act, screencast.
//! - [`qr`]: login QR codes: drawn for a terminal, read from screenshots.
//! - [`session`]: one session's life: its record (plain data), the
//!   profile's preparation, its backups, and the runner loop.
//! - [`fleet`]: many hosts on one store: the catalog of sessions, host
//!   membership, ownership with fencing, placement.
//! - [`supervisor`]: all sessions: start, restore, stop, drain.
//! - [`webhook`]: signed event notifications to the operator's services.
//! - [`feed`]: the same events, numbered, for the API's event stream.
//! - [`api`]: the HTTP admin API, `/metrics`, the web console, and its client.
//! - [`systemd`]: READY / WATCHDOG / STOPPING notifications.
//! - [`untrusted`]: text from policies and pages made safe for each place
//!   it is shown (logs, terminals, JSON).
//!
//! Dependencies point one way: `supervisor` -> (`fleet`, `session`) ->
//! (`browser`, `volume`, `backup`, `journal` -> `policy`), and `config` ->
//! the modules whose sections it places. `volume`, `archive`, `backup` and
//! `policy` never import `session`, `fleet` or `supervisor`; no module
//! imports one that imports it back; nothing here knows a web app by name.

pub mod action;
pub mod api;
pub mod archive;
pub mod backup;
pub mod browser;
pub mod config;
pub mod feed;
pub mod fields;
pub mod fleet;
pub mod id;
pub mod journal;
pub mod policy;
pub mod qr;
pub mod schedule;
pub mod secret;
pub mod session;
pub mod supervisor;
pub mod systemd;
pub mod untrusted;
pub mod volume;
pub mod webhook;
