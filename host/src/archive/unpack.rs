//! Input -> sha256 -> (age) -> gzip members on one thread, inflated on
//! every core, put back in order; tar entries checked and written on
//! others. Also the read-only walk behind `check`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use super::member::{self, Member, Next};
use super::{
    ArchiveError, CheckSummary, Decoding, Expected, IN_FLIGHT, PIPE_CHUNK, Progress, Sha256,
    UnpackSummary, link_stays_inside, safe_relative,
};
use crate::volume::ProfilePath;
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

/// Runs the decoding on threads of its own and hands the tar stream to
/// `consume` on this one. One thread reads the input (hash, decrypt) and
/// cuts it into gzip members; one per core inflates them; this thread reads
/// them back in order. Returns `consume`'s result, the input's size and
/// its sha256.
fn decode_then<R, T>(
    input: R,
    expect: Option<Expected>,
    decoding: Decoding<'_>,
    consume: impl FnOnce(&mut dyn Read) -> Consumed<T>,
) -> Result<(T, u64, Sha256), ArchiveError>
where
    R: Read + Send,
{
    let inflaters = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_INFLATERS);
    let budget = Budget::new(IN_FLIGHT);
    let abandon = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::channel::<(u64, Member)>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u64, Piece)>();
    std::thread::scope(|s| {
        let (budget, abandon, job_rx) = (&budget, &abandon, &job_rx);
        let mut workers = Vec::new();
        for _ in 0..inflaters {
            let done_tx = done_tx.clone();
            workers.push(s.spawn(move || inflate_members(job_rx, &done_tx)));
        }
        let decoder = s.spawn(move || {
            let mut hashed = HashingReader::new(input);
            let out = Dispatch {
                jobs: job_tx,
                pieces: done_tx,
                budget,
                abandon,
            };
            let decode_error = pump(&mut hashed, decoding, &out);
            drop(out);
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
        let mut pipe = InOrder {
            pieces: done_rx,
            early: BTreeMap::new(),
            next: 0,
            current: Vec::new(),
            pos: 0,
            weight: 0,
            budget,
            error: None,
        };
        let consumed = consume(&mut pipe);
        if let Consumed::Local(_) = consumed {
            abandon.store(true, Ordering::Relaxed);
        }
        // A damaged member met in order comes before anything the reading
        // thread found further on.
        let inflate_error = pipe.error.take();
        drop(pipe);
        let decoded = decoder.join().map_err(|_| ArchiveError::Panicked)?;
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        if panicked {
            return Err(ArchiveError::Panicked);
        }
        match (decoded, consumed) {
            (_, Consumed::Local(e)) => Err(e),
            (Err(Some(e)), _) => Err(e),
            (Err(None), _) => Err(ArchiveError::Panicked),
            (Ok((size, sha, decode_error)), consumed) => {
                compare(expect, size, sha)?;
                if let Some(e) = inflate_error.or(decode_error) {
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

/// Inflating threads beyond this would only wait for the disk.
const MAX_INFLATERS: usize = 8;

/// A run of the tar stream, in order by its sequence number: an inflated
/// member, a chunk of an unframed stream, or why a member could not be
/// inflated. `weight` is what it holds of the [`Budget`].
struct Piece {
    data: Result<Vec<u8>, String>,
    weight: usize,
}

/// Where the reading thread sends its work.
struct Dispatch<'a> {
    jobs: mpsc::Sender<(u64, Member)>,
    pieces: mpsc::Sender<(u64, Piece)>,
    budget: &'a Budget,
    abandon: &'a AtomicBool,
}

fn inflate_members(jobs: &Mutex<mpsc::Receiver<(u64, Member)>>, done: &mpsc::Sender<(u64, Piece)>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, member)) = job else { return };
        let weight = member.weight();
        // A panic here would leave a hole in the stream that the reader
        // waits on forever: make it a damaged member instead.
        let data = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| member.inflate()))
            .unwrap_or_else(|_| Err("inflating it panicked".into()));
        drop(member);
        // The reader has hung up: keep taking jobs so the reading thread
        // is never left waiting, and drop them.
        let _ = done.send((seq, Piece { data, weight }));
    }
}

/// Decrypts `input`, cuts it into gzip members for the inflating threads,
/// or inflates it here when it has no framed members. Returns the decoding
/// error, if any; stops quietly when the consumer hangs up.
fn pump<R: Read>(
    input: &mut HashingReader<R>,
    decoding: Decoding<'_>,
    out: &Dispatch<'_>,
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
    let gzip_error = |e: io::Error| Some(ArchiveError::Corrupt(format!("gzip stream: {e}")));
    let mut stream = io::BufReader::with_capacity(PIPE_CHUNK, decrypted);
    let mut seq = 0u64;
    loop {
        if out.abandon.load(Ordering::Relaxed) {
            return None;
        }
        match member::next(&mut stream) {
            Ok(Next::End) => return None,
            Ok(Next::Member(member)) => {
                if !out.budget.take(member.weight()) || out.jobs.send((seq, member)).is_err() {
                    return None;
                }
                seq += 1;
            }
            Ok(Next::Unframed(head)) => {
                let rest = io::Cursor::new(head).chain(&mut stream);
                return inflate_in_order(rest, seq, out).err().and_then(gzip_error);
            }
            Err(e) => return gzip_error(e),
        }
    }
}

/// Inflates a stream without framed members here, in chunks, after the
/// `seq` pieces sent before it.
fn inflate_in_order(stream: impl Read, mut seq: u64, out: &Dispatch<'_>) -> io::Result<()> {
    let mut gunzip = flate2::read::MultiGzDecoder::new(stream);
    loop {
        if out.abandon.load(Ordering::Relaxed) || !out.budget.take(PIPE_CHUNK) {
            return Ok(());
        }
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let n = member::read_full(&mut gunzip, &mut chunk)?;
        if n == 0 {
            out.budget.give(PIPE_CHUNK);
            return Ok(());
        }
        chunk.truncate(n);
        let piece = Piece {
            data: Ok(chunk),
            weight: PIPE_CHUNK,
        };
        if out.pieces.send((seq, piece)).is_err() {
            return Ok(());
        }
        seq += 1;
    }
}

/// Bytes in flight between the reading thread and the consumer: taken
/// before a piece is sent, given back when the consumer is done with it.
struct Budget {
    capacity: usize,
    state: Mutex<BudgetState>,
    changed: Condvar,
}

struct BudgetState {
    free: usize,
    /// The consumer hung up: nothing more will be given back.
    closed: bool,
}

impl Budget {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(BudgetState {
                free: capacity,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Waits for `n` bytes (at most the whole budget); `false` once closed.
    fn take(&self, n: usize) -> bool {
        let n = n.min(self.capacity);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !state.closed && state.free < n {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.closed {
            return false;
        }
        state.free -= n;
        true
    }

    fn give(&self, n: usize) {
        let n = n.min(self.capacity);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.free = (state.free + n).min(self.capacity);
        self.changed.notify_all();
    }

    fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.closed = true;
        self.changed.notify_all();
    }
}

/// The tar stream, put back in order from the pieces as they arrive. Ends
/// at the first member that could not be inflated (kept in `error`).
/// Dropping it tells the reading thread to stop.
struct InOrder<'a> {
    pieces: mpsc::Receiver<(u64, Piece)>,
    /// Pieces that arrived before their turn.
    early: BTreeMap<u64, Piece>,
    next: u64,
    current: Vec<u8>,
    pos: usize,
    /// Budget held by `current`.
    weight: usize,
    budget: &'a Budget,
    error: Option<ArchiveError>,
}

impl InOrder<'_> {
    /// The next piece in order; `None` at the end of the stream.
    fn next_piece(&mut self) -> Option<Piece> {
        if let Some(piece) = self.early.remove(&self.next) {
            return Some(piece);
        }
        loop {
            // Every sender gone: the stream ended (a hole after it would
            // mean a lost piece, which the joins report as a panic).
            let (seq, piece) = self.pieces.recv().ok()?;
            if seq == self.next {
                return Some(piece);
            }
            self.early.insert(seq, piece);
        }
    }
}

impl Read for InOrder<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.error.is_some() {
                return Ok(0);
            }
            self.budget.give(std::mem::take(&mut self.weight));
            let Some(piece) = self.next_piece() else {
                return Ok(0);
            };
            self.next += 1;
            self.weight = piece.weight;
            match piece.data {
                Ok(data) => {
                    self.current = data;
                    self.pos = 0;
                }
                Err(why) => {
                    self.current = Vec::new();
                    self.pos = 0;
                    self.error = Some(ArchiveError::Corrupt(format!("gzip stream: {why}")));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for InOrder<'_> {
    fn drop(&mut self) {
        self.budget.close();
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
