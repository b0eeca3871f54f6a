//! Counters per plugin and role, kept as plain numbers. The admin API turns
//! a [`MetricsSnapshot`] into Prometheus text; nothing here knows that format.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::types::Role;

/// Upper bounds of the call-duration histogram buckets, in microseconds.
/// A call longer than the last bound only counts in `count` and `sum`.
pub const DURATION_BUCKETS_US: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000,
];

/// The plugin name used for decisions made by the built-in defaults.
pub const BUILTIN_PLUGIN: &str = "builtin";

/// What happened to the calls of one plugin in one role since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallCounters {
    pub calls: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_limit_hits: u64,
    pub invalid_answers: u64,
    /// Calls answered by the role's safe fallback instead of the plugin.
    pub fallbacks: u64,
    /// Actions dropped because the policy lacks the permission.
    pub refused_actions: u64,
    pub duration: DurationHistogram,
}

/// Call durations, Prometheus style: per-bucket counts are cumulative.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DurationHistogram {
    /// `(upper bound in microseconds, calls that took at most that)`.
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    pub sum_us: u64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram {
            buckets: DURATION_BUCKETS_US.iter().map(|b| (*b, 0)).collect(),
            count: 0,
            sum_us: 0,
        }
    }
}

impl DurationHistogram {
    fn observe(&mut self, took: Duration) {
        let us = took.as_micros().try_into().unwrap_or(u64::MAX);
        for (bound, count) in &mut self.buckets {
            if us <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

/// Counters of every plugin that was called, by plugin file name and role.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    pub plugins: Vec<PluginMetrics>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginMetrics {
    /// The plugin's file name ("activity.wasm"), or "builtin".
    pub plugin: String,
    pub role: Role,
    pub counters: CallCounters,
}

impl MetricsSnapshot {
    pub fn get(&self, plugin: &str, role: Role) -> Option<&CallCounters> {
        self.plugins
            .iter()
            .find(|p| p.plugin == plugin && p.role == role)
            .map(|p| &p.counters)
    }
}

/// How one call ended, for counting.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallTally {
    pub trap: bool,
    pub timeout: bool,
    pub memory_limit: bool,
    pub invalid_answer: bool,
    pub fallback: bool,
    pub refused_actions: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    counters: Mutex<BTreeMap<(String, Role), CallCounters>>,
}

impl Metrics {
    pub fn record(&self, plugin: &str, role: Role, took: Duration, tally: CallTally) {
        let mut all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let c = all.entry((plugin.to_owned(), role)).or_default();
        c.calls += 1;
        c.traps += u64::from(tally.trap);
        c.timeouts += u64::from(tally.timeout);
        c.memory_limit_hits += u64::from(tally.memory_limit);
        c.invalid_answers += u64::from(tally.invalid_answer);
        c.fallbacks += u64::from(tally.fallback);
        c.refused_actions += tally.refused_actions;
        c.duration.observe(took);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        MetricsSnapshot {
            plugins: all
                .iter()
                .map(|((plugin, role), counters)| PluginMetrics {
                    plugin: plugin.clone(),
                    role: *role,
                    counters: counters.clone(),
                })
                .collect(),
        }
    }
}
