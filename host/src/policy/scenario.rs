//! Scenarios: a scripted timeline of facts and the decision expected at
//! each step, run against a policy with a fake clock, no browser and no
//! network. This is what `vigil policy test` runs; the format is in the
//! README ("Testing a policy").

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::clock::FakeClock;
use super::config::{PolicyConfig, flatten};
use super::file::Permissions;
use super::memory::KvMemory;
use super::runtime::PolicyRuntime;
use super::status::ServedBy;
use super::types::{
    Action, BackupFacts, CriticalFile, Facts, Inventory, LockState, Plan, Role, SessionState,
    Verdict,
};
use crate::fields::{Location, format_duration, parse_duration};
use crate::id::SessionId;

/// 2026-01-01T00:00:00Z: where a scenario's virtual clock starts unless it
/// says otherwise.
pub const DEFAULT_START_MS: u64 = 1_767_225_600_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    #[error("{}: no policy binds session {session} for {role} (it would get the built-in defaults); set `session` to one the policy's `sessions` match", file.display())]
    NotBound {
        file: PathBuf,
        session: SessionId,
        role: Role,
    },
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub path: PathBuf,
    pub role: Role,
    pub session: SessionId,
    pub start_ms: u64,
    /// Used only when the scenario runs against a bare `.wasm`.
    pub config: PolicyConfig,
    /// The policy's memory of the session before the first step (a
    /// scenario made from a journal starts where the journal did).
    pub memory: KvMemory,
    pub permissions: Permissions,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct Step {
    /// Line of the `[[step]]` in the scenario file.
    pub line: usize,
    /// Virtual time since the start.
    pub at: Duration,
    pub input: StepInput,
    pub expect: Vec<Expected>,
    /// A substring the verdict's or plan's reason must contain.
    pub reason: Option<String>,
    /// The step expects the plugin to fail and the fallback to answer.
    pub fallback: bool,
}

#[derive(Clone, Debug)]
pub enum StepInput {
    Facts(Facts),
    Restore {
        inventory: Inventory,
        backups: Vec<BackupFacts>,
    },
}

/// One expected action, verdict or plan: a kind ("restart-browser") and
/// optionally its argument ("key-press(Shift)", "restore-backup(b-2)").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub kind: String,
    pub argument: Option<String>,
}

impl Expected {
    fn parse(text: &str) -> Self {
        let text = text.trim();
        match (text.find('('), text.ends_with(')')) {
            (Some(open), true) => Expected {
                kind: text[..open].trim().to_owned(),
                argument: Some(text[open + 1..text.len() - 1].to_owned()),
            },
            _ => Expected {
                kind: text.to_owned(),
                argument: None,
            },
        }
    }

    fn matches(&self, kind: &str, argument: Option<String>) -> bool {
        self.kind == kind
            && match &self.argument {
                None => true,
                Some(want) => argument.as_deref() == Some(want.as_str()),
            }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.argument {
            Some(a) => write!(f, "{}({a})", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let at = |span: std::ops::Range<usize>, message: String| ScenarioError::Invalid {
            at: Location::of(path, text, span.start),
            message,
        };
        let raw: RawScenario = toml::from_str(text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim_end().to_string()))?;
        let session = match &raw.session {
            None => SessionId::new("scenario").expect("valid id"),
            Some(s) => {
                SessionId::new(s.get_ref().as_str()).map_err(|e| at(s.span(), e.to_string()))?
            }
        };
        let config = match &raw.config {
            None => PolicyConfig::new(),
            Some(t) => flatten(t.get_ref()).map_err(|m| at(t.span(), m))?,
        };
        if raw.step.is_empty() {
            return Err(at(0..0, "a scenario needs at least one [[step]]".into()));
        }

        let mut facts = Facts::new(session.clone(), SessionState::Connected);
        let mut inventory = Inventory::missing();
        let mut backups = Vec::new();
        let mut steps = Vec::new();
        let mut last_at = Duration::ZERO;
        for spanned in raw.step {
            let span = spanned.span();
            let line = Location::of(path, text, span.start).line;
            let step = spanned.into_inner();
            let step_at = match &step.at {
                None => last_at,
                Some(a) => parse_duration(a.get_ref()).map_err(|m| at(a.span(), m))?,
            };
            if step_at < last_at {
                return Err(at(span, "steps must not go back in time".into()));
            }
            last_at = step_at;
            let input = match raw.role {
                Role::Keepalive | Role::Watchdog => {
                    if step.inventory.is_some() || step.backups.is_some() {
                        return Err(at(
                            span,
                            format!(
                                "a {} step takes `facts`, not `inventory` or `backups`",
                                raw.role
                            ),
                        ));
                    }
                    if let Some(patch) = step.facts {
                        patch.apply(&mut facts).map_err(|m| at(span.clone(), m))?;
                    }
                    StepInput::Facts(facts.clone())
                }
                Role::Restore => {
                    if step.facts.is_some() {
                        return Err(at(
                            span,
                            "a restore step takes `inventory` and `backups`, not `facts`".into(),
                        ));
                    }
                    if let Some(i) = step.inventory {
                        inventory = i.into_inventory();
                    }
                    if let Some(b) = step.backups {
                        backups = b
                            .into_iter()
                            .map(RawBackup::into_backup)
                            .collect::<Result<_, _>>()
                            .map_err(|m| at(span.clone(), m))?;
                    }
                    StepInput::Restore {
                        inventory: inventory.clone(),
                        backups: backups.clone(),
                    }
                }
            };
            let expect = match step.expect {
                OneOrMany::One(s) => vec![Expected::parse(&s)],
                OneOrMany::Many(list) => list.iter().map(|s| Expected::parse(s)).collect(),
            };
            if raw.role != Role::Keepalive && expect.len() != 1 {
                return Err(at(
                    span,
                    format!("a {} step expects exactly one decision", raw.role),
                ));
            }
            steps.push(Step {
                line,
                at: step_at,
                input,
                expect,
                reason: step.reason,
                fallback: step.fallback,
            });
        }
        Ok(Scenario {
            path: path.to_path_buf(),
            role: raw.role,
            session,
            start_ms: raw.start_ms.unwrap_or(DEFAULT_START_MS),
            config,
            memory: raw.memory.unwrap_or_default(),
            permissions: Permissions {
                run_script: raw.permissions.is_some_and(|p| p.run_script),
            },
            steps,
        })
    }
}

/// The outcome of one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// 1-based.
    pub step: usize,
    pub line: usize,
    #[serde(with = "super::types::millis")]
    pub at: Duration,
    pub passed: bool,
    pub expected: Vec<String>,
    pub actual: Vec<String>,
    /// Why the step failed, in words.
    pub problems: Vec<String>,
    pub served_by: ServedBy,
    pub took_us: u64,
}

/// The outcome of a whole scenario run.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: PathBuf,
    pub role: Role,
    pub session: SessionId,
    pub passed: bool,
    pub steps: Vec<StepReport>,
}

impl ScenarioReport {
    pub fn failed_steps(&self) -> usize {
        self.steps.iter().filter(|s| !s.passed).count()
    }

    /// The human-readable report: one line per step, a diff under each
    /// failed one, a summary line.
    /// The report for a terminal; what the policy answered is escaped
    /// ([`crate::untrusted`]), one step per line whatever it said.
    pub fn render(&self) -> String {
        use crate::untrusted::shown;
        let mut out = String::new();
        for s in &self.steps {
            let verdict = if s.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "{verdict} step {} at {} (line {}): {}\n",
                s.step,
                format_duration(s.at),
                s.line,
                shown(&s.actual.join(", "))
            ));
            if !s.passed {
                for p in &s.problems {
                    out.push_str(&format!("       {}\n", shown(p)));
                }
                out.push_str(&format!(
                    "       - expected: {}\n",
                    shown(&s.expected.join(", "))
                ));
                out.push_str(&format!(
                    "       + actual:   {}\n",
                    shown(&s.actual.join(", "))
                ));
                out.push_str(&format!(
                    "       served by {}\n",
                    shown(&s.served_by.to_string())
                ));
            }
        }
        let failed = self.failed_steps();
        out.push_str(&format!(
            "{}: {} passed, {} failed\n",
            self.scenario.display(),
            self.steps.len() - failed,
            failed
        ));
        out
    }
}

/// Runs `scenario` against whatever `runtime` binds to its session and
/// role, moving `clock` to each step's time. Blocking. The policy's memory
/// of the scenario's session is cleared first, so runs are repeatable.
pub fn run(
    runtime: &PolicyRuntime,
    clock: &FakeClock,
    scenario: &Scenario,
) -> Result<ScenarioReport, ScenarioError> {
    if runtime
        .binding(&scenario.session, scenario.role)
        .policy
        .is_none()
    {
        return Err(ScenarioError::NotBound {
            file: scenario.path.clone(),
            session: scenario.session.clone(),
            role: scenario.role,
        });
    }
    runtime.forget_memory(&scenario.session);
    if !scenario.memory.is_empty() {
        runtime.seed_memory(&scenario.session, scenario.role, scenario.memory.clone());
    }
    let steps = scenario
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            clock.set_ms(scenario.start_ms + step.at.as_millis() as u64);
            run_step(runtime, scenario, i + 1, step)
        })
        .collect::<Vec<_>>();
    Ok(ScenarioReport {
        scenario: scenario.path.clone(),
        role: scenario.role,
        session: scenario.session.clone(),
        passed: steps.iter().all(|s| s.passed),
        steps,
    })
}

/// The pieces of a decision a step compares.
struct Observed {
    items: Vec<(String, Option<String>)>,
    shown: Vec<String>,
    reason: Option<String>,
    served_by: ServedBy,
    took: Duration,
}

fn observe(runtime: &PolicyRuntime, scenario: &Scenario, step: &Step) -> Observed {
    match &step.input {
        StepInput::Facts(facts) if scenario.role == Role::Keepalive => {
            let d = runtime.keepalive_blocking(facts);
            Observed {
                items: d
                    .value
                    .iter()
                    .map(|a: &Action| (a.kind().to_owned(), a.argument()))
                    .collect(),
                shown: if d.value.is_empty() {
                    vec!["(no action)".into()]
                } else {
                    d.value.iter().map(ToString::to_string).collect()
                },
                reason: None,
                served_by: d.served_by,
                took: d.took,
            }
        }
        StepInput::Facts(facts) => {
            let d = runtime.watchdog_blocking(facts);
            let v: &Verdict = &d.value;
            Observed {
                items: vec![(v.kind().to_owned(), None)],
                shown: vec![v.to_string()],
                reason: Some(v.reason().to_owned()),
                served_by: d.served_by,
                took: d.took,
            }
        }
        StepInput::Restore { inventory, backups } => {
            let d = runtime.restore_blocking(&scenario.session, inventory, backups);
            let p: &Plan = &d.value;
            Observed {
                items: vec![(p.kind().to_owned(), p.argument())],
                shown: vec![p.to_string()],
                reason: Some(p.reason().to_owned()),
                served_by: d.served_by,
                took: d.took,
            }
        }
    }
}

fn run_step(runtime: &PolicyRuntime, scenario: &Scenario, index: usize, step: &Step) -> StepReport {
    let seen = observe(runtime, scenario, step);
    let mut problems = Vec::new();
    let matched = seen.items.len() == step.expect.len()
        && step
            .expect
            .iter()
            .zip(&seen.items)
            .all(|(want, (kind, arg))| want.matches(kind, arg.clone()));
    if !matched {
        problems.push("the decision differs from the expected one".to_string());
    }
    if let (Some(want), Some(reason)) = (&step.reason, &seen.reason)
        && !reason.contains(want.as_str())
    {
        problems.push(format!("the reason does not contain {want:?}"));
    }
    match (&seen.served_by, step.fallback) {
        (ServedBy::Fallback { cause, .. }, false) => {
            problems.push(format!(
                "the plugin failed and the fallback answered: {cause}"
            ));
        }
        (ServedBy::Fallback { .. }, true) => {}
        (_, true) => {
            problems.push("expected the plugin to fail (fallback = true), but it answered".into())
        }
        _ => {}
    }
    StepReport {
        step: index,
        line: step.line,
        at: step.at,
        passed: problems.is_empty(),
        expected: step.expect.iter().map(ToString::to_string).collect(),
        actual: seen.shown,
        problems,
        served_by: seen.served_by,
        took_us: seen.took.as_micros() as u64,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    role: Role,
    session: Option<Spanned<String>>,
    start_ms: Option<u64>,
    config: Option<Spanned<toml::Table>>,
    /// Keys to base64 values, as in a journal's `memory_before`.
    memory: Option<KvMemory>,
    permissions: Option<RawPermissions>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    run_script: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Option<Spanned<String>>,
    facts: Option<FactsPatch>,
    inventory: Option<RawInventory>,
    backups: Option<Vec<RawBackup>>,
    expect: OneOrMany,
    reason: Option<String>,
    #[serde(default)]
    fallback: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Facts fields a step changes; the others carry over from the step before.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactsPatch {
    state: Option<SessionState>,
    time_in_state: Option<String>,
    consecutive_probe_failures: Option<u32>,
    restarts_last_hour: Option<u32>,
    since_activity: Option<String>,
    since_backup: Option<String>,
    last_probe_detail: Option<String>,
    since_connected: Option<String>,
    launch_failures: Option<u32>,
    missing_critical_files: Option<Vec<String>>,
}

impl FactsPatch {
    fn apply(self, facts: &mut Facts) -> Result<(), String> {
        if let Some(s) = self.state {
            facts.state = s;
        }
        if let Some(t) = self.time_in_state {
            facts.time_in_state = parse_duration(&t)?;
        }
        if let Some(n) = self.consecutive_probe_failures {
            facts.consecutive_probe_failures = n;
        }
        if let Some(n) = self.restarts_last_hour {
            facts.restarts_last_hour = n;
        }
        if let Some(t) = self.since_activity {
            facts.since_activity = optional_duration(&t)?;
        }
        if let Some(t) = self.since_backup {
            facts.since_backup = optional_duration(&t)?;
        }
        if let Some(d) = self.last_probe_detail {
            facts.last_probe_detail = d;
        }
        if let Some(t) = self.since_connected {
            facts.since_connected = optional_duration(&t)?;
        }
        if let Some(n) = self.launch_failures {
            facts.launch_failures = n;
        }
        if let Some(files) = self.missing_critical_files {
            facts.missing_critical_files = files;
        }
        Ok(())
    }
}

/// "never" clears an optional duration.
fn optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if text == "never" {
        Ok(None)
    } else {
        parse_duration(text).map(Some)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default = "yes")]
    exists: bool,
    #[serde(default)]
    critical_files: Vec<RawCriticalFile>,
    #[serde(default)]
    size_bytes: u64,
    #[serde(default = "no_lock")]
    lock: LockState,
}

fn yes() -> bool {
    true
}

fn no_lock() -> LockState {
    LockState::None
}

impl RawInventory {
    fn into_inventory(self) -> Inventory {
        Inventory {
            exists: self.exists,
            critical_files: self
                .critical_files
                .into_iter()
                .map(|c| CriticalFile {
                    non_empty: c.non_empty.unwrap_or(c.present),
                    path: c.path,
                    present: c.present,
                })
                .collect(),
            size_bytes: self.size_bytes,
            lock: self.lock,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriticalFile {
    path: String,
    #[serde(default = "yes")]
    present: bool,
    /// Defaults to `present`.
    non_empty: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    id: String,
    age: String,
    #[serde(default)]
    size_bytes: u64,
    #[serde(default = "yes")]
    verified: bool,
    #[serde(default)]
    restore_failed: bool,
}

impl RawBackup {
    fn into_backup(self) -> Result<BackupFacts, String> {
        Ok(BackupFacts {
            age: parse_duration(&self.age).map_err(|m| format!("backup {}: {m}", self.id))?,
            id: self.id,
            size_bytes: self.size_bytes,
            verified: self.verified,
            restore_failed: self.restore_failed,
        })
    }
}
