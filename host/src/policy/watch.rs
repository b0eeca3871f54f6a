//! Hot reload: watches the policy folder and every referenced plugin's
//! folder (folders, not files: editors and `make plugins` save by rename),
//! waits for the burst of events to settle, then asks the runtime to
//! reconcile. The task is owned by a [`ReloadWatcher`]: stopped by
//! [`ReloadWatcher::stop`] or when the watcher is dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::PolicyError;
use super::runtime::PolicyRuntime;

/// A reload starts once no event came for this long...
const QUIET: Duration = Duration::from_millis(50);
/// ...or this long after the first event of a burst, whichever is first.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// The running hot-reload task.
pub struct ReloadWatcher {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ReloadWatcher {
    /// Stops watching and waits for a reload in progress to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ReloadWatcher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl PolicyRuntime {
    /// Starts hot reload. Must be called inside a tokio runtime. Reload
    /// outcomes go to [`subscribe`](PolicyRuntime::subscribe)rs and to
    /// [`status`](PolicyRuntime::status).
    pub fn watch(&self) -> Result<ReloadWatcher, PolicyError> {
        let kick = Arc::new(Notify::new());
        let watcher = {
            let kick = kick.clone();
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && is_change(&event.kind)
                {
                    kick.notify_one();
                }
            })
            .map_err(|e| PolicyError::Watch {
                path: PathBuf::from("."),
                reason: e.to_string(),
            })?
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(self.clone(), watcher, kick, stop_rx));
        Ok(ReloadWatcher {
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// Our own reads of policy files and plugins show up as access events;
/// only writes, creations, renames and removals mean a change.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

async fn run(
    runtime: PolicyRuntime,
    mut watcher: RecommendedWatcher,
    kick: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut watched = BTreeSet::new();
    update_watches(&mut watcher, &mut watched, runtime.watch_dirs());
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = kick.notified() => {}
        }
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                settled = tokio::time::timeout(QUIET, kick.notified()) => {
                    if settled.is_err() || Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let reloading = runtime.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || reloading.reload_now()).await {
            tracing::error!(error = %e, "policy reload panicked; the loaded policies keep serving");
        }
        update_watches(&mut watcher, &mut watched, runtime.watch_dirs());
    }
}

/// Watches each wanted folder, or its nearest existing ancestor while it
/// does not exist yet (so its creation triggers a reload that watches it).
fn update_watches(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) {
    let targets: BTreeSet<PathBuf> = wanted.iter().filter_map(|d| existing(d)).collect();
    for gone in watched.difference(&targets).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&gone);
        watched.remove(&gone);
    }
    for dir in targets {
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "watching for policy changes");
                watched.insert(dir);
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; changes there need a restart")
            }
        }
    }
}

fn existing(dir: &Path) -> Option<PathBuf> {
    let mut dir = dir.to_path_buf();
    loop {
        if let Ok(canonical) = dir.canonicalize() {
            return Some(canonical);
        }
        if !dir.pop() || dir.as_os_str().is_empty() {
            return None;
        }
    }
}
