//! Opening the object store named in `[backup] store`, and the two bridges
//! between blocking archive code and async object storage: a `Write` that
//! feeds a multipart upload and a `Read` that drains a download, both
//! through small bounded channels.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::sync::mpsc;

use super::{BackupConfig, StoreUrl};

/// An opened store and where Vigil's objects live inside it.
pub(super) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub root: StorePath,
    /// For `file://` stores: the folder, where interrupted uploads leave
    /// staged files that object_store's listings do not show.
    pub local_dir: Option<PathBuf>,
}

pub(super) fn open(cfg: &BackupConfig, env: &[(String, String)]) -> Result<Opened, String> {
    match &cfg.store {
        StoreUrl::File(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| e.to_string())?
                .with_automatic_cleanup(true);
            Ok(Opened {
                store: Arc::new(store),
                root: StorePath::default(),
                local_dir: Some(dir.clone()),
            })
        }
        StoreUrl::Remote(url) => {
            let root = StorePath::parse(url.path().trim_matches('/')).map_err(|e| e.to_string())?;
            let store: Arc<dyn ObjectStore> = match url.scheme() {
                "memory" => Arc::new(object_store::memory::InMemory::new()),
                "s3" | "s3a" => Arc::new(s3(cfg, url, env)?),
                _ => {
                    // gs:// and az:// read their credentials from the
                    // environment the same way; whether they are compiled
                    // in is object_store's answer.
                    let (store, _) = object_store::parse_url_opts(
                        url,
                        env.iter()
                            .filter(|(k, _)| k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
                    )
                    .map_err(|e| {
                        format!(
                            "{e} (gs:// and az:// need vigil built with its gcp / azure features)"
                        )
                    })?;
                    Arc::from(store)
                }
            };
            Ok(Opened {
                store,
                root,
                local_dir: None,
            })
        }
    }
}

fn s3(
    cfg: &BackupConfig,
    url: &url::Url,
    env: &[(String, String)],
) -> Result<object_store::aws::AmazonS3, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let has_credentials = env.iter().any(|(k, _)| {
        matches!(
            k.as_str(),
            "AWS_ACCESS_KEY_ID"
                | "AWS_WEB_IDENTITY_TOKEN_FILE"
                | "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
                | "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        )
    });
    if !has_credentials {
        tracing::warn!(
            store = %url,
            "no AWS credentials in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); \
             trying the instance metadata service"
        );
    }
    let mut b = AmazonS3Builder::new();
    for (key, value) in env {
        if key.starts_with("AWS_")
            && let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
        {
            b = b.with_config(k, value.clone());
        }
    }
    b = b.with_url(url.as_str());
    // Conditional puts (If-None-Match / If-Match) are what a fleet's
    // ownership rests on; backups never send them, so an AWS_CONDITIONAL_PUT
    // from the environment may not turn them off.
    b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
    let s3 = &cfg.s3;
    if let Some(endpoint) = &s3.endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        b = b.with_region(region);
    }
    if s3.path_style {
        b = b.with_virtual_hosted_style_request(false);
    }
    b = b
        .with_allow_http(s3.allow_http)
        .with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: cfg.max_retries,
            retry_timeout: cfg.retry_timeout,
        })
        .with_client_options(
            object_store::ClientOptions::new()
                .with_allow_http(s3.allow_http)
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(120)),
        );
    b.build().map_err(|e| e.to_string())
}

/// Chunks handed from the archive thread to the uploader.
const CHUNK: usize = 256 << 10;

/// The blocking end of an upload: bytes written here become parts of a
/// multipart upload. Fails with `BrokenPipe` once the uploader gave up.
pub(super) struct UploadWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl UploadWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Parts in flight per upload; with `PART_SIZE` this bounds the memory an
/// upload holds (a part being filled plus this many being sent).
const UPLOAD_CONCURRENCY: usize = 2;
/// S3's smallest allowed part.
pub(super) const PART_SIZE: usize = 5 << 20;

pub(super) fn upload_channel() -> (UploadWriter, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::channel(4);
    (
        UploadWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        rx,
    )
}

/// Feeds everything the writer sends into `upload`, with back-pressure.
/// Returns when the writer is dropped (then call `finish`) or on the first
/// store error (then call `abort`).
pub(super) async fn feed(
    upload: &mut WriteMultipart,
    mut rx: mpsc::Receiver<Bytes>,
) -> object_store::Result<u64> {
    let mut sent = 0u64;
    while let Some(chunk) = rx.recv().await {
        upload.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
        sent += chunk.len() as u64;
        tracing::trace!(sent, "archive bytes handed to the upload");
        upload.put(chunk);
    }
    Ok(sent)
}

/// Feeds a download's reader; await it alongside the blocking consumer.
pub(super) type Pump = std::pin::Pin<Box<dyn Future<Output = object_store::Result<()>> + Send>>;

/// The blocking end of a download.
pub(super) struct DownloadReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl io::Read for DownloadReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Starts reading `key`; the returned future pumps it into the reader and
/// must be awaited alongside the blocking consumer.
pub(super) async fn download(
    store: &Arc<dyn ObjectStore>,
    key: &StorePath,
) -> object_store::Result<(
    DownloadReader,
    impl Future<Output = object_store::Result<()>> + use<>,
)> {
    let stream = store.get(key).await?.into_stream();
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let pump = async move {
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The consumer stopped (done, or gave up): so do we.
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(io::Error::other(format!("download failed: {e}"))))
                        .await;
                    return Err(e);
                }
            }
        }
        Ok(())
    };
    Ok((
        DownloadReader {
            rx,
            current: Bytes::new(),
        },
        pump,
    ))
}
