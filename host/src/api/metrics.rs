//! `/metrics`: the Prometheus text format (version 0.0.4), written by hand.
//! Owns the encoder ([`Exposition`]) and the host's own metric families;
//! reads counters others keep (sessions, policy runtime), never keeps
//! session state of its own.
//!
//! # Adding metric families
//!
//! Implement [`Collector`] and pass it to [`super::Listener::serve`]:
//!
//! ```ignore
//! impl Collector for Uploads {
//!     fn collect(&self, out: &mut Exposition) {
//!         let mut sent = out.family("vigil_uploads_total", MetricKind::Counter,
//!             "Uploads acknowledged by the store.");
//!         for (store, n) in self.sent() {
//!             sent.sample(&[("store", store)], n as f64);
//!         }
//!     }
//! }
//! ```
//!
//! A family's HELP and TYPE lines are written once, and all its samples
//! follow them, as the format requires.
//!
//! Label values come only from fixed sets: session ids and webhook names
//! from `vigil.toml`, plugin file names from policy files, and enums
//! (state, role, source, outcome). Never text a policy or a page wrote
//! (reasons, keys, probe details): that would let them mint series and
//! write into the scrape (see [`crate::untrusted`]).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::Host;
use crate::journal::JournalStats;
use crate::policy::{PolicyRuntime, ReloadEvent};
use crate::session::{RestoreSource, SessionState, SessionStatus};
use crate::webhook::WebhookStats;

/// The content type of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that adds metric families to each scrape.
pub trait Collector: Send + Sync {
    fn collect(&self, out: &mut Exposition);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        }
    }
}

/// One scrape being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
    names: BTreeSet<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts family `name`; write its samples through the returned value
    /// before starting the next family.
    ///
    /// # Panics
    /// When `name` was already written in this scrape, or is not a valid
    /// metric name: both are programming errors a test scrape catches.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) -> Family<'_> {
        assert!(valid_name(name), "invalid metric name {name:?}");
        assert!(
            self.names.insert(name.to_owned()),
            "metric family {name} written twice"
        );
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        Family {
            out: self,
            name: name.to_owned(),
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// The family being written.
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: String,
}

impl Family<'_> {
    /// A sample `name{labels} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.sample_suffixed("", labels, value)
    }

    /// A sample of a histogram or summary part: `name_bucket`, `name_sum`,
    /// `name_count`.
    pub fn sample_suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> &mut Self {
        let text = &mut self.out.text;
        text.push_str(&self.name);
        text.push_str(suffix);
        if !labels.is_empty() {
            text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                let _ = write!(text, "{k}=\"{}\"", escape_label(v));
            }
            text.push('}');
        }
        text.push(' ');
        text.push_str(&number(value));
        text.push('\n');
        self
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn seconds_since(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Policy reloads by outcome, counted from the runtime's reload events
/// since the API started.
#[derive(Default)]
pub struct ReloadTally {
    accepted: AtomicU64,
    rejected: AtomicU64,
    removed: AtomicU64,
}

impl ReloadTally {
    /// Starts counting; the returned task runs until aborted.
    pub fn start(policies: &PolicyRuntime) -> (Arc<Self>, JoinHandle<()>) {
        let tally = Arc::new(Self::default());
        let mut events = policies.subscribe();
        let counting = Arc::clone(&tally);
        let task = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => counting.count(&event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "policy reload events missed by /metrics");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        (tally, task)
    }

    fn count(&self, event: &ReloadEvent) {
        let counter = match event {
            ReloadEvent::Accepted { .. } => &self.accepted,
            ReloadEvent::Rejected { .. } => &self.rejected,
            ReloadEvent::Removed { .. } => &self.removed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sessions, backups, restores and policies of the host.
pub struct HostMetrics {
    host: Host,
    reloads: Arc<ReloadTally>,
}

impl HostMetrics {
    pub fn new(host: Host, reloads: Arc<ReloadTally>) -> Self {
        Self { host, reloads }
    }
}

impl Collector for HostMetrics {
    fn collect(&self, out: &mut Exposition) {
        let sessions: Vec<SessionStatus> =
            self.host.sessions().iter().map(|s| s.status()).collect();
        sessions_metrics(&sessions, out);
        backup_metrics(&sessions, out);
        restore_metrics(&sessions, out);
        policy_metrics(self.host.policies(), &self.reloads, out);
        journal_metrics(self.host.journal().stats(), out);
        webhook_metrics(&self.host.webhook_stats(), out);
        if let Some(fleet) = self.host.control().fleet() {
            fleet_metrics(fleet, out);
        }
    }
}

/// In a fleet: the hosts this host sees, what it owns, and its counters.
fn fleet_metrics(fleet: &crate::fleet::Fleet, out: &mut Exposition) {
    let view = fleet.view().borrow().clone();
    let mut hosts = out.family(
        "vigil_fleet_hosts",
        MetricKind::Gauge,
        "Runs of hosts in the fleet at this host's latest listing, by health.",
    );
    for health in ["alive", "silent", "dead"] {
        let n = view
            .hosts
            .iter()
            .filter(|h| {
                serde_json::to_value(h.health)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    == Some(health.to_string())
            })
            .count();
        hosts.sample(&[("health", health)], n as f64);
    }
    out.family(
        "vigil_fleet_owned_sessions",
        MetricKind::Gauge,
        "Sessions this host owns.",
    )
    .sample(&[], fleet.owned().len() as f64);
    out.family(
        "vigil_fleet_fenced",
        MetricKind::Gauge,
        "1 while this host is fenced (it must not run any browser).",
    )
    .sample(&[], if fleet.is_fenced() { 1.0 } else { 0.0 });
    let stats = fleet.stats();
    for (name, help, n) in [
        (
            "vigil_fleet_takeovers_total",
            "Sessions this host took over from a dead host.",
            stats.takeovers,
        ),
        (
            "vigil_fleet_claims_total",
            "Sessions this host claimed (first owner, handover or takeover).",
            stats.claims,
        ),
        (
            "vigil_fleet_releases_total",
            "Sessions this host released (handover, drain, removal).",
            stats.releases,
        ),
        (
            "vigil_fleet_renew_failures_total",
            "Membership renewals that failed and were retried.",
            stats.renew_failures,
        ),
        (
            "vigil_fleet_fences_total",
            "Times this host fenced itself.",
            stats.fenced,
        ),
        (
            "vigil_fleet_hosts_declared_dead_total",
            "Hosts this host declared dead.",
            stats.hosts_declared_dead,
        ),
    ] {
        out.family(name, MetricKind::Counter, help)
            .sample(&[], n as f64);
    }
}

fn journal_metrics(stats: JournalStats, out: &mut Exposition) {
    for (name, help, n) in [
        (
            "vigil_journal_lines_total",
            "Policy decisions written to the sessions' journals.",
            stats.written,
        ),
        (
            "vigil_journal_dropped_total",
            "Decision lines dropped because the journal writer was behind.",
            stats.dropped,
        ),
        (
            "vigil_journal_failures_total",
            "Decision lines that could not be written (see the log).",
            stats.failed,
        ),
    ] {
        out.family(name, MetricKind::Counter, help)
            .sample(&[], n as f64);
    }
}

fn webhook_metrics(hooks: &[WebhookStats], out: &mut Exposition) {
    type Field = fn(&WebhookStats) -> u64;
    let families: [(&str, MetricKind, &str, Field); 5] = [
        (
            "vigil_webhook_deliveries_total",
            MetricKind::Counter,
            "Events the webhook's receiver accepted (2xx).",
            |h| h.delivered,
        ),
        (
            "vigil_webhook_retries_total",
            MetricKind::Counter,
            "Tries sent again after a failed one.",
            |h| h.retried,
        ),
        (
            "vigil_webhook_failures_total",
            MetricKind::Counter,
            "Events given up after max_attempts tries.",
            |h| h.failed,
        ),
        (
            "vigil_webhook_dropped_total",
            MetricKind::Counter,
            "Events dropped unsent: the oldest of a full queue, or left at shutdown.",
            |h| h.dropped,
        ),
        (
            "vigil_webhook_queued",
            MetricKind::Gauge,
            "Events waiting to be sent.",
            |h| h.queued,
        ),
    ];
    if hooks.is_empty() {
        return;
    }
    for (name, kind, help, field) in families {
        let mut family = out.family(name, kind, help);
        for hook in hooks {
            family.sample(&[("webhook", &hook.name)], field(hook) as f64);
        }
    }
}

fn sessions_metrics(sessions: &[SessionStatus], out: &mut Exposition) {
    let mut f = out.family(
        "vigil_session_state",
        MetricKind::Gauge,
        "1 for the state each session is in, 0 for the others.",
    );
    for s in sessions {
        for state in SessionState::ALL {
            let on = if s.state == state { 1.0 } else { 0.0 };
            f.sample(&[("session", s.id.as_str()), ("state", state.as_str())], on);
        }
    }
    let mut f = out.family(
        "vigil_session_state_seconds",
        MetricKind::Gauge,
        "Seconds since each session entered its current state.",
    );
    for s in sessions {
        f.sample(&[("session", s.id.as_str())], seconds_since(s.since));
    }
    let mut f = out.family(
        "vigil_session_transitions_total",
        MetricKind::Counter,
        "State changes of each session, by the state entered.",
    );
    for s in sessions {
        for state in SessionState::ALL {
            let n = s.counters.transitions_into(state) as f64;
            f.sample(&[("session", s.id.as_str()), ("to", state.as_str())], n);
        }
    }
    let per_session = [
        (
            "vigil_session_restarts_total",
            MetricKind::Counter,
            "Browser restarts of each session.",
            (|s: &SessionStatus| s.counters.restarts as f64) as fn(&SessionStatus) -> f64,
        ),
        (
            "vigil_session_probe_failures_total",
            MetricKind::Counter,
            "Probes of each session's page that failed.",
            |s| s.counters.probe_failures as f64,
        ),
        (
            "vigil_session_consecutive_probe_failures",
            MetricKind::Gauge,
            "Probes that failed in a row, 0 after a good one.",
            |s| f64::from(s.consecutive_probe_failures),
        ),
    ];
    for (name, kind, help, value) in per_session {
        let mut f = out.family(name, kind, help);
        for s in sessions {
            f.sample(&[("session", s.id.as_str())], value(s));
        }
    }
}

fn backup_metrics(sessions: &[SessionStatus], out: &mut Exposition) {
    let mut f = out.family(
        "vigil_backups_total",
        MetricKind::Counter,
        "Backups of each session saved by this host.",
    );
    for s in sessions {
        f.sample(&[("session", s.id.as_str())], s.counters.backups as f64);
    }
    let mut f = out.family(
        "vigil_backup_failures_total",
        MetricKind::Counter,
        "Backups of each session that failed.",
    );
    for s in sessions {
        f.sample(
            &[("session", s.id.as_str())],
            s.counters.backup_failures as f64,
        );
    }
    let mut f = out.family(
        "vigil_backup_duration_seconds",
        MetricKind::Summary,
        "Time taken by the backups this host saved, browser downtime included.",
    );
    for s in sessions {
        let labels = [("session", s.id.as_str())];
        f.sample_suffixed("_sum", &labels, s.counters.backup_time_total.as_secs_f64());
        f.sample_suffixed("_count", &labels, s.counters.backups as f64);
    }
    let mut f = out.family(
        "vigil_backup_newest_size_bytes",
        MetricKind::Gauge,
        "Size in the store of each session's newest backup.",
    );
    for s in sessions {
        if let Some(b) = &s.last_backup {
            f.sample(&[("session", s.id.as_str())], b.size_bytes as f64);
        }
    }
    let mut f = out.family(
        "vigil_backup_newest_age_seconds",
        MetricKind::Gauge,
        "Age of each session's newest backup (absent: no backup known).",
    );
    for s in sessions {
        if let Some(b) = &s.last_backup {
            f.sample(&[("session", s.id.as_str())], seconds_since(b.at));
        }
    }
}

fn restore_metrics(sessions: &[SessionStatus], out: &mut Exposition) {
    let mut f = out.family(
        "vigil_restores_total",
        MetricKind::Counter,
        "Where each start's profile came from: disk, backup, or fresh (a new login).",
    );
    for s in sessions {
        let c = &s.counters;
        for (source, n) in [
            (RestoreSource::Disk, c.restores_from_disk),
            (RestoreSource::Backup, c.restores_from_backup),
            (RestoreSource::Fresh, c.restores_fresh),
        ] {
            f.sample(
                &[("session", s.id.as_str()), ("source", source.as_str())],
                n as f64,
            );
        }
    }
    let mut f = out.family(
        "vigil_restore_failures_total",
        MetricKind::Counter,
        "Restores from a backup that failed (the profile on disk stayed).",
    );
    for s in sessions {
        f.sample(
            &[("session", s.id.as_str())],
            s.counters.restore_failures as f64,
        );
    }
    let mut f = out.family(
        "vigil_restore_duration_seconds",
        MetricKind::Summary,
        "Time taken to prepare each start's profile, restores from backup included.",
    );
    for s in sessions {
        let c = &s.counters;
        let labels = [("session", s.id.as_str())];
        f.sample_suffixed("_sum", &labels, c.restore_time_total.as_secs_f64());
        f.sample_suffixed(
            "_count",
            &labels,
            (c.restores_from_disk + c.restores_from_backup + c.restores_fresh) as f64,
        );
    }
    let mut f = out.family(
        "vigil_restore_last_duration_seconds",
        MetricKind::Gauge,
        "Time taken by each session's last profile preparation, by its source.",
    );
    for s in sessions {
        if let Some(r) = &s.last_restore {
            f.sample(
                &[("session", s.id.as_str()), ("source", r.source.as_str())],
                r.took.as_secs_f64(),
            );
        }
    }
}

fn policy_metrics(policies: &PolicyRuntime, reloads: &ReloadTally, out: &mut Exposition) {
    let snapshot = policies.metrics();
    type Count = fn(&crate::policy::CallCounters) -> u64;
    let counts: [(&str, &str, Count); 7] = [
        (
            "vigil_policy_calls_total",
            "Policy calls, by plugin (or builtin) and role.",
            |c| c.calls,
        ),
        (
            "vigil_policy_traps_total",
            "Policy calls that trapped.",
            |c| c.traps,
        ),
        (
            "vigil_policy_timeouts_total",
            "Policy calls stopped at their time limit.",
            |c| c.timeouts,
        ),
        (
            "vigil_policy_memory_limit_hits_total",
            "Policy calls stopped at their memory limit.",
            |c| c.memory_limit_hits,
        ),
        (
            "vigil_policy_invalid_answers_total",
            "Policy answers refused as invalid.",
            |c| c.invalid_answers,
        ),
        (
            "vigil_policy_fallbacks_total",
            "Policy calls answered by the role's built-in fallback instead of the plugin.",
            |c| c.fallbacks,
        ),
        (
            "vigil_policy_refused_actions_total",
            "Actions dropped because the policy file does not permit them.",
            |c| c.refused_actions,
        ),
    ];
    for (name, help, count) in counts {
        let mut f = out.family(name, MetricKind::Counter, help);
        for p in &snapshot.plugins {
            f.sample(
                &[("plugin", p.plugin.as_str()), ("role", p.role.as_str())],
                count(&p.counters) as f64,
            );
        }
    }
    let mut f = out.family(
        "vigil_policy_call_duration_seconds",
        MetricKind::Histogram,
        "Time taken by policy calls.",
    );
    for p in &snapshot.plugins {
        let d = &p.counters.duration;
        let (plugin, role) = (p.plugin.as_str(), p.role.as_str());
        for (bound_us, n) in &d.buckets {
            let le = (*bound_us as f64 / 1e6).to_string();
            f.sample_suffixed(
                "_bucket",
                &[("plugin", plugin), ("role", role), ("le", &le)],
                *n as f64,
            );
        }
        f.sample_suffixed(
            "_bucket",
            &[("plugin", plugin), ("role", role), ("le", "+Inf")],
            d.count as f64,
        );
        let labels = [("plugin", plugin), ("role", role)];
        f.sample_suffixed("_sum", &labels, d.sum_us as f64 / 1e6);
        f.sample_suffixed("_count", &labels, d.count as f64);
    }
    let mut f = out.family(
        "vigil_policy_reloads_total",
        MetricKind::Counter,
        "Policy file changes since start, by outcome: accepted, rejected (the previous version kept serving), removed.",
    );
    for (outcome, n) in [
        ("accepted", &reloads.accepted),
        ("rejected", &reloads.rejected),
        ("removed", &reloads.removed),
    ] {
        f.sample(&[("outcome", outcome)], n.load(Ordering::Relaxed) as f64);
    }
    let status = policies.status();
    out.family(
        "vigil_policies_loaded",
        MetricKind::Gauge,
        "Policy files serving now.",
    )
    .sample(&[], status.policies.len() as f64);
    out.family(
        "vigil_policies_rejected",
        MetricKind::Gauge,
        "Policy files whose latest version was refused.",
    )
    .sample(&[], status.rejected.len() as f64);
}

/// The process itself: version and start time.
pub struct ProcessMetrics {
    started: SystemTime,
}

impl ProcessMetrics {
    pub fn new(started: SystemTime) -> Self {
        Self { started }
    }
}

impl Collector for ProcessMetrics {
    fn collect(&self, out: &mut Exposition) {
        out.family(
            "vigil_build_info",
            MetricKind::Gauge,
            "Always 1; the version of the running Vigil.",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        out.family(
            "vigil_start_time_seconds",
            MetricKind::Gauge,
            "When the host started, in seconds since the Unix epoch.",
        )
        .sample(&[], started);
    }
}

/// One scrape of every collector.
pub fn scrape(collectors: &[Arc<dyn Collector>]) -> String {
    let mut out = Exposition::new();
    for c in collectors {
        c.collect(&mut out);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_escaped_samples() {
        let mut out = Exposition::new();
        out.family("x_total", MetricKind::Counter, "Line one\nback\\slash")
            .sample(&[("a", "q\"u\\o\nte")], 3.0)
            .sample(&[], 0.25);
        let mut h = out.family("h_seconds", MetricKind::Histogram, "H.");
        h.sample_suffixed("_bucket", &[("le", "+Inf")], 1.0);
        h.sample_suffixed("_count", &[], f64::INFINITY);
        assert_eq!(
            out.finish(),
            "# HELP x_total Line one\\nback\\\\slash\n\
             # TYPE x_total counter\n\
             x_total{a=\"q\\\"u\\\\o\\nte\"} 3\n\
             x_total 0.25\n\
             # HELP h_seconds H.\n\
             # TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"+Inf\"} 1\n\
             h_seconds_count +Inf\n"
        );
    }

    #[test]
    #[should_panic(expected = "written twice")]
    fn a_family_cannot_be_split() {
        let mut out = Exposition::new();
        out.family("x", MetricKind::Gauge, "x");
        out.family("x", MetricKind::Gauge, "x");
    }
}
