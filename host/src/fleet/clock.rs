//! The clock the fleet measures leases with: this machine's time since
//! boot, suspend included. Never a wall clock, and never another host's.
//!
//! `CLOCK_BOOTTIME` rather than `CLOCK_MONOTONIC` (tokio's `Instant`):
//! the monotonic clock stops while the machine is suspended, so a host
//! waking from a suspend would believe its last renewal recent and drive
//! browsers that another host took over meanwhile. Boot time counts the
//! suspend, so the host finds itself fenced. Neither jumps when the wall
//! clock is set.

use std::sync::Mutex;
use std::time::Duration;

/// Time elapsed since some fixed point of this machine.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// `CLOCK_BOOTTIME`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BootClock;

impl Clock for BootClock {
    fn now(&self) -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }
}

/// A clock moved by hand, for tests of lease decisions.
#[derive(Debug, Default)]
pub struct ManualClock(Mutex<Duration>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().expect("clock lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_moves_forward() {
        let a = BootClock.now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(BootClock.now() >= a + Duration::from_millis(5));
    }
}
