//! Profile folder -> tar -> gzip members compressed on every core ->
//! (age) -> sha256 -> output. Each member records its own length (see
//! [`super::member`]), so that a restore can inflate them on every core too.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use sha2::Digest as _;

use super::{
    ArchiveError, BLOCK_SIZE, Excludes, PackOptions, PackSummary, Progress, Sha256, member,
};
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
                    if done_tx
                        .send((seq, member::compress(&block, level)))
                        .is_err()
                    {
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
