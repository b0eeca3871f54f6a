//! Writing journals: [`Journal`] hands lines to one writer thread through
//! a bounded queue that never blocks the caller; the thread appends the
//! queued lines to their sessions' files in batches and rotates a file at
//! its size cap.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

use super::{JournalConfig, JournalError, Since, line};
use crate::id::SessionId;
use crate::policy::{Decision, Role};

/// The journals of one host. Cheap to clone; [`Journal::close`] (or the
/// last clone dropped) lets the writer finish the queue and stop.
#[derive(Clone)]
pub struct Journal {
    /// The journal folder (`data_dir/journal`), read even when writing is
    /// off: what earlier runs wrote stays readable.
    dir: PathBuf,
    inner: Option<Arc<Inner>>,
}

/// What the writer thread is sent.
enum Message {
    Line(SessionId, String),
    /// Write what is queued before this, then stop.
    Stop,
}

struct Inner {
    queue: SyncSender<Message>,
    stats: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// What the journal did since start, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JournalStats {
    /// Lines written.
    pub written: u64,
    /// Lines dropped because the writer was behind (the queue was full).
    pub dropped: u64,
    /// Lines not written because the file could not be (see the log).
    pub failed: u64,
}

impl Journal {
    /// Starts the writer for journals in `dir` (created if missing).
    pub fn open(dir: &Path, config: &JournalConfig) -> Result<Self, JournalError> {
        if !config.enabled {
            return Ok(Journal {
                dir: dir.to_path_buf(),
                inner: None,
            });
        }
        fs::create_dir_all(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            op: "create the journal folder",
            source,
        })?;
        let (queue, lines) = sync_channel(config.queue.max(1));
        let stats = Arc::new(Counters::default());
        let files = Files {
            dir: dir.to_path_buf(),
            per_file: (config.max_bytes / u64::from(config.files.get())).max(1),
            rotated: config.files.get() - 1,
            open: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("vigil-journal".into())
            .spawn({
                let stats = Arc::clone(&stats);
                move || write_lines(lines, files, &stats)
            })
            .map_err(|source| JournalError::Io {
                path: dir.to_path_buf(),
                op: "start the journal writer",
                source,
            })?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            inner: Some(Arc::new(Inner {
                queue,
                stats,
                thread: Mutex::new(Some(thread)),
            })),
        })
    }

    /// A journal that writes and reads nothing (tests, benchmarks).
    pub fn disabled() -> Self {
        Journal {
            dir: PathBuf::new(),
            inner: None,
        }
    }

    /// The lines of `session`'s journal made at `since` or later (see
    /// [`read`](super::read)).
    pub fn lines(&self, session: &SessionId, since: Since) -> Result<Vec<String>, JournalError> {
        if self.dir.as_os_str().is_empty() {
            return Ok(Vec::new());
        }
        super::read(&self.dir, session, since)
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Appends one line for `decision`, made by the `role` policy of
    /// `session` about `input`. Never blocks: when the writer is behind, the
    /// line is dropped and counted (and the first drop of a run logged).
    pub fn record<I: Serialize, A: Serialize>(
        &self,
        session: &SessionId,
        role: Role,
        input: &I,
        decision: &Decision<A>,
    ) {
        let Some(inner) = &self.inner else {
            return;
        };
        let text = match line(session, role, input, decision) {
            Ok(text) => text,
            Err(e) => {
                inner.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%session, %role, error = %e, "cannot write a journal line");
                return;
            }
        };
        match inner.queue.try_send(Message::Line(session.clone(), text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if dropped.is_power_of_two() || dropped == 0 {
                    tracing::warn!(%session, dropped = dropped + 1, "the journal writer is behind; dropping decision lines");
                }
            }
        }
    }

    pub fn stats(&self) -> JournalStats {
        self.inner
            .as_ref()
            .map_or_else(JournalStats::default, |i| JournalStats {
                written: i.stats.written.load(Ordering::Relaxed),
                dropped: i.stats.dropped.load(Ordering::Relaxed),
                failed: i.stats.failed.load(Ordering::Relaxed),
            })
    }

    /// Writes what is queued and stops the writer (blocking; call it from
    /// `spawn_blocking` on an async executor). Lines recorded by clones
    /// afterwards are dropped.
    pub fn close(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let thread = inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            // Clones share the one sender, so the writer would not see the
            // channel close: it is told to stop instead.
            let _ = inner.queue.send(Message::Stop);
            let _ = thread.join();
        }
    }
}

/// The open files of the sessions written to so far.
struct Files {
    dir: PathBuf,
    /// Rotate a file when it would grow past this.
    per_file: u64,
    /// Older files kept (`.1` newest).
    rotated: u32,
    open: HashMap<SessionId, Open>,
}

struct Open {
    file: BufWriter<File>,
    bytes: u64,
}

fn write_lines(lines: Receiver<Message>, mut files: Files, stats: &Counters) {
    'run: while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let Message::Line(session, text) = message else {
                break 'run;
            };
            match files.append(&session, &text) {
                Ok(()) => stats.written.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    let failed = stats.failed.fetch_add(1, Ordering::Relaxed);
                    if failed.is_power_of_two() || failed == 0 {
                        tracing::warn!(%session, error = %e, "cannot write the decision journal");
                    }
                    files.open.remove(&session);
                    0
                }
            };
            next = lines.try_recv().ok();
        }
        files.flush();
        // Lines sent while the writer sleeps wait in the queue: a caller
        // then only enqueues, instead of waking a parked thread for every
        // line (a syscall and a context switch on the call's path).
        std::thread::sleep(BATCH_PAUSE);
    }
    files.flush();
}

/// The writer's pause between batches: lines reach their file at most
/// this late, and a full queue would need `queue` calls in this time.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

impl Files {
    fn path(&self, session: &SessionId) -> PathBuf {
        self.dir.join(format!("{session}.jsonl"))
    }

    fn append(&mut self, session: &SessionId, text: &str) -> std::io::Result<()> {
        let size = text.len() as u64 + 1;
        if !self.open.contains_key(session) {
            let path = self.path(session);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let bytes = file.metadata()?.len();
            self.open.insert(
                session.clone(),
                Open {
                    file: BufWriter::new(file),
                    bytes,
                },
            );
        }
        if self.open[session].bytes > 0 && self.open[session].bytes + size > self.per_file {
            self.rotate(session)?;
        }
        let open = self.open.get_mut(session).expect("opened above");
        open.file.write_all(text.as_bytes())?;
        open.file.write_all(b"\n")?;
        open.bytes += size;
        Ok(())
    }

    /// `<session>.jsonl` becomes `.1`, `.1` becomes `.2`, ...; the oldest
    /// beyond the kept count is deleted. With no older file kept, the file
    /// starts over.
    fn rotate(&mut self, session: &SessionId) -> std::io::Result<()> {
        if let Some(mut open) = self.open.remove(session) {
            open.file.flush()?;
        }
        let path = self.path(session);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        if self.rotated == 0 {
            fs::remove_file(&path)?;
        } else {
            let _ = fs::remove_file(numbered(self.rotated));
            for n in (1..self.rotated).rev() {
                if numbered(n).exists() {
                    fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            fs::rename(&path, numbered(1))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.open.insert(
            session.clone(),
            Open {
                file: BufWriter::new(file),
                bytes: 0,
            },
        );
        Ok(())
    }

    fn flush(&mut self) {
        for open in self.open.values_mut() {
            let _ = open.file.flush();
        }
    }
}
