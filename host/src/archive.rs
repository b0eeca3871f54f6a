//! A profile folder <-> a `.tar.gz` byte stream, with its sha256 computed
//! on the way. Owns the archive format, the exclusion rules and the safety
//! rules for extraction (nothing is ever written outside the target).
//!
//! Archives are plain tar.gz (a series of gzip members, which `tar -xzf`
//! reads like any other), optionally wrapped in `age` encryption: no
//! operator is locked in. Memory stays bounded whatever the profile size:
//! data flows through fixed-size blocks and bounded channels.
//!
//! Never touches a store, a browser or a session; knows no web app. All
//! functions block: call them from `spawn_blocking`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use crate::config::ProfilePath;

/// Files Chromium recreates by itself, and its lock links: never archived
/// unless `[backup] default_excludes = false`.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "Singleton*",
    "Cache",
    "Code Cache",
    "GPUCache",
    "ShaderCache",
    "GrShaderCache",
    "GraphiteDawnCache",
    "DawnCache",
    "DawnGraphiteCache",
    "DawnWebGPUCache",
    "component_crx_cache",
    "extensions_crx_cache",
    "Crashpad",
    "Crash Reports",
    "BrowserMetrics*",
];

/// Tar bytes per gzip member: big enough that independent members cost
/// almost no compression, small enough that a few in flight stay cheap.
const BLOCK_SIZE: usize = 1 << 20;
/// Chunks between the decoding thread and the extracting thread.
const PIPE_CHUNK: usize = 128 << 10;

/// Which paths of a profile are left out of archives and copies.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<String>,
}

impl Excludes {
    /// The built-in list (when `defaults`) plus `extra`.
    pub fn new(defaults: bool, extra: &[String]) -> Self {
        let mut patterns: Vec<String> = if defaults {
            DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        };
        patterns.extend(extra.iter().map(|p| p.trim_matches('/').to_string()));
        Self { patterns }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `rel` is a path inside the profile. A pattern without `/` matches any
    /// single name along it; one with `/` matches the path from the top.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        let rel_str = rel.to_string_lossy();
        self.patterns.iter().any(|p| {
            if p.contains('/') {
                glob(p, &rel_str)
            } else {
                rel.file_name()
                    .is_some_and(|name| glob(p, &name.to_string_lossy()))
            }
        })
    }
}

/// `*` (any run of characters except `/`) and `?` (one character).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' && t[ti] != '/' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            if t[st] == '/' {
                return false;
            }
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A sha256, shown and stored as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a sha256 (64 hex digits)"));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Self(out))
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a stored archive must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Sha256,
    pub size: u64,
}

/// Counters a long operation updates as it goes, for a progress display.
/// Clones share the counters.
#[derive(Debug, Default, Clone)]
pub struct Progress(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    files: AtomicU64,
}

impl Progress {
    /// Profile bytes read (pack) or written (unpack) so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
    pub fn files(&self) -> u64 {
        self.0.files.load(Ordering::Relaxed)
    }
    fn add(&self, bytes: u64, files: u64) {
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.0.files.fetch_add(files, Ordering::Relaxed);
    }
}

/// How to write an archive.
#[derive(Clone)]
pub struct PackOptions {
    /// gzip level 1..=9.
    pub level: u32,
    /// Compression threads (at least 1).
    pub threads: usize,
    /// Encrypt to these recipients (none: plain tar.gz).
    pub encrypt_to: Vec<age::x25519::Recipient>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            level: 6,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            encrypt_to: Vec::new(),
        }
    }
}

/// How to read an archive.
#[derive(Clone, Copy)]
pub enum Decoding<'a> {
    /// A plain tar.gz.
    Plain,
    /// An `age`-encrypted tar.gz, opened with one of these identities.
    Age(&'a [Box<dyn age::Identity + Send + Sync>]),
    /// Encrypted, but no identity at hand: only the checksum can be checked.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    /// Regular files archived.
    pub files: u64,
    /// Their bytes before compression.
    pub bytes_in: u64,
    /// The archive's size, as written to the output.
    pub size: u64,
    pub sha256: Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackSummary {
    pub files: u64,
    pub bytes_out: u64,
    /// The archive's size, as read from the input.
    pub size: u64,
    pub sha256: Sha256,
}

/// What [`check`] found in an archive without extracting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub size: u64,
    pub sha256: Sha256,
    /// Entries, when the archive could be read (not [`Decoding::Opaque`]).
    pub entries: Option<u64>,
    /// Critical paths with data in them, when the archive could be read.
    pub critical_present: Option<Vec<ProfilePath>>,
}

/// Why an archive could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("the archive output failed: {0}")]
    Sink(#[source] io::Error),
    #[error("the archive input failed: {0}")]
    Source(#[source] io::Error),
    #[error("damaged archive: {0}")]
    Corrupt(String),
    #[error("refused archive entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { expected: Sha256, actual: Sha256 },
    #[error("size mismatch: expected {expected} bytes, got {actual} (truncated or padded)")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("an archive worker thread panicked")]
    Panicked,
}

impl ArchiveError {
    /// The archive's bytes are wrong (as opposed to this host's disk, the
    /// network or a missing key): another copy may still be good.
    pub fn is_damaged_archive(&self) -> bool {
        matches!(
            self,
            Self::Corrupt(_)
                | Self::Unsafe { .. }
                | Self::ChecksumMismatch { .. }
                | Self::SizeMismatch { .. }
        )
    }
}

// ---------------------------------------------------------------- packing

/// Writes `dir` as a tar.gz (encrypted if asked) into `out`. Files that
/// vanish while being read are skipped; files that shrink are padded, so a
/// live profile still gives a readable archive (quiesce for a consistent one).
pub fn pack<W: Write + Send>(
    dir: &Path,
    excludes: &Excludes,
    options: &PackOptions,
    out: W,
    progress: &Progress,
) -> Result<PackSummary, ArchiveError> {
    let threads = options.threads.max(1);
    let level = flate2::Compression::new(options.level.clamp(1, 9));
    // Tokens bound the blocks in flight, so memory does not grow when the
    // output is slower than the compressors.
    let in_flight = 2 * threads + 2;
    let (token_tx, token_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = token_tx.send(());
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::sync_channel::<(u64, io::Result<Vec<u8>>)>(in_flight);

    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            workers.push(s.spawn(move || {
                loop {
                    let job = job_rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|rx| rx.recv().map_err(|_| ()));
                    let Ok((seq, block)) = job else { return };
                    if done_tx.send((seq, gzip_member(&block, level))).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(done_tx);

        let encrypt_to = options.encrypt_to.clone();
        let writer = s.spawn(move || write_in_order(done_rx, token_tx, out, &encrypt_to));

        let mut blocks = BlockSplitter {
            buf: Vec::with_capacity(BLOCK_SIZE),
            seq: 0,
            jobs: job_tx,
            tokens: token_rx,
        };
        let walked = {
            let mut builder = tar::Builder::new(&mut blocks);
            let walked = append_tree(&mut builder, dir, excludes, progress);
            walked.and_then(|counts| {
                builder
                    .into_inner()
                    .map_err(ArchiveError::Sink)
                    .map(|_| counts)
            })
        };
        let walked = walked.and_then(|counts| {
            blocks
                .flush_last()
                .map_err(ArchiveError::Sink)
                .map(|_| counts)
        });
        drop(blocks);

        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        let written = writer.join();
        if panicked {
            return Err(ArchiveError::Panicked);
        }
        let written = written.map_err(|_| ArchiveError::Panicked)?;
        // The output's failure explains a stalled walk, so it wins.
        let (size, sha256) = written?;
        let (files, bytes_in) = walked?;
        Ok(PackSummary {
            files,
            bytes_in,
            size,
            sha256,
        })
    })
}

fn gzip_member(block: &[u8], level: flate2::Compression) -> io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(block.len() / 2 + 1024), level);
    gz.write_all(block)?;
    gz.finish()
}

/// Cuts the tar stream into blocks for the compressors.
struct BlockSplitter {
    buf: Vec<u8>,
    seq: u64,
    jobs: mpsc::SyncSender<(u64, Vec<u8>)>,
    tokens: mpsc::Receiver<()>,
}

impl BlockSplitter {
    fn send(&mut self) -> io::Result<()> {
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "the archive output stopped");
        self.tokens.recv().map_err(|_| stopped())?;
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK_SIZE));
        self.jobs.send((self.seq, block)).map_err(|_| stopped())?;
        self.seq += 1;
        Ok(())
    }

    fn flush_last(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for BlockSplitter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK_SIZE {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Puts compressed members back in order, encrypts if asked, hashes and
/// writes them out. Returns the output's size and sha256.
fn write_in_order<W: Write>(
    done: mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    tokens: mpsc::SyncSender<()>,
    out: W,
    encrypt_to: &[age::x25519::Recipient],
) -> Result<(u64, Sha256), ArchiveError> {
    let mut hashed = HashingWriter::new(out);
    {
        let mut sink: Box<dyn Write + '_> = if encrypt_to.is_empty() {
            Box::new(&mut hashed)
        } else {
            let encryptor = age::Encryptor::with_recipients(
                encrypt_to.iter().map(|r| r as &dyn age::Recipient),
            )
            .map_err(|e| ArchiveError::Encrypt(e.to_string()))?;
            Box::new(AgeSink(Some(
                encryptor
                    .wrap_output(&mut hashed)
                    .map_err(ArchiveError::Sink)?,
            )))
        };
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        for (seq, member) in done {
            pending.insert(seq, member);
            while let Some(member) = pending.remove(&next) {
                let member =
                    member.map_err(|e| ArchiveError::Corrupt(format!("gzip failed: {e}")))?;
                sink.write_all(&member).map_err(ArchiveError::Sink)?;
                next += 1;
                let _ = tokens.send(());
            }
        }
        if !pending.is_empty() {
            return Err(ArchiveError::Sink(io::Error::other(
                "the archive stream was cut short",
            )));
        }
        sink.flush().map_err(ArchiveError::Sink)?;
    }
    hashed.inner.flush().map_err(ArchiveError::Sink)?;
    Ok((hashed.bytes, Sha256(hashed.hasher.finalize().into())))
}

/// age's writer must be finished to write its last chunk; this does it on
/// flush so the writer can sit behind `dyn Write`.
struct AgeSink<W: Write>(Option<age::stream::StreamWriter<W>>);

impl<W: Write> Write for AgeSink<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(w) => w.write(data),
            None => Err(io::Error::other(
                "write after the end of an encrypted stream",
            )),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.0.take() {
            Some(w) => w.finish().map(|_| ()),
            None => Ok(()),
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Walks `dir` in name order (archives of the same tree come out the same)
/// and appends everything not excluded. Returns (files, bytes).
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    excludes: &Excludes,
    progress: &Progress,
) -> Result<(u64, u64), ArchiveError> {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs_dir = dir.join(&rel_dir);
        let mut entries = match fs::read_dir(&abs_dir) {
            Ok(e) => e
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ArchiveError::Read {
                    path: abs_dir.clone(),
                    source,
                })?,
            // Gone while walking a live profile: nothing to archive.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !rel_dir.as_os_str().is_empty() => {
                continue;
            }
            Err(source) => {
                return Err(ArchiveError::Read {
                    path: abs_dir,
                    source,
                });
            }
        };
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let rel = rel_dir.join(entry.file_name());
            if excludes.is_excluded(&rel) {
                continue;
            }
            let abs = entry.path();
            let meta = match fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ArchiveError::Read { path: abs, source }),
            };
            let mut header = tar::Header::new_gnu();
            header.set_mode(meta.mode() & 0o777);
            header.set_mtime(meta.mtime().max(0) as u64);
            header.set_uid(0);
            header.set_gid(0);
            let sink = ArchiveError::Sink;
            if meta.is_dir() {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel, io::empty())
                    .map_err(sink)?;
                subdirs.push(rel);
            } else if meta.is_symlink() {
                let target = fs::read_link(&abs).map_err(|source| ArchiveError::Read {
                    path: abs.clone(),
                    source,
                })?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &rel, &target)
                    .map_err(sink)?;
            } else if meta.is_file() {
                let file = match fs::File::open(&abs) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(ArchiveError::Read { path: abs, source }),
                };
                let len = file
                    .metadata()
                    .map_err(|source| ArchiveError::Read {
                        path: abs.clone(),
                        source,
                    })?
                    .len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(len);
                let mut reader = ExactLen {
                    file,
                    left: len,
                    path: &abs,
                    error: None,
                };
                let appended = builder.append_data(&mut header, &rel, &mut reader);
                if let Some(source) = reader.error.take() {
                    return Err(ArchiveError::Read { path: abs, source });
                }
                appended.map_err(sink)?;
                files += 1;
                bytes += len;
                progress.add(len, 1);
            }
            // Sockets, fifos, devices: nothing a browser needs back.
        }
        // Reverse so that the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((files, bytes))
}

/// Reads exactly `left` bytes: a file that shrinks while archived is padded
/// with zeros (the tar header already promised its size). Read errors are
/// kept apart so they are not blamed on the output.
struct ExactLen<'a> {
    file: fs::File,
    left: u64,
    path: &'a Path,
    error: Option<io::Error>,
}

impl Read for ExactLen<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.file.read(&mut buf[..want]) {
            Ok(0) => {
                tracing::warn!(path = %self.path.display(), missing = self.left, "file shrank while archived; padding with zeros (use quiesce mode for a consistent backup)");
                buf[..want].fill(0);
                want
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                return Err(io::Error::other(msg));
            }
        };
        self.left -= n as u64;
        Ok(n)
    }
}

// -------------------------------------------------------------- unpacking

/// Extracts an archive into `target`, an existing empty folder, checking
/// every entry (see the module docs) and, when `expect` is given, that the
/// input hashes to it. On a damaged archive the rest of the input is still
/// read, so a flipped bit is reported as a checksum mismatch rather than as
/// whatever gzip or tar tripped on.
pub fn unpack<R: Read + Send>(
    input: R,
    target: &Path,
    expect: Option<Expected>,
    decoding: Decoding<'_>,
    progress: &Progress,
) -> Result<UnpackSummary, ArchiveError> {
    if let Decoding::Opaque = decoding {
        return Err(ArchiveError::Decrypt(
            "the archive is encrypted and no identity file is configured ([backup] identity)"
                .into(),
        ));
    }
    let root = fs::canonicalize(target).map_err(|source| ArchiveError::Write {
        path: target.to_path_buf(),
        source,
    })?;
    let (counts, size, sha256) = decode_then(input, expect, decoding, |tar_stream| {
        extract(tar_stream, &root, progress)
    })?;
    let (files, bytes_out) = counts;
    Ok(UnpackSummary {
        files,
        bytes_out,
        size,
        sha256,
    })
}

/// Reads a whole archive without writing anything: its checksum always,
/// and its entries and critical paths when it can be decoded.
pub fn check<R: Read + Send>(
    input: R,
    expect: Option<Expected>,
    decoding: Decoding<'_>,
    critical: &[ProfilePath],
) -> Result<CheckSummary, ArchiveError> {
    if let Decoding::Opaque = decoding {
        let mut hashed = HashingReader::new(input);
        io::copy(&mut hashed, &mut io::sink()).map_err(ArchiveError::Source)?;
        let (size, sha256) = hashed.finish();
        compare(expect, size, sha256)?;
        return Ok(CheckSummary {
            size,
            sha256,
            entries: None,
            critical_present: None,
        });
    }
    let ((entries, present), size, sha256) = decode_then(input, expect, decoding, |tar_stream| {
        inspect(tar_stream, critical)
    })?;
    Ok(CheckSummary {
        size,
        sha256,
        entries: Some(entries),
        critical_present: Some(present),
    })
}

fn compare(expect: Option<Expected>, size: u64, sha256: Sha256) -> Result<(), ArchiveError> {
    let Some(expect) = expect else { return Ok(()) };
    if expect.size != size {
        return Err(ArchiveError::SizeMismatch {
            expected: expect.size,
            actual: size,
        });
    }
    if expect.sha256 != sha256 {
        return Err(ArchiveError::ChecksumMismatch {
            expected: expect.sha256,
            actual: sha256,
        });
    }
    Ok(())
}

/// Why the consumer stopped, as seen by the decoding thread.
enum Consumed<T> {
    Done(T),
    /// The archive content is bad: finish hashing to name the real cause.
    Damaged(ArchiveError),
    /// This host failed (disk full...): stop reading at once.
    Local(ArchiveError),
}

/// Runs the decoding (hash, decrypt, gunzip) on its own thread and hands the
/// tar stream to `consume` on this one, so both cores work on a restore
/// like `tar -xzf` with its `gzip` child. Returns `consume`'s result, the
/// input's size and its sha256.
fn decode_then<R, T>(
    input: R,
    expect: Option<Expected>,
    decoding: Decoding<'_>,
    consume: impl FnOnce(&mut dyn Read) -> Consumed<T>,
) -> Result<(T, u64, Sha256), ArchiveError>
where
    R: Read + Send,
{
    let abandon = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|s| {
        let abandon = &abandon;
        let decoder = s.spawn(move || {
            let mut hashed = HashingReader::new(input);
            let decode_error = pump(&mut hashed, decoding, &tx, abandon);
            drop(tx);
            if abandon.load(Ordering::Relaxed) {
                return Err(None);
            }
            // Hash the rest: the checksum is the most telling verdict.
            if let Err(e) = io::copy(&mut hashed, &mut io::sink()) {
                return Err(Some(ArchiveError::Source(e)));
            }
            if let Some(e) = hashed.source_error.take() {
                return Err(Some(ArchiveError::Source(e)));
            }
            let (size, sha) = hashed.finish();
            Ok((size, sha, decode_error))
        });
        let mut pipe = PipeReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        let consumed = consume(&mut pipe);
        if let Consumed::Local(_) = consumed {
            abandon.store(true, Ordering::Relaxed);
        }
        drop(pipe);
        let decoded = decoder.join().map_err(|_| ArchiveError::Panicked)?;
        match (decoded, consumed) {
            (_, Consumed::Local(e)) => Err(e),
            (Err(Some(e)), _) => Err(e),
            (Err(None), _) => Err(ArchiveError::Panicked),
            (Ok((size, sha, decode_error)), consumed) => {
                compare(expect, size, sha)?;
                if let Some(e) = decode_error {
                    return Err(e);
                }
                match consumed {
                    Consumed::Done(t) => Ok((t, size, sha)),
                    Consumed::Damaged(e) | Consumed::Local(e) => Err(e),
                }
            }
        }
    })
}

/// Decrypts and gunzips `input` into the channel. Returns the decoding
/// error, if any; stops quietly when the consumer hangs up.
fn pump<R: Read>(
    input: &mut HashingReader<R>,
    decoding: Decoding<'_>,
    tx: &mpsc::SyncSender<Vec<u8>>,
    abandon: &AtomicBool,
) -> Option<ArchiveError> {
    let decrypted: Box<dyn Read + '_> = match decoding {
        Decoding::Plain => Box::new(&mut *input),
        Decoding::Age(identities) => {
            let opened = age::Decryptor::new(&mut *input)
                .map_err(|e| ArchiveError::Corrupt(format!("not an age file: {e}")))
                .and_then(|d| {
                    d.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
                        .map_err(|e| match e {
                            age::DecryptError::NoMatchingKeys => ArchiveError::Decrypt(
                                "no identity in the identity file matches this backup's recipients"
                                    .into(),
                            ),
                            e => ArchiveError::Corrupt(format!("encrypted stream: {e}")),
                        })
                });
            match opened {
                Ok(r) => Box::new(r),
                Err(e) => return Some(e),
            }
        }
        Decoding::Opaque => return Some(ArchiveError::Decrypt("no identity".into())),
    };
    let mut gunzip =
        flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(PIPE_CHUNK, decrypted));
    loop {
        if abandon.load(Ordering::Relaxed) {
            return None;
        }
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let n = match read_full(&mut gunzip, &mut chunk) {
            Ok(n) => n,
            Err(e) => return Some(ArchiveError::Corrupt(format!("gzip stream: {e}"))),
        };
        if n == 0 {
            return None;
        }
        chunk.truncate(n);
        if tx.send(chunk).is_err() {
            return None;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

struct PipeReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Hashes what is read through it. A failure of the underlying input is
/// remembered, so it is not mistaken for damage in the archive.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
    source_error: Option<io::Error>,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
            source_error: None,
        }
    }
    fn finish(self) -> (u64, Sha256) {
        (self.bytes, Sha256(self.hasher.finalize().into()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let msg = e.to_string();
                self.source_error = Some(e);
                Err(io::Error::other(msg))
            }
        }
    }
}

/// The entry's path inside the archive, refused if it could leave the
/// target. `None` for the archive's own root (`./`).
fn safe_relative(entry_path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in entry_path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Resolves `target` (a symlink's destination) from the real folder
/// `parent`, without touching the disk. `None` if it leaves `root`.
fn link_stays_inside(root: &Path, parent: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut at = parent.to_path_buf();
    for c in target.components() {
        match c {
            Component::Normal(n) => at.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    at.starts_with(root)
}

/// Files up to this size are handed to the writer threads whole; bigger
/// ones are streamed to disk by the reading thread.
const SMALL_FILE: u64 = 1 << 20;

/// A small file read whole from the archive, for a writer thread.
struct FileJob {
    dest: PathBuf,
    entry: String,
    data: Vec<u8>,
    mode: u32,
    mtime: Option<u64>,
}

/// Creating files is mostly kernel time: writing small ones from several
/// threads is what lets a restore keep up with `tar -xzf`, whose `gzip`
/// runs beside it.
fn extract(tar_stream: &mut dyn Read, root: &Path, progress: &Progress) -> Consumed<(u64, u64)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2);
    let failed: Mutex<Option<Consumed<()>>> = Mutex::new(None);
    let (tx, rx) = mpsc::sync_channel::<FileJob>(2 * threads);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (rx, failed) = (&rx, &failed);
            s.spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // After a failure, keep taking jobs (and dropping them)
                    // so that the reader never blocks on a full channel.
                    if failed.lock().map_or(true, |f| f.is_some()) {
                        continue;
                    }
                    if let Err(stop) = write_small_file(&job, progress) {
                        let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(stop);
                    }
                }
            });
        }
        let outcome = extract_entries(tar_stream, root, progress, &tx, &failed);
        drop(tx);
        outcome
    })
    .and_then_writers(failed.into_inner().unwrap_or_else(|p| p.into_inner()))
}

impl<T> Consumed<T> {
    /// A writer's failure wins over the reader's success (and over its
    /// "the writers stopped" error).
    fn and_then_writers(self, writers: Option<Consumed<()>>) -> Consumed<T> {
        match (self, writers) {
            (Consumed::Damaged(e), _) if !matches!(e, ArchiveError::Panicked) => {
                Consumed::Damaged(e)
            }
            (_, Some(Consumed::Damaged(e))) => Consumed::Damaged(e),
            (_, Some(Consumed::Local(e))) => Consumed::Local(e),
            (other, _) => other,
        }
    }
}

fn write_small_file(job: &FileJob, progress: &Progress) -> Result<(), Consumed<()>> {
    let write = |source| {
        Consumed::Local(ArchiveError::Write {
            path: job.dest.clone(),
            source,
        })
    };
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(job.mode)
        .open(&job.dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Consumed::Damaged(ArchiveError::Unsafe {
                entry: job.entry.clone(),
                reason: "a file replaces an earlier entry".into(),
            }));
        }
        Err(e) => return Err(write(e)),
    };
    file.write_all(&job.data).map_err(write)?;
    if let Some(mtime) = job.mtime {
        let _ = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
    }
    progress.add(job.data.len() as u64, 1);
    Ok(())
}

fn extract_entries(
    tar_stream: &mut dyn Read,
    root: &Path,
    progress: &Progress,
    writers: &mpsc::SyncSender<FileJob>,
    failed: &Mutex<Option<Consumed<()>>>,
) -> Consumed<(u64, u64)> {
    let damaged = |e: io::Error| Consumed::Damaged(ArchiveError::Corrupt(format!("tar: {e}")));
    let mut archive = tar::Archive::new(tar_stream);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return damaged(e),
    };
    let mut files = 0;
    let mut bytes = 0;
    // Folders already proven to lie inside the root (no link leads out).
    let mut safe_dirs: HashSet<PathBuf> = HashSet::new();
    safe_dirs.insert(root.to_path_buf());
    let mut buf = vec![0u8; 64 << 10];
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => return damaged(e),
        };
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw_path = match entry.path() {
            Ok(p) => p.into_owned(),
            Err(e) => return damaged(e),
        };
        let unsafe_entry = |reason: String| {
            Consumed::Damaged(ArchiveError::Unsafe {
                entry: raw_path.to_string_lossy().into_owned(),
                reason,
            })
        };
        let rel = match safe_relative(&raw_path) {
            Ok(Some(rel)) => rel,
            Ok(None) => continue,
            Err(reason) => return unsafe_entry(reason),
        };
        let dest = root.join(&rel);
        let parent = dest.parent().unwrap_or(root).to_path_buf();
        if !safe_dirs.contains(&parent) {
            let write = |source| {
                Consumed::Local(ArchiveError::Write {
                    path: parent.clone(),
                    source,
                })
            };
            if let Err(e) = fs::create_dir_all(&parent) {
                return write(e);
            }
            match fs::canonicalize(&parent) {
                Ok(real) if real.starts_with(root) => {
                    safe_dirs.insert(parent.clone());
                }
                Ok(_) => {
                    return unsafe_entry(
                        "its folder is reached through a link that leads outside".into(),
                    );
                }
                Err(e) => return write(e),
            }
        }
        let write = |source| {
            Consumed::Local(ArchiveError::Write {
                path: dest.clone(),
                source,
            })
        };
        let exists = || fs::symlink_metadata(&dest).ok();
        match kind {
            tar::EntryType::Directory => {
                match exists() {
                    Some(m) if m.is_dir() => {}
                    Some(_) => return unsafe_entry("a folder replaces an earlier entry".into()),
                    None => {
                        if let Err(e) = fs::create_dir(&dest) {
                            return write(e);
                        }
                    }
                }
                let mode = entry.header().mode().unwrap_or(0o755) & 0o777 | 0o700;
                let _ = fs::set_permissions(&dest, fs::Permissions::from_mode(mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777 | 0o600;
                let size = entry.size();
                if size <= SMALL_FILE {
                    let mut data = Vec::with_capacity(size as usize);
                    if let Err(e) = entry.read_to_end(&mut data) {
                        return damaged(e);
                    }
                    files += 1;
                    bytes += data.len() as u64;
                    let job = FileJob {
                        dest: dest.clone(),
                        entry: raw_path.to_string_lossy().into_owned(),
                        data,
                        mode,
                        mtime: entry.header().mtime().ok(),
                    };
                    let stopped = failed.lock().map_or(true, |f| f.is_some());
                    if stopped || writers.send(job).is_err() {
                        // The writer's own error is reported by `extract`.
                        return Consumed::Local(ArchiveError::Panicked);
                    }
                    continue;
                }
                let mut file = match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&dest)
                {
                    Ok(f) => f,
                    // create_new never follows or replaces what is there.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return unsafe_entry("a file replaces an earlier entry".into());
                    }
                    Err(e) => return write(e),
                };
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return damaged(e),
                    };
                    if let Err(e) = file.write_all(&buf[..n]) {
                        return write(e);
                    }
                    written += n as u64;
                }
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
                }
                files += 1;
                bytes += written;
                progress.add(written, 1);
            }
            tar::EntryType::Symlink => {
                let target = match entry.link_name() {
                    Ok(Some(t)) => t.into_owned(),
                    Ok(None) => return unsafe_entry("symlink without a target".into()),
                    Err(e) => return damaged(e),
                };
                let real_parent = fs::canonicalize(&parent).unwrap_or(parent.clone());
                if !link_stays_inside(root, &real_parent, &target) {
                    return unsafe_entry(format!(
                        "symlink to {} leads outside the profile",
                        target.display()
                    ));
                }
                if exists().is_some() {
                    return unsafe_entry("a link replaces an earlier entry".into());
                }
                if let Err(e) = std::os::unix::fs::symlink(&target, &dest) {
                    return write(e);
                }
            }
            tar::EntryType::Link => return unsafe_entry("hard links are not accepted".into()),
            other => {
                return unsafe_entry(format!(
                    "{other:?} entries (devices, fifos...) are not accepted"
                ));
            }
        }
    }
    Consumed::Done((files, bytes))
}

fn inspect(
    tar_stream: &mut dyn Read,
    critical: &[ProfilePath],
) -> Consumed<(u64, Vec<ProfilePath>)> {
    let damaged = |e: io::Error| Consumed::Damaged(ArchiveError::Corrupt(format!("tar: {e}")));
    let mut archive = tar::Archive::new(tar_stream);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return damaged(e),
    };
    let mut count = 0;
    let mut present: Vec<ProfilePath> = Vec::new();
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => return damaged(e),
        };
        let path = match entry.path() {
            Ok(p) => p.into_owned(),
            Err(e) => return damaged(e),
        };
        let rel = match safe_relative(&path) {
            Ok(Some(rel)) => rel,
            Ok(None) => continue,
            Err(reason) => {
                return Consumed::Damaged(ArchiveError::Unsafe {
                    entry: path.to_string_lossy().into_owned(),
                    reason,
                });
            }
        };
        count += 1;
        let has_data = entry.header().entry_type().is_file() && entry.size() > 0;
        if has_data {
            for c in critical {
                if rel.starts_with(c.as_path()) && !present.contains(c) {
                    present.push(c.clone());
                }
            }
        }
        // Reading the data proves the tar stream is whole.
        if let Err(e) = io::copy(&mut entry, &mut io::sink()) {
            return damaged(e);
        }
    }
    Consumed::Done((count, present))
}

// ------------------------------------------------------------------ copying

/// Copies a profile folder (an import source) into `dst`, an existing empty
/// folder, leaving out `excludes`. Links are kept when they stay inside
/// the profile and skipped otherwise. Returns (files, bytes).
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    excludes: &Excludes,
    progress: &Progress,
) -> Result<(u64, u64), ArchiveError> {
    let root = fs::canonicalize(src).map_err(|source| ArchiveError::Read {
        path: src.to_path_buf(),
        source,
    })?;
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let from_dir = root.join(&rel_dir);
        let entries = fs::read_dir(&from_dir).map_err(|source| ArchiveError::Read {
            path: from_dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ArchiveError::Read {
                path: from_dir.clone(),
                source,
            })?;
            let rel = rel_dir.join(entry.file_name());
            if excludes.is_excluded(&rel) {
                continue;
            }
            let from = entry.path();
            let to = dst.join(&rel);
            let read_err = |source| ArchiveError::Read {
                path: from.clone(),
                source,
            };
            let write_err = |source| ArchiveError::Write {
                path: to.clone(),
                source,
            };
            let meta = fs::symlink_metadata(&from).map_err(read_err)?;
            if meta.is_dir() {
                fs::create_dir(&to).map_err(write_err)?;
                stack.push(rel);
            } else if meta.is_symlink() {
                let target = fs::read_link(&from).map_err(read_err)?;
                if link_stays_inside(&root, &from_dir, &target) {
                    std::os::unix::fs::symlink(&target, &to).map_err(write_err)?;
                } else {
                    tracing::warn!(path = %from.display(), target = %target.display(), "skipping a link that leads outside the profile");
                }
            } else if meta.is_file() {
                let n = fs::copy(&from, &to).map_err(|source| ArchiveError::Write {
                    path: to.clone(),
                    source,
                })?;
                files += 1;
                bytes += n;
                progress.add(n, 1);
            }
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_names_and_paths() {
        assert!(glob("Singleton*", "SingletonLock"));
        assert!(glob("Cache", "Cache"));
        assert!(!glob("Cache", "CacheStorage"));
        assert!(glob("Default/*.log", "Default/x.log"));
        assert!(!glob("Default/*.log", "Default/a/x.log"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
    }

    #[test]
    fn default_excludes_catch_locks_and_caches_at_any_depth() {
        let ex = Excludes::new(true, &["Default/Sessions".into()]);
        assert!(ex.is_excluded(Path::new("SingletonLock")));
        assert!(ex.is_excluded(Path::new("Default/SingletonCookie")));
        assert!(ex.is_excluded(Path::new("Default/Cache")));
        assert!(ex.is_excluded(Path::new("Default/Code Cache")));
        assert!(ex.is_excluded(Path::new("Default/Sessions")));
        assert!(!ex.is_excluded(Path::new("Default/IndexedDB")));
        assert!(!ex.is_excluded(Path::new("Default/Service Worker/CacheStorage")));
        assert!(!Excludes::new(false, &[]).is_excluded(Path::new("SingletonLock")));
    }

    #[test]
    fn entry_paths_that_leave_the_target_are_refused() {
        assert!(safe_relative(Path::new("../x")).is_err());
        assert!(safe_relative(Path::new("a/../../x")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert_eq!(safe_relative(Path::new("./")).unwrap(), None);
        assert_eq!(
            safe_relative(Path::new("./Default/x")).unwrap(),
            Some(PathBuf::from("Default/x"))
        );
    }

    #[test]
    fn links_are_judged_from_their_real_folder() {
        let root = Path::new("/r");
        assert!(link_stays_inside(
            root,
            Path::new("/r/a"),
            Path::new("../b")
        ));
        assert!(!link_stays_inside(
            root,
            Path::new("/r/a"),
            Path::new("../../b")
        ));
        assert!(!link_stays_inside(root, Path::new("/r"), Path::new("/etc")));
    }

    #[test]
    fn sha256_round_trips_through_hex() {
        let s = Sha256([0xab; 32]);
        assert_eq!(s.to_string().parse::<Sha256>().unwrap(), s);
        assert!("xyz".parse::<Sha256>().is_err());
    }

    fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(
                        p.strip_prefix(dir).unwrap().to_path_buf(),
                        fs::read(&p).unwrap(),
                    );
                }
            }
        }
        out
    }

    #[test]
    fn pack_then_unpack_gives_the_same_files_minus_exclusions() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("Default/IndexedDB/x.leveldb")).unwrap();
        fs::create_dir_all(src.path().join("Default/Cache")).unwrap();
        // Bigger than one block, so several gzip members are stitched.
        let big: Vec<u8> = (0..3 * BLOCK_SIZE as u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(
            src.path().join("Default/IndexedDB/x.leveldb/000003.log"),
            &big,
        )
        .unwrap();
        fs::write(src.path().join("Default/Cache/data_0"), b"cache").unwrap();
        fs::write(src.path().join("Local State"), b"{}").unwrap();
        std::os::unix::fs::symlink("host-1", src.path().join("SingletonLock")).unwrap();

        let mut archive = Vec::new();
        let packed = pack(
            src.path(),
            &Excludes::new(true, &[]),
            &PackOptions {
                threads: 3,
                ..Default::default()
            },
            &mut archive,
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(packed.files, 2);
        assert_eq!(packed.size, archive.len() as u64);

        let dst = tempfile::tempdir().unwrap();
        let expect = Expected {
            sha256: packed.sha256,
            size: packed.size,
        };
        let unpacked = unpack(
            &archive[..],
            dst.path(),
            Some(expect),
            Decoding::Plain,
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(unpacked.files, 2);
        let got = tree(dst.path());
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[Path::new("Default/IndexedDB/x.leveldb/000003.log")],
            big
        );
        assert_eq!(got[Path::new("Local State")], b"{}");
    }

    #[test]
    fn encrypted_archives_need_the_identity() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("Default")).unwrap();
        fs::write(src.path().join("Default/Preferences"), b"secret login").unwrap();
        let identity = age::x25519::Identity::generate();
        let mut archive = Vec::new();
        let options = PackOptions {
            encrypt_to: vec![identity.to_public()],
            ..Default::default()
        };
        pack(
            src.path(),
            &Excludes::default(),
            &options,
            &mut archive,
            &Progress::default(),
        )
        .unwrap();
        assert!(!archive.windows(12).any(|w| w == b"secret login"));

        let identities: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(identity)];
        let dst = tempfile::tempdir().unwrap();
        unpack(
            &archive[..],
            dst.path(),
            None,
            Decoding::Age(&identities),
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read(dst.path().join("Default/Preferences")).unwrap(),
            b"secret login"
        );

        let stranger: Vec<Box<dyn age::Identity + Send + Sync>> =
            vec![Box::new(age::x25519::Identity::generate())];
        let dst = tempfile::tempdir().unwrap();
        let err = unpack(
            &archive[..],
            dst.path(),
            None,
            Decoding::Age(&stranger),
            &Progress::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ArchiveError::Decrypt(_)), "{err}");
        assert!(!err.is_damaged_archive());
    }
}
