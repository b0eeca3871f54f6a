//! The fleet's objects in the shared store, written only by conditional
//! puts: create-if-absent and update-if-unchanged. Everything the fleet
//! decides rests on the store refusing the second of two racing writes.
//!
//! Two details make a write's outcome certain:
//! - every document carries a random token, so when a conditional write
//!   comes back refused (or times out and is retried by the client after it
//!   had in fact landed), reading the object back tells whether the write
//!   that is there is ours;
//! - a `file://` store (one machine) has no update-if-unchanged in
//!   object_store: the compare and the write happen under an exclusive
//!   `flock` on `.fleet/.lock`, which is atomic between the processes of
//!   one machine and nothing more. That is why `[fleet]` refuses it.

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FleetError;

/// The folder of the fleet's objects under the store's root. Session ids
/// cannot start with `.`, so no session's backups can collide with it.
pub const FLEET_DIR: &str = ".fleet";

/// Which version of an object a conditional update expects: its ETag
/// (S3, Azure, file://) and version (GCS generation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

impl Version {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        }
    }

    fn as_update(&self) -> UpdateVersion {
        UpdateVersion {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

/// A document as read, with the version a conditional update must name.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: Version,
}

/// An object listed under the fleet's folder.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its name inside `.fleet/` (`member.a.1f2e....json`).
    pub name: String,
    pub version: Version,
}

/// The shared store as the fleet uses it.
#[derive(Clone)]
pub struct FleetStore {
    store: Arc<dyn ObjectStore>,
    dir: StorePath,
    url: String,
    /// `file://` only: the lock file that makes compare-and-write atomic
    /// on this machine.
    local_lock: Option<PathBuf>,
}

impl FleetStore {
    /// The fleet's folder in a store shared by several machines (S3, GCS,
    /// Azure; or one in-process store shared by test hosts).
    pub fn shared(store: Arc<dyn ObjectStore>, root: &StorePath, url: impl Into<String>) -> Self {
        Self {
            store,
            dir: root.clone().join(FLEET_DIR),
            url: url.into(),
            local_lock: None,
        }
    }

    /// The fleet's folder in a `file://` store at `folder` (the store's
    /// own root): conditional updates hold a lock file there.
    pub fn local(store: Arc<dyn ObjectStore>, folder: PathBuf, url: impl Into<String>) -> Self {
        Self {
            store,
            dir: StorePath::from(FLEET_DIR),
            url: url.into(),
            local_lock: Some(folder.join(FLEET_DIR).join(".lock")),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether conditional writes are atomic only between the processes of
    /// this machine (`file://`).
    pub fn is_local(&self) -> bool {
        self.local_lock.is_some()
    }

    pub fn key(&self, name: &str) -> StorePath {
        self.dir.clone().join(name)
    }

    fn err(&self, op: &'static str, key: &StorePath, source: object_store::Error) -> FleetError {
        FleetError::Store {
            store: self.url.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// The document at `key`, or `None` if there is none.
    pub async fn read<T: DeserializeOwned>(
        &self,
        key: &StorePath,
    ) -> Result<Option<Versioned<T>>, FleetError> {
        match self.read_raw(key).await? {
            None => Ok(None),
            Some((bytes, version)) => {
                let value = serde_json::from_slice(&bytes).map_err(|e| FleetError::Corrupt {
                    key: key.to_string(),
                    reason: e.to_string(),
                })?;
                Ok(Some(Versioned { value, version }))
            }
        }
    }

    async fn read_raw(
        &self,
        key: &StorePath,
    ) -> Result<Option<(bytes::Bytes, Version)>, FleetError> {
        let got = match self.store.get(key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("read", key, e)),
        };
        let version = Version::of(&got.meta);
        let bytes = got.bytes().await.map_err(|e| self.err("read", key, e))?;
        Ok(Some((bytes, version)))
    }

    /// Writes `value` at `key` if nothing is there. `Err(Conflict)` if
    /// something is (and it is not this very write).
    pub async fn create<T: Serialize>(
        &self,
        key: &StorePath,
        value: &T,
    ) -> Result<Version, FleetError> {
        let body = to_body(value);
        let _lock = self.lock().await?;
        let put = self
            .store
            .put_opts(key, PutPayload::from(body.clone()), PutMode::Create.into())
            .await;
        match put {
            Ok(done) => Ok(self.written(key, done).await?),
            Err(object_store::Error::AlreadyExists { .. }) => self.settle(key, &body).await,
            Err(e) => Err(self.err("create", key, e)),
        }
    }

    /// Replaces the document at `key` if it is still at `expected`.
    /// `Err(Conflict)` if it changed or is gone (and the change is not
    /// this very write).
    pub async fn update<T: Serialize>(
        &self,
        key: &StorePath,
        value: &T,
        expected: &Version,
    ) -> Result<Version, FleetError> {
        let body = to_body(value);
        let _lock = self.lock().await?;
        let put = if self.is_local() {
            // Under the lock: compare, then write.
            match self.store.head(key).await {
                Ok(meta) if Version::of(&meta) == *expected => {
                    self.store
                        .put_opts(
                            key,
                            PutPayload::from(body.clone()),
                            PutMode::Overwrite.into(),
                        )
                        .await
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                    return Err(FleetError::Conflict {
                        key: key.to_string(),
                    });
                }
                Err(e) => return Err(self.err("check", key, e)),
            }
        } else {
            let opts = PutOptions::from(PutMode::Update(expected.as_update()));
            self.store
                .put_opts(key, PutPayload::from(body.clone()), opts)
                .await
        };
        match put {
            Ok(done) => Ok(self.written(key, done).await?),
            // S3 answers 409 to concurrent If-Match writes; object_store
            // retries, then reports it as AlreadyExists.
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => self.settle(key, &body).await,
            Err(e) => Err(self.err("update", key, e)),
        }
    }

    /// Deletes `key` (gone already is fine).
    pub async fn delete(&self, key: &StorePath) -> Result<(), FleetError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    /// The objects directly inside `.fleet/` (not in its sub-folders): one
    /// request, whatever the number of sessions.
    pub async fn list_top(&self) -> Result<Vec<Listed>, FleetError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.dir))
            .await
            .map_err(|e| self.err("list", &self.dir, e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|m| {
                Some(Listed {
                    name: m.location.filename()?.to_string(),
                    version: Version::of(m),
                })
            })
            .collect())
    }

    /// Every object under `.fleet/<folder>/`.
    pub async fn list_folder(&self, folder: &str) -> Result<Vec<Listed>, FleetError> {
        let prefix = self.dir.clone().join(folder);
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.err("list", &prefix, e))?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                Some(Listed {
                    name: m.location.filename()?.to_string(),
                    version: Version::of(m),
                })
            })
            .collect())
    }

    /// The version a successful put reports; a store that reports none
    /// (rare) is asked with a HEAD.
    async fn written(
        &self,
        key: &StorePath,
        done: object_store::PutResult,
    ) -> Result<Version, FleetError> {
        if done.e_tag.is_some() || done.version.is_some() {
            return Ok(Version {
                e_tag: done.e_tag,
                version: done.version,
            });
        }
        let meta = self
            .store
            .head(key)
            .await
            .map_err(|e| self.err("check", key, e))?;
        Ok(Version::of(&meta))
    }

    /// A conditional write was refused: it still succeeded if what is
    /// there now is exactly what we wrote (a retried request whose first
    /// attempt had landed). The random token in every document makes equal
    /// bytes mean the same write.
    async fn settle(&self, key: &StorePath, body: &[u8]) -> Result<Version, FleetError> {
        match self.read_raw(key).await? {
            Some((there, version)) if there.as_ref() == body => Ok(version),
            _ => Err(FleetError::Conflict {
                key: key.to_string(),
            }),
        }
    }

    /// `file://`: holds the fleet's lock file until dropped.
    async fn lock(&self) -> Result<Option<std::fs::File>, FleetError> {
        let Some(path) = self.local_lock.clone() else {
            return Ok(None);
        };
        let locked = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(file)
        })
        .await
        .map_err(|e| FleetError::Task(e.to_string()))?;
        locked.map(Some).map_err(|source| FleetError::Lock {
            path: self.local_lock.clone().unwrap_or_default(),
            source,
        })
    }
}

fn to_body<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("fleet documents always serialize")
}

/// A random token that makes each write's bytes unique.
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
