//! Reloading policies: list the source's policy files, skip those whose
//! file and plugin did not change, load the rest (parse, compile or read the
//! compile cache, link, self-check), swap the new set into the catalog
//! atomically, and report what happened. Also the status snapshot built
//! from what the reloads saw.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::call::self_check;
use super::catalog::{Catalog, LoadedPolicy};
use super::clock::Clock;
use super::config::PolicyConfig;
use super::engine::{Footprint, PolicyEngine, hex};
use super::error::PolicyError;
use super::file::{
    Limits, MAX_MEMORY_BYTES, MAX_TIMEOUT, Permissions, PolicyFile, SessionPattern, file_name,
};
use super::role::dispatch;
use super::status::{
    FallbackCause, PolicyInfo, PolicyStatus, RELOAD_HISTORY, Rejection, ReloadEvent, ReloadSummary,
};
use super::types::Role;

/// Where the runtime finds its policies.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// Every `*.toml` file directly in this folder (not subfolders).
    Directory(PathBuf),
    /// One policy file.
    File(PathBuf),
    /// A bare plugin bound to every session, for `vigil policy test` on a
    /// `.wasm`.
    Plugin {
        wasm: PathBuf,
        role: Role,
        config: PolicyConfig,
        permissions: Permissions,
    },
}

impl PolicySource {
    pub(super) fn path(&self) -> &Path {
        match self {
            PolicySource::Directory(p) | PolicySource::File(p) => p,
            PolicySource::Plugin { wasm, .. } => wasm,
        }
    }
}

pub(super) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What a reload works with: the engine to compile with, the catalog to
/// swap, the clock that dates it, and where its events go.
pub(super) struct ReloadTools<'a> {
    pub engine: &'a PolicyEngine,
    pub catalog: &'a Catalog,
    pub clock: &'a dyn Clock,
    pub events: &'a broadcast::Sender<ReloadEvent>,
}

/// Reloads the policies of one source, remembering what it saw.
pub(super) struct Reloader {
    source: PolicySource,
    default_limits: Limits,
    book: Mutex<ReloadBook>,
    /// Held for a whole reload, so reloads run one at a time while the
    /// book above stays free for status readers.
    reloading: Mutex<()>,
}

/// Per policy name: (sha256 of the file, sha256 of its plugin) at the last
/// attempt, accepted or not.
type Seen = BTreeMap<String, (String, Option<String>)>;

/// What the reloads so far saw, to skip files that did not change and to
/// keep rejections visible until the file is fixed.
#[derive(Default)]
struct ReloadBook {
    seen: Seen,
    rejected: BTreeMap<String, Rejection>,
    last_reload: Option<ReloadSummary>,
    /// Newest first, at most [`RELOAD_HISTORY`].
    history: VecDeque<ReloadSummary>,
    /// Folders holding the policies' plugins, for the watcher.
    plugin_dirs: BTreeSet<PathBuf>,
}

impl Reloader {
    pub fn new(source: PolicySource, default_limits: Limits) -> Self {
        Reloader {
            source,
            default_limits,
            book: Mutex::new(ReloadBook::default()),
            reloading: Mutex::new(()),
        }
    }

    pub fn default_limits(&self) -> Limits {
        self.default_limits
    }

    /// The folders a watcher must watch: the policy source and every
    /// referenced plugin's folder.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .plugin_dirs
            .clone();
        match &self.source {
            PolicySource::Directory(d) => {
                dirs.insert(d.clone());
            }
            PolicySource::File(f) | PolicySource::Plugin { wasm: f, .. } => {
                dirs.insert(parent(f));
            }
        }
        dirs
    }

    fn load(
        &self,
        tools: &ReloadTools<'_>,
        file: PolicyFile,
        file_sha: &str,
        previous: Option<&LoadedPolicy>,
        wasm: &[u8],
        wasm_sha: &str,
    ) -> Result<LoadedPolicy, PolicyError> {
        let plugin = match previous {
            Some(p) if p.plugin.sha256 == wasm_sha && p.file.role == file.role => p.plugin.clone(),
            _ => Arc::new(tools.engine.load(
                &file.path,
                &file.plugin_path,
                file.role,
                wasm,
                wasm_sha.to_owned(),
            )?),
        };
        let now_ms = tools.clock.now_ms();
        let loaded = LoadedPolicy {
            name: Arc::from(file.name.as_str()),
            file_sha256: Arc::from(file_sha),
            limits: file.limits(self.default_limits),
            config: Arc::new(file.config.clone()),
            plugin,
            loaded_at_ms: now_ms,
            file,
        };
        dispatch!(loaded.file.role, R => self_check::<R>(tools.engine, &loaded, now_ms)).map_err(
            |cause| PolicyError::SelfCheck {
                policy: loaded.file.path.clone(),
                plugin: loaded.file.plugin_path.clone(),
                cause: explain(&cause, loaded.plugin.footprint),
            },
        )?;
        Ok(loaded)
    }

    /// The policy files the source holds now, by name.
    fn list(&self) -> Result<Vec<PolicySpec>, PolicyError> {
        match &self.source {
            PolicySource::Directory(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::Directory {
                    dir: dir.clone(),
                    source,
                })?;
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                    .collect();
                files.sort();
                Ok(files.into_iter().map(PolicySpec::File).collect())
            }
            PolicySource::File(path) => Ok(vec![PolicySpec::File(path.clone())]),
            PolicySource::Plugin {
                wasm,
                role,
                config,
                permissions,
            } => Ok(vec![PolicySpec::Bare(Box::new(PolicyFile {
                name: file_name(wasm),
                path: wasm.clone(),
                role: *role,
                plugin: wasm.display().to_string(),
                plugin_path: wasm.clone(),
                sessions: vec![SessionPattern::new("*").expect("valid pattern")],
                priority: 0,
                interval: PolicyFile::default_interval(*role),
                timeout: None,
                memory_bytes: None,
                permissions: *permissions,
                config: config.clone(),
            }))]),
        }
    }

    /// One reload. Reloads run one at a time (`reloading`); the book is
    /// locked only to read it at the start and to record the outcome at the
    /// end, never while a plugin compiles: compiling a 12-18 MB component
    /// (Python, JavaScript) takes seconds, and [`status`](Self::status),
    /// the admin API and `/metrics` must answer meanwhile, as calls to every
    /// loaded policy (the old version of the one being replaced included)
    /// do: they read only the catalog, swapped at the very end.
    pub fn reconcile(&self, tools: &ReloadTools<'_>) -> Vec<ReloadEvent> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .clone();
        let current = tools.catalog.current();
        let by_name: BTreeMap<&str, &Arc<LoadedPolicy>> =
            current.iter().map(|p| (&*p.name, p)).collect();
        let specs = match self.list() {
            Ok(specs) => specs,
            Err(e) => {
                tracing::error!(error = %e, "cannot list policy files; keeping the loaded ones");
                return Vec::new();
            }
        };

        let mut next: Vec<Arc<LoadedPolicy>> = Vec::new();
        let mut events = Vec::new();
        let mut names = BTreeSet::new();
        let mut plugin_dirs = BTreeSet::new();
        let mut accepted = BTreeSet::new();
        let mut rejected = BTreeMap::new();
        for spec in specs {
            let path = spec.path().to_path_buf();
            let name = file_name(&path);
            names.insert(name.clone());
            let previous = by_name.get(name.as_str()).copied();
            let attempt = self.attempt(tools, &spec, &mut seen, previous, &mut plugin_dirs);
            match attempt {
                Attempt::Unchanged => next.extend(previous.cloned()),
                Attempt::Accepted(loaded) => {
                    let loaded = Arc::new(*loaded);
                    tracing::info!(policy = %name, role = %loaded.file.role, plugin = %loaded.plugin.path.display(), sha256 = loaded.plugin.short_sha(), from = ?loaded.plugin.compiled_from, load_ms = loaded.plugin.load_time.as_secs_f64() * 1e3, "policy loaded");
                    accepted.insert(name.clone());
                    events.push(ReloadEvent::Accepted {
                        file: path,
                        role: loaded.file.role,
                        plugin: loaded.plugin.path.clone(),
                        sha256: loaded.plugin.short_sha().to_owned(),
                        compiled_from: loaded.plugin.compiled_from,
                    });
                    next.push(loaded);
                }
                Attempt::Rejected(error) => {
                    let still_serving = previous.map(|p| p.plugin.short_sha().to_owned());
                    tracing::error!(policy = %name, error = %error, still_serving = ?still_serving, "policy refused");
                    let reason = error.to_string();
                    rejected.insert(
                        name.clone(),
                        Rejection {
                            file: path.clone(),
                            reason: reason.clone(),
                            at_ms: tools.clock.now_ms(),
                            still_serving: still_serving.clone(),
                        },
                    );
                    events.push(ReloadEvent::Rejected {
                        file: path,
                        reason,
                        still_serving,
                    });
                    next.extend(previous.cloned());
                }
            }
        }
        for gone in current.iter().filter(|p| !names.contains(&*p.name)) {
            tracing::info!(policy = %gone.name, "policy file removed; its sessions use the built-in defaults");
            events.push(ReloadEvent::Removed {
                file: gone.file.path.clone(),
            });
        }
        seen.retain(|name, _| names.contains(name));

        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.seen = seen;
        book.rejected
            .retain(|name, _| names.contains(name) && !accepted.contains(name));
        book.rejected.extend(rejected);
        book.plugin_dirs = plugin_dirs;

        if !events.is_empty() {
            tools.catalog.swap(next);
            let summary = ReloadSummary {
                at_ms: tools.clock.now_ms(),
                events: events.clone(),
            };
            book.history.truncate(RELOAD_HISTORY - 1);
            book.history.push_front(summary.clone());
            book.last_reload = Some(summary);
            for e in &events {
                let _ = tools.events.send(e.clone());
            }
        }
        events
    }

    fn attempt(
        &self,
        tools: &ReloadTools<'_>,
        spec: &PolicySpec,
        seen: &mut Seen,
        previous: Option<&Arc<LoadedPolicy>>,
        plugin_dirs: &mut BTreeSet<PathBuf>,
    ) -> Attempt {
        let path = spec.path();
        let name = file_name(path);
        let (file, file_sha) = match spec {
            PolicySpec::Bare(file) => ((**file).clone(), String::new()),
            PolicySpec::File(path) => {
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(source) => {
                        return self.note(
                            seen,
                            &name,
                            (String::new(), None),
                            PolicyError::Read {
                                file: path.clone(),
                                source,
                            },
                        );
                    }
                };
                let sha = hex(&Sha256::digest(text.as_bytes()));
                match PolicyFile::parse(path, &text) {
                    Ok(f) => (f, sha),
                    Err(e) => return self.note(seen, &name, (sha, None), e),
                }
            }
        };
        plugin_dirs.insert(parent(&file.plugin_path));
        let wasm = match std::fs::read(&file.plugin_path) {
            Ok(w) => w,
            Err(source) => {
                let error = match spec {
                    PolicySpec::File(path) => {
                        let text = std::fs::read_to_string(path).unwrap_or_default();
                        super::file::invalid(
                            path,
                            &text,
                            PolicyFile::plugin_span(&text),
                            format!(
                                "cannot read plugin {}: {source}",
                                file.plugin_path.display()
                            ),
                        )
                    }
                    PolicySpec::Bare(_) => PolicyError::Read {
                        file: file.plugin_path.clone(),
                        source,
                    },
                };
                return self.note(seen, &name, (file_sha, None), error);
            }
        };
        let wasm_sha = hex(&Sha256::digest(&wasm));
        let fingerprint = (file_sha.clone(), Some(wasm_sha.clone()));
        if seen.get(&name) == Some(&fingerprint) {
            return Attempt::Unchanged;
        }
        seen.insert(name, fingerprint);
        match self.load(
            tools,
            file,
            &file_sha,
            previous.map(|p| &**p),
            &wasm,
            &wasm_sha,
        ) {
            Ok(loaded) => Attempt::Accepted(Box::new(loaded)),
            Err(e) => Attempt::Rejected(e),
        }
    }

    /// Records a failed attempt, unless the same inputs already failed.
    fn note(
        &self,
        seen: &mut Seen,
        name: &str,
        fingerprint: (String, Option<String>),
        error: PolicyError,
    ) -> Attempt {
        if seen.get(name) == Some(&fingerprint) {
            return Attempt::Unchanged;
        }
        seen.insert(name.to_owned(), fingerprint);
        Attempt::Rejected(error)
    }

    pub fn status(&self, catalog: &Catalog) -> PolicyStatus {
        let catalog = catalog.current();
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        PolicyStatus {
            source: self.source.path().to_path_buf(),
            policies: catalog
                .iter()
                .map(|p| PolicyInfo {
                    file: p.file.path.clone(),
                    role: p.file.role,
                    plugin: p.plugin.path.clone(),
                    sha256: p.plugin.short_sha().to_owned(),
                    sessions: p
                        .file
                        .sessions
                        .iter()
                        .map(|s| s.as_str().to_owned())
                        .collect(),
                    priority: p.file.priority,
                    interval: p.file.interval,
                    limits: p.limits,
                    footprint: p.plugin.footprint,
                    permissions: p.file.permissions,
                    loaded_at_ms: p.loaded_at_ms,
                })
                .collect(),
            rejected: book.rejected.values().cloned().collect(),
            last_reload: book.last_reload.clone(),
            reload_history: book.history.iter().cloned().collect(),
        }
    }
}

/// A failed self-check in words, with the limit to raise when the failure
/// is one: a Python or JavaScript component may need more than a Rust one.
pub(super) fn explain(cause: &FallbackCause, footprint: Footprint) -> String {
    const MIB: u64 = 1 << 20;
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / MIB as f64);
    match cause {
        FallbackCause::MemoryLimit { limit_bytes } => {
            let start = footprint.start_memory_bytes;
            if start > *limit_bytes {
                // Room for the call's own growth: the next power of two
                // above the start size plus an eighth.
                let wanted = (start + start / 8)
                    .div_ceil(MIB)
                    .next_power_of_two()
                    .min(MAX_MEMORY_BYTES / MIB);
                format!(
                    "{cause}: this component needs {} of linear memory at start; the policy's memory limit is {}: set [limits] memory = \"{wanted}MiB\"",
                    mib(start),
                    mib(*limit_bytes)
                )
            } else {
                format!(
                    "{cause}: the call grew its linear memory past the limit (a fresh instance starts at {}): raise [limits] memory",
                    mib(start)
                )
            }
        }
        FallbackCause::Timeout { limit } => {
            let make_ms = footprint.instantiate_us as f64 / 1e3;
            let limit_ms = limit.as_millis() as u64;
            // Four times what making an instance took here, in tens of ms,
            // and at least twice the present limit.
            let wanted = ((footprint.instantiate_us * 4).div_ceil(10_000) * 10)
                .max(limit_ms * 2)
                .min(MAX_TIMEOUT.as_millis() as u64);
            format!(
                "{cause}: making a fresh instance of this component took {make_ms:.1} ms here (every call makes one); the policy's timeout is {limit_ms} ms: set [limits] timeout = \"{wanted}ms\" if the plugin does not loop"
            )
        }
        other => other.to_string(),
    }
}

enum PolicySpec {
    File(PathBuf),
    Bare(Box<PolicyFile>),
}

impl PolicySpec {
    fn path(&self) -> &Path {
        match self {
            PolicySpec::File(p) => p,
            PolicySpec::Bare(f) => &f.path,
        }
    }
}

enum Attempt {
    Unchanged,
    Accepted(Box<LoadedPolicy>),
    Rejected(PolicyError),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_limit_too_small_for_the_component_names_the_setting_and_the_number() {
        let python = Footprint {
            size_bytes: 18 << 20,
            start_memory_bytes: 28 << 20,
            instantiate_us: 1_400,
        };
        let memory = explain(
            &FallbackCause::MemoryLimit {
                limit_bytes: 16 << 20,
            },
            python,
        );
        assert!(
            memory.ends_with("this component needs 28.0 MiB of linear memory at start; the policy's memory limit is 16.0 MiB: set [limits] memory = \"32MiB\""),
            "{memory}"
        );
        let slow = Footprint {
            instantiate_us: 12_300,
            ..python
        };
        let timeout = explain(
            &FallbackCause::Timeout {
                limit: Duration::from_millis(10),
            },
            slow,
        );
        assert!(
            timeout.contains("took 12.3 ms here") && timeout.contains("timeout = \"50ms\""),
            "{timeout}"
        );
        let trap = FallbackCause::Trap {
            message: "unreachable".into(),
        };
        assert_eq!(explain(&trap, python), "trap: unreachable");
    }
}
