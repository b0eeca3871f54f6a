//! Linux's `/proc`, read: the processes listed there and the fields of a
//! process's `stat` line. Reads only; never signals or changes a process.

use std::io;
use std::path::{Path, PathBuf};

/// Every process folder under `proc_dir` (`/proc`): its pid and path.
/// Entries that are not processes are skipped; an entry that cannot be
/// read is an error for the caller to keep or skip.
pub(crate) fn processes(
    proc_dir: &Path,
) -> io::Result<impl Iterator<Item = io::Result<(u32, PathBuf)>>> {
    Ok(
        std::fs::read_dir(proc_dir)?.filter_map(|entry| match entry {
            Err(e) => Some(Err(e)),
            Ok(entry) => {
                let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some(Ok((pid, entry.path())))
            }
        }),
    )
}

/// The parent pid and the process group from a `/proc/<pid>/stat` line.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from its last `)`: state, ppid, pgrp.
pub(crate) fn parent_and_group(stat: &str) -> Option<(u32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(1);
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "4242 (chromium (x) y) S 4200 4242 4242 0 -1 4194560";
        assert_eq!(parent_and_group(stat), Some((4200, 4242)));
    }
}
