//! Reloading policies: list the source's policy files, skip those whose
//! file and plugin did not change, load the rest (parse, compile or read the
//! compile cache, link, self-check), swap the new set into the catalog
//! atomically, and report what happened. Also the status snapshot built
//! from what the reloads saw.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::call::self_check;
use super::catalog::{Catalog, LoadedPolicy};
use super::clock::Clock;
use super::config::PolicyConfig;
use super::engine::{PolicyEngine, hex};
use super::error::PolicyError;
use super::file::{Limits, Permissions, PolicyFile, SessionPattern, file_name};
use super::role::dispatch;
use super::status::{PolicyInfo, PolicyStatus, Rejection, ReloadEvent, ReloadSummary};
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
}

/// What the reloads so far saw, to skip files that did not change and to
/// keep rejections visible until the file is fixed.
#[derive(Default)]
struct ReloadBook {
    /// Per policy name: (sha256 of the file, sha256 of its plugin) at the
    /// last attempt, accepted or not.
    seen: BTreeMap<String, (String, Option<String>)>,
    rejected: BTreeMap<String, Rejection>,
    last_reload: Option<ReloadSummary>,
    /// Folders holding the policies' plugins, for the watcher.
    plugin_dirs: BTreeSet<PathBuf>,
}

impl Reloader {
    pub fn new(source: PolicySource, default_limits: Limits) -> Self {
        Reloader {
            source,
            default_limits,
            book: Mutex::new(ReloadBook::default()),
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
            _ => Arc::new(
                tools
                    .engine
                    .load(&file.path, &file.plugin_path, file.role, wasm)?,
            ),
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
                cause,
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

    pub fn reconcile(&self, tools: &ReloadTools<'_>) -> Vec<ReloadEvent> {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
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
        for spec in specs {
            let path = spec.path().to_path_buf();
            let name = file_name(&path);
            names.insert(name.clone());
            let previous = by_name.get(name.as_str()).copied();
            let attempt = self.attempt(tools, &spec, &mut book, previous, &mut plugin_dirs);
            match attempt {
                Attempt::Unchanged => next.extend(previous.cloned()),
                Attempt::Accepted(loaded) => {
                    let loaded = Arc::new(*loaded);
                    tracing::info!(policy = %name, role = %loaded.file.role, plugin = %loaded.plugin.path.display(), sha256 = loaded.plugin.short_sha(), from = ?loaded.plugin.compiled_from, load_ms = loaded.plugin.load_time.as_secs_f64() * 1e3, "policy loaded");
                    book.rejected.remove(&name);
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
                    book.rejected.insert(
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
        book.seen.retain(|name, _| names.contains(name));
        book.rejected.retain(|name, _| names.contains(name));
        book.plugin_dirs = plugin_dirs;

        if !events.is_empty() {
            tools.catalog.swap(next);
            book.last_reload = Some(ReloadSummary {
                at_ms: tools.clock.now_ms(),
                events: events.clone(),
            });
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
        book: &mut ReloadBook,
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
                            book,
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
                    Err(e) => return self.note(book, &name, (sha, None), e),
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
                return self.note(book, &name, (file_sha, None), error);
            }
        };
        let wasm_sha = hex(&Sha256::digest(&wasm));
        let fingerprint = (file_sha.clone(), Some(wasm_sha.clone()));
        if book.seen.get(&name) == Some(&fingerprint) {
            return Attempt::Unchanged;
        }
        book.seen.insert(name, fingerprint);
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
        book: &mut ReloadBook,
        name: &str,
        fingerprint: (String, Option<String>),
        error: PolicyError,
    ) -> Attempt {
        if book.seen.get(name) == Some(&fingerprint) {
            return Attempt::Unchanged;
        }
        book.seen.insert(name.to_owned(), fingerprint);
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
                    permissions: p.file.permissions,
                    loaded_at_ms: p.loaded_at_ms,
                })
                .collect(),
            rejected: book.rejected.values().cloned().collect(),
            last_reload: book.last_reload.clone(),
        }
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
