//! How much memory one browser costs: PSS and RSS summed over Chromium's
//! process tree, read from `/proc/<pid>/smaps_rollup`. PSS splits shared
//! pages between the processes sharing them, so sums over several sessions
//! add up to what the machine really spends. Linux only; read-only.

use std::collections::HashMap;
use std::path::Path;

/// Memory of one process tree, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUsage {
    pub processes: usize,
    pub pss_bytes: u64,
    pub rss_bytes: u64,
}

/// Sums PSS and RSS over `root` and all its descendants. Processes that end
/// while being read are skipped. Blocking: call it from `spawn_blocking`.
pub fn process_tree_memory(root: u32) -> std::io::Result<MemoryUsage> {
    let tree = descendants(root, &parents(Path::new("/proc"))?);
    let mut usage = MemoryUsage::default();
    for pid in tree {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let (pss, rss) = parse_rollup(&text);
        usage.processes += 1;
        usage.pss_bytes += pss;
        usage.rss_bytes += rss;
    }
    Ok(usage)
}

/// pid -> parent pid for every process in `/proc`.
fn parents(proc_dir: &Path) -> std::io::Result<HashMap<u32, u32>> {
    let mut map = HashMap::new();
    for entry in std::fs::read_dir(proc_dir)? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(ppid) = parent_from_stat(&stat)
        {
            map.insert(pid, ppid);
        }
    }
    Ok(map)
}

/// The parent pid from `/proc/<pid>/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its last `)`.
fn parent_from_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| **p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// (PSS, RSS) in bytes from a `smaps_rollup` text (values are in kB).
fn parse_rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("Pss:"), field("Rss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parent_survives_odd_command_names() {
        let stat = "4242 (chromium (x) y) S 4200 4242 4242 0 -1 4194560";
        assert_eq!(parent_from_stat(stat), Some(4200));
    }

    #[test]
    fn descendants_include_grandchildren_only_of_the_root() {
        let parents = HashMap::from([(2, 1), (3, 2), (4, 3), (5, 1), (9, 8)]);
        let mut tree = descendants(2, &parents);
        tree.sort();
        assert_eq!(tree, vec![2, 3, 4]);
    }

    #[test]
    fn rollup_values_are_read_in_bytes() {
        let text = "55d0-7ff [rollup]\nRss:              108736 kB\nPss:               31034 kB\nPss_Anon: 1 kB\n";
        assert_eq!(parse_rollup(text), (31034 * 1024, 108736 * 1024));
    }

    #[test]
    fn this_test_process_has_memory() {
        let usage = process_tree_memory(std::process::id()).unwrap();
        assert!(usage.processes >= 1);
        assert!(usage.pss_bytes > 0 && usage.rss_bytes >= usage.pss_bytes);
    }
}
