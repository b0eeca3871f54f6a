//! Reading what a session has in the store, and marking damage.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use super::manifest::{BackupId, FailureMark, Manifest};
use super::{BackupEntry, BackupError, Backups, Lineage, Listing};
use crate::id::SessionId;
use crate::volume;

impl Backups {
    /// The backups of `session`, newest first.
    pub async fn list(&self, session: &SessionId) -> Result<Vec<BackupEntry>, BackupError> {
        Ok(self.listing(session).await?.entries)
    }

    /// The backups of `session` as its fleet owner sees them, newest
    /// first: those `lineage` refuses (a fenced owner's late backups) are
    /// marked damaged, in the store too, so that every listing, restore and
    /// retention run treats them so from then on.
    pub async fn list_admitted(
        &self,
        session: &SessionId,
        lineage: &Lineage,
    ) -> Result<Vec<BackupEntry>, BackupError> {
        let mut entries = self.list(session).await?;
        for entry in entries.iter_mut().filter(|e| e.failure.is_none()) {
            let Some(reason) = lineage.refusal(&entry.manifest) else {
                continue;
            };
            if let Err(e) = self.mark_failed(session, entry.id(), &reason).await {
                tracing::warn!(%session, id = %entry.id(), error = %e, "could not mark a refused backup");
            }
            entry.failure = Some(FailureMark {
                reason,
                at: Utc::now(),
                host: volume::hostname(),
            });
        }
        Ok(entries)
    }

    /// Sessions that have anything in the store.
    pub async fn sessions(&self) -> Result<Vec<SessionId>, BackupError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(self.store_err("list", &self.root))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|n| SessionId::new(n).ok()))
            .collect())
    }

    /// Everything under `session`'s prefix, including what is not a backup.
    pub async fn listing(&self, session: &SessionId) -> Result<Listing, BackupError> {
        let prefix = self.session_prefix(session);
        let objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.store_err("list", &prefix))?;
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for meta in objects {
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            let Some((id, kind)) = name.split_once('.') else {
                continue;
            };
            let group = groups.entry(id.to_string()).or_default();
            match kind {
                "manifest.json" => group.manifest = Some(meta),
                "failed.json" => group.failed = Some(meta),
                "tar.gz" | "tar.gz.age" => group.archive = Some(meta),
                _ => {}
            }
        }

        let store = &self.store;
        let fetched: Vec<Fetched> = futures::stream::iter(groups)
            .map(|(id, group)| async move {
                let manifest = match &group.manifest {
                    Some(m) => Some(fetch_json::<Manifest>(store, &m.location).await),
                    None => None,
                };
                let failure = match &group.failed {
                    Some(m) => fetch_json::<FailureMark>(store, &m.location).await.ok(),
                    None => None,
                };
                Fetched {
                    id,
                    group,
                    manifest,
                    failure,
                }
            })
            .buffered(8)
            .collect()
            .await;

        let mut scan = Listing::default();
        for Fetched {
            id,
            group,
            manifest,
            failure,
        } in fetched
        {
            match manifest {
                None => {
                    scan.leftovers.extend(group.archive);
                    scan.leftovers.extend(group.failed);
                }
                Some(Err(reason)) => {
                    let key = group
                        .manifest
                        .map(|m| m.location.to_string())
                        .unwrap_or_default();
                    tracing::warn!(%session, key, reason, "unreadable manifest; the backup is not listed");
                    scan.unreadable.push((key, reason));
                }
                Some(Ok(manifest)) => {
                    let archive_names = [format!("{id}.tar.gz"), format!("{id}.tar.gz.age")];
                    if manifest.id.as_str() != id
                        || &manifest.session != session
                        || !archive_names.contains(&manifest.archive)
                    {
                        let key = group
                            .manifest
                            .map(|m| m.location.to_string())
                            .unwrap_or_default();
                        scan.unreadable
                            .push((key, "names another backup, session or archive".into()));
                        continue;
                    }
                    let problem = match &group.archive {
                        None => Some("its archive is missing from the store".to_string()),
                        Some(a) if a.size != manifest.size => Some(format!(
                            "its archive holds {} bytes, the manifest says {}",
                            a.size, manifest.size
                        )),
                        Some(_) => None,
                    };
                    let failure = failure.or_else(|| {
                        problem.map(|reason| FailureMark {
                            reason,
                            at: Utc::now(),
                            host: volume::hostname(),
                        })
                    });
                    scan.entries.push(BackupEntry { manifest, failure });
                }
            }
        }
        scan.entries
            .sort_by(|a, b| b.manifest.order().cmp(&a.manifest.order()));
        Ok(scan)
    }

    pub(super) async fn entry(
        &self,
        session: &SessionId,
        id: &BackupId,
    ) -> Result<BackupEntry, BackupError> {
        self.list(session)
            .await?
            .into_iter()
            .find(|e| e.id() == id)
            .ok_or_else(|| BackupError::NotFound {
                session: session.clone(),
                id: id.clone(),
            })
    }

    /// Records that backup `id` is damaged, so listings show it and
    /// restores skip it. Also done by restore and verify themselves when
    /// they find damage.
    pub async fn mark_failed(
        &self,
        session: &SessionId,
        id: &BackupId,
        reason: &str,
    ) -> Result<(), BackupError> {
        let key = self.key(session, &format!("{id}.failed.json"));
        let mark = FailureMark {
            reason: reason.to_string(),
            at: Utc::now(),
            host: volume::hostname(),
        };
        let body = serde_json::to_vec_pretty(&mark).expect("a mark always serializes");
        self.store
            .put(&key, PutPayload::from(body))
            .await
            .map_err(self.store_err("write the failure mark", &key))?;
        tracing::warn!(%session, %id, reason, "backup marked as damaged");
        Ok(())
    }

    pub(super) async fn mark_if_damaged(
        &self,
        session: &SessionId,
        id: &BackupId,
        error: &BackupError,
    ) {
        if error.is_damaged_backup()
            && let Err(e) = self.mark_failed(session, id, &error.to_string()).await
        {
            tracing::warn!(%session, %id, error = %e, "could not record the damaged backup");
        }
    }
}

/// One id's objects, with its manifest and mark read.
struct Fetched {
    id: String,
    group: Group,
    manifest: Option<Result<Manifest, String>>,
    failure: Option<FailureMark>,
}

#[derive(Default)]
struct Group {
    archive: Option<ObjectMeta>,
    manifest: Option<ObjectMeta>,
    failed: Option<ObjectMeta>,
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    store: &Arc<dyn ObjectStore>,
    key: &StorePath,
) -> Result<T, String> {
    let bytes = store
        .get(key)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
