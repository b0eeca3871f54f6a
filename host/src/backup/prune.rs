//! Retention applied to the store, and leftovers of interrupted uploads.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;

use super::retention::plan as plan_retention;
use super::{BackupError, Backups, PruneReport, SessionPrune, task_failed};
use crate::id::SessionId;

impl Backups {
    /// Applies retention to every session in the store (see
    /// [`plan_retention`]) and removes leftovers of interrupted uploads
    /// older than the grace period. With `dry_run`, only reports.
    pub async fn prune(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<PruneReport, BackupError> {
        let mut report = PruneReport {
            dry_run,
            sessions: Vec::new(),
        };
        for session in self.sessions().await? {
            report
                .sessions
                .push(self.prune_session(&session, now, dry_run).await?);
        }
        Ok(report)
    }

    async fn prune_session(
        &self,
        session: &SessionId,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SessionPrune, BackupError> {
        let scan = self.listing(session).await?;
        let plan = plan_retention(
            &scan.entries,
            now,
            self.options.keep,
            self.options.keep_last,
        );
        let mut result = SessionPrune {
            session: session.clone(),
            kept: Vec::new(),
            deleted: Vec::new(),
            leftovers: Vec::new(),
        };
        for (id, verdict) in plan {
            if verdict.keeps() {
                result.kept.push((id, verdict));
                continue;
            }
            let entry = scan
                .entries
                .iter()
                .find(|e| e.id() == &id)
                .expect("the plan only names listed entries");
            if !dry_run {
                // The manifest goes first: a crash half-way leaves an
                // unlisted leftover, never a listed backup without data.
                for name in [
                    format!("{id}.manifest.json"),
                    entry.manifest.archive.clone(),
                    format!("{id}.failed.json"),
                ] {
                    self.delete(&self.key(session, &name)).await?;
                }
                tracing::info!(%session, %id, "backup expired and deleted");
            }
            result.deleted.push(id);
        }
        let grace_cutoff = now
            .checked_sub_signed(self.options.orphan_grace)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        for meta in scan.leftovers {
            let is_mark = meta.location.as_ref().ends_with(".failed.json");
            if is_mark || meta.last_modified < grace_cutoff {
                if !dry_run {
                    self.delete(&meta.location).await?;
                }
                result.leftovers.push(meta.location.to_string());
            }
        }
        if let Some(dir) = &self.local_dir {
            let folder = dir.join(self.session_prefix(session).as_ref());
            let cutoff = std::time::SystemTime::from(grace_cutoff);
            let swept =
                tokio::task::spawn_blocking(move || sweep_staged_uploads(&folder, cutoff, dry_run))
                    .await
                    .map_err(task_failed)?;
            result.leftovers.extend(swept);
        }
        Ok(result)
    }

    /// Deletes everything `session` has in the store (its backups, marks
    /// and leftovers): what removing a session with `forget` asks.
    /// Returns how many objects went.
    pub async fn forget(&self, session: &SessionId) -> Result<usize, BackupError> {
        let prefix = self.session_prefix(session);
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.store_err("list", &prefix))?;
        // Manifests first: a failure half-way leaves unlisted leftovers,
        // never a listed backup without its archive.
        let (manifests, rest): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|m| m.location.as_ref().ends_with(".manifest.json"));
        for meta in manifests.iter().chain(&rest) {
            self.delete(&meta.location).await?;
        }
        tracing::info!(%session, objects = manifests.len() + rest.len(), "forgot the session's backups");
        Ok(manifests.len() + rest.len())
    }

    async fn delete(&self, key: &StorePath) -> Result<(), BackupError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("delete", key)(e)),
        }
    }
}

/// `file://` stores write an upload to `<name>#<n>` and rename it when done;
/// a killed upload leaves that file, which listings never show.
fn sweep_staged_uploads(
    folder: &std::path::Path,
    cutoff: std::time::SystemTime,
    dry_run: bool,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains('#') {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if !old {
            continue;
        }
        if !dry_run && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove an interrupted upload");
            continue;
        }
        swept.push(entry.path().display().to_string());
    }
    swept
}
