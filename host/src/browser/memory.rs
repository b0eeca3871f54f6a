//! How much memory one browser costs: PSS and RSS summed over Chromium's
//! process tree, read from `/proc/<pid>/smaps_rollup`. PSS splits shared
//! pages between the processes sharing them, so sums over several sessions
//! add up to what the machine really spends. Linux only; read-only.

use std::collections::HashMap;
use std::path::Path;

use super::procfs;

/// Memory of one process tree, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUsage {
    pub processes: usize,
    pub pss_bytes: u64,
    /// The part of PSS that is the processes' own (heaps, stacks), as
    /// opposed to file pages (the Chromium binary, fonts) that every
    /// session on the host shares.
    pub pss_anon_bytes: u64,
    pub rss_bytes: u64,
}

/// One process of a browser's tree.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProcessMemory {
    pub pid: u32,
    /// Chromium's `--type=` (`renderer`, `gpu-process`, `zygote`,
    /// `utility:<sub-type>`), or `browser` for the main process.
    pub role: String,
    pub pss_bytes: u64,
    pub pss_anon_bytes: u64,
    pub rss_bytes: u64,
}

/// Sums PSS and RSS over `root` and all its descendants. Processes that end
/// while being read are skipped. Blocking: call it from `spawn_blocking`.
pub fn process_tree_memory(root: u32) -> std::io::Result<MemoryUsage> {
    let mut usage = MemoryUsage::default();
    for p in process_tree(root)? {
        usage.processes += 1;
        usage.pss_bytes += p.pss_bytes;
        usage.pss_anon_bytes += p.pss_anon_bytes;
        usage.rss_bytes += p.rss_bytes;
    }
    Ok(usage)
}

/// Every process of the tree under `root`, with its role and memory.
/// Blocking.
pub fn process_tree(root: u32) -> std::io::Result<Vec<ProcessMemory>> {
    let tree = descendants(root, &parents(Path::new("/proc"))?);
    let mut out = Vec::new();
    for pid in tree {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let rollup = parse_rollup(&text);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        out.push(ProcessMemory {
            pid,
            role: role_from_cmdline(&cmdline),
            pss_bytes: rollup.pss,
            pss_anon_bytes: rollup.pss_anon,
            rss_bytes: rollup.rss,
        });
    }
    Ok(out)
}

fn role_from_cmdline(cmdline: &[u8]) -> String {
    // Chromium rewrites its process title: arguments may be separated by
    // spaces instead of NULs.
    let args: Vec<&str> = cmdline
        .split(|b| *b == 0 || *b == b' ')
        .filter_map(|a| std::str::from_utf8(a).ok())
        .collect();
    let flag = |name: &str| args.iter().find_map(|a| a.strip_prefix(name));
    match (flag("--type="), flag("--utility-sub-type=")) {
        (Some(kind), Some(sub)) => format!("{kind}:{sub}"),
        (Some(kind), None) => kind.to_owned(),
        (None, _) => "browser".to_owned(),
    }
}

/// pid -> parent pid for every process in `/proc`.
fn parents(proc_dir: &Path) -> std::io::Result<HashMap<u32, u32>> {
    let mut map = HashMap::new();
    for process in procfs::processes(proc_dir)? {
        let (pid, dir) = process?;
        if let Ok(stat) = std::fs::read_to_string(dir.join("stat"))
            && let Some((ppid, _)) = procfs::parent_and_group(&stat)
        {
            map.insert(pid, ppid);
        }
    }
    Ok(map)
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

struct Rollup {
    pss: u64,
    pss_anon: u64,
    rss: u64,
}

/// Reads a `smaps_rollup` text (values are in kB) into bytes.
fn parse_rollup(text: &str) -> Rollup {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Rollup {
        pss: field("Pss:"),
        pss_anon: field("Pss_Anon:"),
        rss: field("Rss:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = parse_rollup(text);
        assert_eq!(
            (r.pss, r.pss_anon, r.rss),
            (31034 * 1024, 1024, 108736 * 1024)
        );
    }

    #[test]
    fn roles_come_from_chromiums_type_flags() {
        assert_eq!(
            role_from_cmdline(b"/usr/lib/chromium/chromium\0--headless\0"),
            "browser"
        );
        assert_eq!(
            role_from_cmdline(b"chromium\0--type=renderer\0--x\0"),
            "renderer"
        );
        assert_eq!(
            role_from_cmdline(
                b"chromium\0--type=utility\0--utility-sub-type=storage.mojom.StorageService\0"
            ),
            "utility:storage.mojom.StorageService"
        );
    }

    #[test]
    fn this_test_process_has_memory() {
        let usage = process_tree_memory(std::process::id()).unwrap();
        assert!(usage.processes >= 1);
        assert!(usage.pss_bytes > 0 && usage.rss_bytes >= usage.pss_bytes);
    }
}
