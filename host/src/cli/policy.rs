//! `vigil policy check`, `test`, `replay` and `new`: validate policy
//! files, run policies through scripted scenarios, replay real decisions
//! from a journal against a new policy (all with no browser and no
//! network), and start a new policy in Rust, Python or JavaScript.
//!
//! Exit codes: 0 when every file is valid / every step passed / no replayed
//! decision differs / the folder was created, 1 otherwise (including files
//! that cannot be read or parsed, and a name that is taken or not valid).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use vigil::journal::{self, ReplayOptions, Since, Slice};
use vigil::policy::scenario::{self, Scenario, ScenarioReport};
use vigil::policy::{FakeClock, PolicyRuntime, PolicySource, ReloadEvent, Role, RuntimeOptions};

use super::scaffold::{self, Language, RoleArg};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate policy files and the plugins they name: TOML errors as
    /// file:line:col, then compile, link and self-check each plugin.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Keep compiled plugins here between runs.
        #[arg(long, env = "VIGIL_POLICY_CACHE")]
        cache_dir: Option<PathBuf>,
    },
    /// Run a policy file (or a bare .wasm) through a scenario: facts at
    /// virtual times and the decision expected at each step. With
    /// --from-journal, first write the scenario from a slice of a decision
    /// journal (then the policy is optional).
    Test {
        /// A policy file (.toml) or a plugin (.wasm).
        #[arg(required_unless_present = "from_journal")]
        policy: Option<PathBuf>,
        /// The scenario file (format in the README, "Testing a policy").
        #[arg(
            long,
            required_unless_present = "from_journal",
            conflicts_with = "from_journal"
        )]
        scenario: Option<PathBuf>,
        /// Journal files (oldest first) to make the scenario from: each
        /// recorded call becomes a step expecting what was answered.
        #[arg(long, num_args = 1.., requires = "out")]
        from_journal: Vec<PathBuf>,
        /// Where to write the scenario made --from-journal.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The role whose calls to take (needed when the slice holds several).
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Calls made at this time or later (RFC 3339, or a duration ago: "1h").
        #[arg(long, value_parser = parse_since)]
        since: Option<Since>,
        /// Calls made before this time (RFC 3339, or a duration ago).
        #[arg(long, value_parser = parse_since)]
        until: Option<Since>,
        /// At most this many steps (the first calls of the slice).
        #[arg(long)]
        limit: Option<usize>,
        /// Print the report as JSON (one line per run with --watch).
        #[arg(long)]
        json: bool,
        /// Keep running: re-run the scenario whenever the policy file or
        /// its plugin changes (Ctrl-C to stop).
        #[arg(long)]
        watch: bool,
        /// Keep compiled plugins here between runs.
        #[arg(long, env = "VIGIL_POLICY_CACHE")]
        cache_dir: Option<PathBuf>,
    },
    /// Replay a decision journal against a policy file: every recorded
    /// call of the file's role is made again with its recorded input,
    /// clock and memory (and the file's config; see --recorded-config).
    /// Prints each decision that would differ, then a summary.
    Replay {
        /// Journal files, oldest first (`data/journal/main.jsonl.1
        /// data/journal/main.jsonl`); `-` reads stdin (`vigil journal main
        /// | vigil policy replay - --policy ...`).
        #[arg(required = true)]
        journals: Vec<PathBuf>,
        /// The policy file to replay against (its sessions are ignored).
        #[arg(long)]
        policy: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Give each call the config it recorded instead of the policy
        /// file's (to try a new plugin build alone).
        #[arg(long)]
        recorded_config: bool,
        /// Keep compiled plugins here between runs.
        #[arg(long, env = "VIGIL_POLICY_CACHE")]
        cache_dir: Option<PathBuf>,
    },
    /// Start a new policy: a folder NAME/ with the role's default policy in
    /// the chosen language (the same decisions as the shipped plugin), its
    /// build script, WIT, policy file and a scenario that passes. Prints
    /// the commands that build and test it.
    New {
        /// Names the folder, the .wasm and the policy file: lowercase
        /// letters, digits and dashes.
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long = "lang", value_enum)]
        language: Language,
    },
}

fn parse_since(text: &str) -> Result<Since, String> {
    text.parse()
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not a role (keepalive, watchdog, restore)"))
}

pub async fn run(_config: &Path, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { files, cache_dir } => check(files, cache_dir).await,
        Command::Test {
            policy,
            scenario,
            from_journal,
            out,
            role,
            since,
            until,
            limit,
            json,
            watch,
            cache_dir,
        } => {
            let scenario = match (scenario, out) {
                (Some(scenario), _) => scenario,
                (None, Some(out)) => {
                    let slice = slice(role, since, until, limit);
                    write_scenario(&from_journal, &slice, &out)?;
                    out
                }
                (None, None) => anyhow::bail!("give --scenario, or --from-journal with --out"),
            };
            match policy {
                Some(policy) => test(policy, scenario, json, watch, cache_dir).await,
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Replay {
            journals,
            policy,
            json,
            recorded_config,
            cache_dir,
        } => replay(journals, policy, json, recorded_config, cache_dir).await,
        Command::New {
            name,
            role,
            language,
        } => new(&name, role, language),
    }
}

fn slice(
    role: Option<Role>,
    since: Option<Since>,
    until: Option<Since>,
    limit: Option<usize>,
) -> Slice {
    let now = std::time::SystemTime::now();
    Slice {
        role,
        from_ms: since.map(|s| s.earliest_ms(now)),
        until_ms: until.map(|s| s.earliest_ms(now)),
        limit,
    }
}

/// Reads journal files (`-` for stdin) into (name, text) pairs.
fn read_journals(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, String)>> {
    paths
        .iter()
        .map(|path| {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read the journal", path.display()))?
            };
            Ok((path.clone(), text))
        })
        .collect()
}

fn write_scenario(journals: &[PathBuf], slice: &Slice, out: &Path) -> anyhow::Result<()> {
    let text = journal::to_scenario(&read_journals(journals)?, slice)?;
    std::fs::write(out, &text).with_context(|| format!("{}: cannot write", out.display()))?;
    let steps = text.matches("[[step]]").count();
    eprintln!("wrote {} ({steps} steps)", out.display());
    Ok(())
}

async fn replay(
    journals: Vec<PathBuf>,
    policy: PathBuf,
    json: bool,
    recorded_config: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let journals = read_journals(&journals)?;
    let mut options = RuntimeOptions::new(PolicySource::File(policy));
    options.cache_dir = cache_dir;
    let runtime = PolicyRuntime::start(options).await?;
    if let Some(rejection) = runtime.status().rejected.first() {
        anyhow::bail!("{}", rejection.reason);
    }
    let report = tokio::task::spawn_blocking(move || {
        journal::replay(&runtime, &journals, ReplayOptions { recorded_config })
    })
    .await??;
    if json {
        println!("{}", vigil::untrusted::line_json(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn new(name: &str, role: RoleArg, language: Language) -> anyhow::Result<ExitCode> {
    let created = scaffold::create(Path::new("."), name, role.into(), language)?;
    println!(
        "created {}/: a {} policy in {} that decides like the shipped {}",
        created.shown,
        vigil::policy::Role::from(role),
        language.describe(),
        created.like
    );
    for file in &created.files {
        println!("  {}/{}", created.shown, file.display());
    }
    println!("build it:\n  {}", created.build);
    println!("test it:\n  {}", created.test);
    Ok(ExitCode::SUCCESS)
}

async fn check(files: Vec<PathBuf>, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut all_valid = true;
    for file in files {
        let mut options = RuntimeOptions::new(PolicySource::File(file.clone()));
        options.cache_dir = cache_dir.clone();
        let runtime = PolicyRuntime::start(options).await?;
        let status = runtime.status();
        if let Some(rejection) = status.rejected.first() {
            all_valid = false;
            println!(
                "{}",
                vigil::untrusted::for_terminal_lines(&rejection.reason)
            );
            continue;
        }
        for p in &status.policies {
            let interval = p
                .interval
                .map(|i| format!(", every {} s", i.as_secs()))
                .unwrap_or_default();
            println!(
                "{}: ok: {} for sessions {:?}{interval}, plugin {} (sha256 {}), timeout {} ms, memory {} MiB",
                file.display(),
                p.role,
                p.sessions,
                p.plugin.display(),
                p.sha256,
                p.limits.timeout.as_millis(),
                p.limits.memory_bytes >> 20
            );
            // What each call pays before the policy's own code runs: a
            // fresh instance (megabytes for Python and JavaScript).
            let f = &p.footprint;
            println!(
                "  {:.1} MB component; a fresh instance takes {:.1} ms and starts with {:.1} MiB of linear memory ({:.0}% of the limit)",
                f.size_bytes as f64 / 1e6,
                f.instantiate_us as f64 / 1e3,
                f.start_memory_bytes as f64 / (1u64 << 20) as f64,
                f.start_memory_bytes as f64 * 100.0 / p.limits.memory_bytes as f64,
            );
        }
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn test(
    policy: PathBuf,
    scenario_path: PathBuf,
    json: bool,
    watch: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&scenario_path)?;
    let clock = Arc::new(FakeClock::new(scenario.start_ms));
    let source = if policy.extension().is_some_and(|e| e == "wasm") {
        PolicySource::Plugin {
            wasm: policy.clone(),
            role: scenario.role,
            config: scenario.config.clone(),
            permissions: scenario.permissions,
        }
    } else {
        PolicySource::File(policy.clone())
    };
    let mut options = RuntimeOptions::new(source).clock(clock.clone());
    options.cache_dir = cache_dir;
    let runtime = PolicyRuntime::start(options).await?;

    if !watch {
        if let Some(rejection) = runtime.status().rejected.first() {
            anyhow::bail!("{}", rejection.reason);
        }
        let report = run_scenario(&runtime, &clock, &scenario).await?;
        print_report(&report, json)?;
        return Ok(exit_code(&report));
    }

    let watcher = runtime
        .watch()
        .context("cannot watch the policy for changes")?;
    let mut events = runtime.subscribe();
    let mut last = run_and_print(&runtime, &clock, &scenario, json).await;
    eprintln!("watching {} for changes (Ctrl-C to stop)", policy.display());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => {
                let mut batch = match event {
                    Ok(e) => vec![e],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                while let Ok(e) = events.try_recv() {
                    batch.push(e);
                }
                for e in &batch {
                    eprintln!("reload: {e}");
                }
                if batch.iter().all(|e| matches!(e, ReloadEvent::Rejected { still_serving: None, .. })) && !batch.is_empty() {
                    continue;
                }
                last = run_and_print(&runtime, &clock, &scenario, json).await;
            }
        }
    }
    watcher.stop().await;
    Ok(last)
}

async fn run_and_print(
    runtime: &PolicyRuntime,
    clock: &Arc<FakeClock>,
    scenario: &Scenario,
    json: bool,
) -> ExitCode {
    match run_scenario(runtime, clock, scenario).await {
        Ok(report) => {
            if let Err(e) = print_report(&report, json) {
                eprintln!("error: {e:#}");
            }
            exit_code(&report)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run_scenario(
    runtime: &PolicyRuntime,
    clock: &Arc<FakeClock>,
    scenario: &Scenario,
) -> anyhow::Result<ScenarioReport> {
    let (runtime, clock, scenario) = (runtime.clone(), clock.clone(), scenario.clone());
    Ok(tokio::task::spawn_blocking(move || scenario::run(&runtime, &clock, &scenario)).await??)
}

fn print_report(report: &ScenarioReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", vigil::untrusted::line_json(report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

fn exit_code(report: &ScenarioReport) -> ExitCode {
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
