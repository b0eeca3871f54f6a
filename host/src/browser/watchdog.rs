//! The browser watchdog: a small process beside `vigil run` in a fleet
//! that kills this host's browsers when Vigil stops saying they may run.
//! A paused Vigil (SIGSTOP, a hung runtime) cannot stop its browsers at its
//! fence time, and its Chromium would stay connected while another host
//! takes the session over; the watchdog, a separate process, still can.
//!
//! Vigil writes one line per beat on the watchdog's stdin: the number of
//! milliseconds its browsers may still run if nothing more is confirmed
//! (`0`: fenced, kill now). The watchdog keeps the latest deadline (time of
//! receipt plus that budget, on its own monotonic clock) and, once it has
//! passed, kills every Chromium that Vigil started (children of Vigil
//! carrying Vigil's marker flag) with their process groups. When Vigil
//! ends (stdin closes), it kills them too and exits. Never touches any
//! other process.

use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::procfs;
use crate::id::BROWSER_MARKER;

/// How often the watchdog looks at the deadline.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Shared {
    deadline: Option<Instant>,
    closed: bool,
}

/// Runs the watchdog until stdin closes. Its parent is the Vigil process.
pub fn serve() -> std::io::Result<()> {
    let parent = rustix::process::getppid()
        .map(|p| p.as_raw_nonzero().get() as u32)
        .unwrap_or(0);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                let Ok(ms) = line.trim().parse::<u64>() else {
                    continue;
                };
                let at = Instant::now() + Duration::from_millis(ms);
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                // A beat replaces the deadline: a fenced Vigil says 0.
                s.deadline = Some(at);
            }
            shared.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        })
    };
    loop {
        std::thread::sleep(TICK);
        let (deadline, closed) = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            (s.deadline, s.closed)
        };
        if closed {
            kill_browsers(parent);
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let killed = kill_browsers(parent);
            if killed > 0 {
                eprintln!(
                    "vigil browser watchdog: Vigil stopped confirming that its browsers may run; killed {killed}"
                );
            }
        }
    }
    let _ = reader.join();
    Ok(())
}

/// Kills the Chromium processes `parent` started (its children whose
/// command line carries Vigil's marker), with their process groups.
/// Returns how many.
pub fn kill_browsers(parent: u32) -> usize {
    if parent <= 1 {
        return 0;
    }
    let Ok(processes) = procfs::processes(Path::new("/proc")) else {
        return 0;
    };
    let mut killed = 0;
    for (pid, dir) in processes.flatten() {
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some((ppid, pgrp)) = procfs::parent_and_group(&stat) else {
            continue;
        };
        if ppid != parent {
            continue;
        }
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let marked = cmdline
            .split(|b| *b == 0)
            .any(|a| a.starts_with(BROWSER_MARKER.as_bytes()));
        if !marked {
            continue;
        }
        // SAFETY: kill(2) has no memory effects. The group is the
        // browser's own (it leads it) only when pgrp == pid; never Vigil's.
        unsafe {
            if pgrp == pid as i32 {
                libc::kill(-pgrp, libc::SIGKILL);
            }
            libc::kill(pid as i32, libc::SIGKILL);
        }
        killed += 1;
    }
    killed
}
