//! Reading journals back: a session's lines, oldest first across its
//! rotated files, from a point in time on; and lines parsed into
//! [`Entry`]s with the file and line they came from.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Entry, JournalError, epoch_ms, path};
use crate::fields::parse_duration;
use crate::id::SessionId;

/// From when to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Since {
    /// Everything the journal still holds.
    #[default]
    Start,
    /// Calls made this long ago or later ("10m", "2h").
    Ago(Duration),
    /// Calls made at this time or later (RFC 3339).
    At(SystemTime),
}

impl Since {
    /// The call clock (ms since the Unix epoch) this points at, `now`
    /// being the time `Ago` counts back from.
    pub fn earliest_ms(self, now: SystemTime) -> u64 {
        match self {
            Since::Start => 0,
            Since::Ago(d) => epoch_ms(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
            Since::At(t) => epoch_ms(t),
        }
    }
}

impl FromStr for Since {
    type Err = String;

    /// A duration ago ("10m", "2h", "90s") or an RFC 3339 time
    /// ("2026-01-01T10:00:00Z").
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(d) = parse_duration(s) {
            return Ok(Since::Ago(d));
        }
        humantime::parse_rfc3339_weak(s.trim())
            .map(Since::At)
            .map_err(|_| {
                format!(
                    "{s:?} is neither a duration ago (\"10m\", \"2h\") nor an RFC 3339 time (\"2026-01-01T10:00:00Z\")"
                )
            })
    }
}

/// The files of `session`'s journal in the journal folder `dir`, oldest
/// first (those that exist).
pub(crate) fn files(dir: &Path, session: &SessionId) -> Vec<PathBuf> {
    let current = path(dir, session);
    let mut older: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(&format!("{session}.jsonl."))?
                .parse::<u32>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    older.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = older.into_iter().map(|(_, p)| p).collect();
    if current.exists() {
        files.push(current);
    }
    files
}

/// The lines of `session`'s journal in the journal folder `dir` made at
/// `since` or later, oldest first, as written (JSON). A line that is not a journal
/// line (the end of a file cut by a crash, say) is skipped.
pub fn read(dir: &Path, session: &SessionId, since: Since) -> Result<Vec<String>, JournalError> {
    #[derive(Deserialize)]
    struct Clock {
        clock_ms: u64,
    }
    let from = since.earliest_ms(SystemTime::now());
    let mut lines = Vec::new();
    for file in files(dir, session) {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            // Rotated away between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(JournalError::Io {
                    path: file,
                    op: "read the journal",
                    source,
                });
            }
        };
        lines.extend(
            text.lines()
                .filter(|l| serde_json::from_str::<Clock>(l).is_ok_and(|c| c.clock_ms >= from))
                .map(str::to_owned),
        );
    }
    Ok(lines)
}

/// The entries of journal text read from `file`, each with its line
/// number; blank lines are skipped, a line that is not an entry is an
/// error naming `file:line`.
pub(crate) fn entries<'a>(
    file: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, Entry), JournalError>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(move |(i, l)| {
            serde_json::from_str::<Entry>(l)
                .map(|e| (i + 1, e))
                .map_err(|e| JournalError::Line {
                    file: file.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_a_duration_ago_or_a_time() {
        assert_eq!(
            "10m".parse::<Since>(),
            Ok(Since::Ago(Duration::from_secs(600)))
        );
        let at: Since = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            at.earliest_ms(SystemTime::now()),
            1_767_225_600_000,
            "an absolute time does not depend on now"
        );
        assert!("yesterday".parse::<Since>().is_err());
    }
}
