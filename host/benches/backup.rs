//! `vigil backup` vs `tar czf`, and `vigil restore` vs `tar xzf`, side by
//! side on the same generated Chromium-like profile, with wall time and
//! peak RSS of each process. Not a timed test: it prints figures for
//! docs/BENCHMARKS.md.
//!
//!     cargo bench -p vigil --bench backup                 # 100 MB and 1 GB
//!     VIGIL_BENCH_SIZES=100 VIGIL_BENCH_REPS=5 cargo bench -p vigil --bench backup
//!     VIGIL_BENCH_ONLY=restore cargo bench -p vigil --bench backup
//!
//! Sizes are in MB. `VIGIL_BENCH_ONLY=restore` writes each archive once
//! (untimed) and times only the restores. Each measurement is run REPS times (default 3),
//! alternating tar and vigil so both see the same machine noise, and the
//! median is shown. Files are read once before timing and dirty pages are
//! flushed (sync), so both start from the same warm page cache. `VIGIL_BENCH_KEEP=1` keeps the generated data.

#[path = "../../tests/common/profile.rs"]
#[allow(dead_code)]
mod profile;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Run {
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs `cmd` to completion; its wall time and peak RSS (wait4, which
/// also reaps the child).
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Run {
    // A child's peak RSS starts from its parent's peak at fork (the kernel
    // keeps the high-water mark across exec): reset ours (Linux >= 4.0) so
    // only the bench's small current RSS is inherited.
    // SAFETY: plain FFI; hands freed heap back to the kernel first, so the
    // current RSS that every child inherits is small.
    unsafe { libc::malloc_trim(0) };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    // Start each run with no dirty pages left by the previous one.
    rustix::fs::sync();
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut status = 0;
    // SAFETY: plain FFI; `usage` is a zeroed C struct the kernel fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    Run {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.wall);
    let mid = runs.len() / 2;
    let max_rss_kib = runs.iter().map(|r| r.max_rss_kib).max().unwrap();
    Run {
        wall: runs.swap_remove(mid).wall,
        max_rss_kib,
    }
}

/// Reads files through a small buffer: warms the page cache without
/// growing this process (see `measure`).
fn warm(dir: &Path) {
    let paths = if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        profile::all_paths(dir)
    };
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        if let Ok(mut f) = std::fs::File::open(&p) {
            use std::io::Read;
            while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn newest_archive(store: &Path) -> PathBuf {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(store.join("main"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    archives.sort();
    archives.pop().expect("vigil wrote an archive")
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from argv.
    let sizes: Vec<u64> = std::env::var("VIGIL_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("VIGIL_BENCH_SIZES: MB, comma-separated")
        })
        .collect();
    let reps: usize = std::env::var("VIGIL_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let only_restore = match std::env::var("VIGIL_BENCH_ONLY").as_deref() {
        Ok("restore") => true,
        Ok("") | Err(_) => false,
        Ok(other) => panic!("VIGIL_BENCH_ONLY: only \"restore\" is known, not {other:?}"),
    };
    let vigil = env!("CARGO_BIN_EXE_vigil");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("vigil backup/restore vs tar, {cores} cores, median of {reps} runs\n");
    println!(
        "| profile | operation | tar | vigil | speed-up | tar peak RSS | vigil peak RSS | archive (tar / vigil) | load after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    for mb in sizes {
        let work = tempfile::Builder::new()
            .prefix("vigil-bench-")
            .tempdir()
            .unwrap();
        let root = work.path();
        let src = root.join("data/profiles/main");
        let (files, bytes) = profile::generate(&src, mb * 1_000_000, 42);
        std::fs::write(
            root.join("vigil.toml"),
            "data_dir = \"data\"\n[backup]\nstore = \"file://store\"\n[[session]]\nid = \"main\"\nurl = \"https://app.example.test\"\n",
        )
        .unwrap();
        let config = root.join("vigil.toml");
        let label = format!("{} MB, {files} files", bytes / 1_000_000);
        let reference = root.join("ref.tar.gz");

        let (mut tar_c, mut vigil_c) = (Vec::new(), Vec::new());
        let backup_reps = if only_restore { 1 } else { reps };
        for _ in 0..backup_reps {
            warm(&src);
            tar_c.push(measure(
                Command::new("tar")
                    .arg("czf")
                    .arg(&reference)
                    .arg("-C")
                    .arg(&src)
                    .arg("."),
            ));
            warm(&src);
            vigil_c.push(measure(
                Command::new(vigil)
                    .arg("--config")
                    .arg(&config)
                    .args(["backup", "main"])
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null()),
            ));
        }
        let archive = newest_archive(&root.join("store"));
        if !only_restore {
            row(
                &label,
                "backup (czf)",
                median(tar_c),
                median(vigil_c),
                size_of(&reference),
                size_of(&archive),
            );
        }

        // Every restore writes into a new folder and nothing is deleted
        // until all are done: ext4 skips inodes freed in the last minutes
        // when allocating new ones (`recently_deleted`), and after deleting
        // a whole profile that scan took over half of both tar's and
        // Vigil's time, which a real restore onto a volume does not pay.
        let (mut tar_x, mut vigil_x) = (Vec::new(), Vec::new());
        let restored = root.join("restored");
        std::fs::create_dir_all(&restored).unwrap();
        std::fs::rename(&src, restored.join("original")).unwrap();
        for rep in 0..reps {
            let out = restored.join(format!("tar-{rep}"));
            std::fs::create_dir_all(&out).unwrap();
            warm(&reference);
            tar_x.push(measure(
                Command::new("tar")
                    .arg("xzf")
                    .arg(&reference)
                    .arg("-C")
                    .arg(&out),
            ));
            warm(&archive);
            vigil_x.push(measure(
                Command::new(vigil)
                    .arg("--config")
                    .arg(&config)
                    .args(["restore", "main", "--backup"])
                    .arg(
                        archive
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .trim_end_matches(".tar.gz"),
                    )
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null()),
            ));
            std::fs::rename(&src, restored.join(format!("vigil-{rep}"))).unwrap();
        }
        row(
            &label,
            "restore (xzf, verified)",
            median(tar_x),
            median(vigil_x),
            0,
            0,
        );
        if std::env::var_os("VIGIL_BENCH_KEEP").is_some() {
            eprintln!("kept {}", work.keep().display());
        }
    }
}

fn row(label: &str, op: &str, tar: Run, vigil: Run, tar_size: u64, vigil_size: u64) {
    let sizes = if tar_size > 0 {
        format!(
            "{:.1} / {:.1} MB",
            tar_size as f64 / 1e6,
            vigil_size as f64 / 1e6
        )
    } else {
        String::new()
    };
    println!(
        "| {label} | {op} | {:.2} s | {:.2} s | {:.2}x | {:.1} MiB | {:.1} MiB | {sizes} | {} |",
        tar.wall.as_secs_f64(),
        vigil.wall.as_secs_f64(),
        tar.wall.as_secs_f64() / vigil.wall.as_secs_f64(),
        tar.max_rss_kib as f64 / 1024.0,
        vigil.max_rss_kib as f64 / 1024.0,
        load_average(),
    );
}

/// The 1-minute load average, to tell a quiet run from a busy one (the
/// machine is shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
