//! A throwaway Vigil setup for storage tests: a temp folder with a config,
//! a data dir, and a backup store that is either a local folder or a
//! bucket on the test S3 server. Tests run the same story on both with
//! [`on_both_stores!`](crate::on_both_stores).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use vigil::archive::Progress;
use vigil::backup::{BackupError, Backups, Manifest, NoQuiesce};
use vigil::config::Config;
use vigil::id::SessionId;
use vigil::volume::{Profile, ProfileClaim};

use super::s3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    File,
    S3,
}

/// Runs each named `async fn(StoreKind)` twice: `<name>::file` and
/// `<name>::s3`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::common::storage::StoreKind;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn file() {
                super::$name(StoreKind::File).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(StoreKind::S3).await
            }
        }
    )*};
}

pub struct Setup {
    pub root: tempfile::TempDir,
    pub kind: StoreKind,
    pub config_path: PathBuf,
    pub config: Config,
    pub session: SessionId,
    /// The bucket, for S3 setups.
    pub bucket: Option<String>,
}

impl Setup {
    /// `backup_extra` is TOML added to the `[backup]` table.
    pub fn new(kind: StoreKind, backup_extra: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        Self::in_dir(root, kind, backup_extra, "data", "backups")
    }

    /// Like [`Setup::new`] with the data dir and the local store folder
    /// named (relative to the setup's folder, or absolute).
    pub fn in_dir(
        root: tempfile::TempDir,
        kind: StoreKind,
        backup_extra: &str,
        data_dir: &str,
        store_dir: &str,
    ) -> Self {
        let (store, bucket) = match kind {
            StoreKind::File => (format!("file://{store_dir}"), None),
            StoreKind::S3 => {
                let bucket = s3::bucket(&format!(
                    "{}",
                    root.path().file_name().unwrap().to_string_lossy()
                ));
                (format!("s3://{bucket}/vigil"), Some(bucket))
            }
        };
        let s3_table = match kind {
            StoreKind::File => String::new(),
            StoreKind::S3 => format!(
                "[backup.s3]\nendpoint = \"{}\"\npath_style = true\nallow_http = true\n",
                s3::endpoint()
            ),
        };
        let mut retention = String::new();
        for (key, default) in [("keep_days", "30"), ("keep_last", "2")] {
            if !backup_extra.contains(key) {
                retention.push_str(&format!("{key} = {default}\n"));
            }
        }
        let text = format!(
            r#"data_dir = "{data_dir}"
[backup]
store = "{store}"
{retention}retry_timeout_secs = 5
max_retries = 2
{backup_extra}
{s3_table}
[[session]]
id = "main"
url = "https://app.example.test"
"#
        );
        let config_path = root.path().join("vigil.toml");
        std::fs::write(&config_path, text).unwrap();
        let config = Config::load(&config_path).unwrap();
        Self {
            root,
            kind,
            config_path,
            config,
            session: SessionId::new("main").unwrap(),
            bucket,
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        s3::CREDENTIALS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn backups(&self) -> Backups {
        Backups::open_with_env(&self.config.backup, &self.env()).unwrap()
    }

    pub fn profile(&self) -> Profile {
        Profile::new(
            self.config.profile_dir(&self.session),
            self.config.critical_files(&self.session),
        )
    }

    pub fn profile_dir(&self) -> PathBuf {
        self.config.profile_dir(&self.session)
    }

    pub fn claim(&self) -> ProfileClaim {
        self.profile().claim().unwrap()
    }

    /// `vigil backup` of this setup's session through `backups`, with
    /// nothing to quiesce.
    pub async fn back_up(
        &self,
        backups: &Backups,
        claim: &ProfileClaim,
    ) -> Result<Manifest, BackupError> {
        backups
            .backup(
                &self.session,
                claim,
                Arc::new(NoQuiesce),
                &Progress::default(),
            )
            .await
    }

    /// The `vigil` binary with this setup's config and S3 credentials.
    pub fn vigil(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.arg("--config").arg(&self.config_path);
        cmd.env("RUST_LOG", "warn");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// The store itself, to damage objects the way the world does.
    pub fn raw(&self) -> RawStore {
        let (store, prefix): (Arc<dyn ObjectStore>, StorePath) = match self.kind {
            StoreKind::File => {
                let dir = self.local_store_dir();
                std::fs::create_dir_all(&dir).unwrap();
                (
                    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap()),
                    StorePath::default(),
                )
            }
            StoreKind::S3 => {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(self.bucket.clone().unwrap())
                    .with_endpoint(s3::endpoint())
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(false);
                for (k, v) in s3::CREDENTIALS {
                    b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
                }
                (Arc::new(b.build().unwrap()), StorePath::from("vigil"))
            }
        };
        RawStore {
            store,
            session_prefix: prefix.join(self.session.as_str()),
        }
    }

    pub fn local_store_dir(&self) -> PathBuf {
        match &self.config.backup.store {
            vigil::backup::StoreUrl::File(dir) => dir.clone(),
            other => panic!("not a local store: {other}"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
}

/// Direct access to one session's objects.
pub struct RawStore {
    pub store: Arc<dyn ObjectStore>,
    pub session_prefix: StorePath,
}

impl RawStore {
    pub fn key(&self, name: &str) -> StorePath {
        self.session_prefix.clone().join(name)
    }

    /// Object names under the session, sorted.
    pub async fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .store
            .list(Some(&self.session_prefix))
            .map_ok(|m| m.location.filename().unwrap().to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    pub async fn read(&self, name: &str) -> Vec<u8> {
        self.store
            .get(&self.key(name))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    pub async fn write(&self, name: &str, data: Vec<u8>) {
        self.store
            .put(&self.key(name), PutPayload::from(data))
            .await
            .unwrap();
    }

    pub async fn delete(&self, name: &str) {
        self.store.delete(&self.key(name)).await.unwrap();
    }
}

/// Copies a folder tree (test arrangement only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let dest = to.join(e.file_name());
        if meta.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if meta.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), dest).unwrap();
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
