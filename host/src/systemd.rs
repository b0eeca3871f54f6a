//! Telling systemd how the service is doing (`Type=notify`): READY=1 once
//! every session is past start-up, WATCHDOG=1 while the host is alive,
//! STOPPING=1 when it drains, and a one-line STATUS for `systemctl status`.
//! Speaks the `sd_notify` datagram protocol itself (a few lines over a Unix
//! datagram socket); knows nothing of sessions: the caller says what
//! "ready" and "alive" mean.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every function here does nothing.

use std::future::Future;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the notify socket named by the environment cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={socket:?}: {source}")]
    Socket { socket: String, source: io::Error },
    #[error("WATCHDOG_USEC={value:?} is not a number of microseconds")]
    WatchdogUsec { value: String },
}

/// A connection to systemd's notify socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WATCHDOG_USEC`, when systemd watches this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET` (and
    /// `WATCHDOG_USEC` / `WATCHDOG_PID`), or `None` when not started by
    /// systemd with `Type=notify`.
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let socket = socket.to_string_lossy().into_owned();
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )?;
        Self::connect(&socket, watchdog).map(Some)
    }

    /// A notifier for socket `name`: a path, or `@name` for an abstract
    /// socket (as systemd writes it in `NOTIFY_SOCKET`).
    pub fn connect(name: &str, watchdog: Option<Duration>) -> Result<Self, NotifyError> {
        let failed = |source| NotifyError::Socket {
            socket: name.to_owned(),
            source,
        };
        let addr = socket_addr(name).map_err(failed)?;
        let socket = UnixDatagram::unbound().map_err(failed)?;
        Ok(Self {
            socket,
            addr,
            watchdog,
        })
    }

    /// How often to send WATCHDOG=1, if systemd watches this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`KEY=value` lines). A datagram socket never
    /// blocks for long: systemd's queue is large, and a full one fails fast.
    pub fn notify(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            tracing::warn!(error = %e, message, "cannot notify systemd");
        }
    }

    /// Sends READY=1 when `ready` resolves or after `bound`, whichever
    /// comes first (a session restoring a big backup must not make systemd
    /// give up on the whole host), then WATCHDOG=1 every half watchdog
    /// period while `alive()` is `Ok`, with a fresh STATUS line each time.
    /// Runs until [`Heartbeat::stop`].
    pub fn start<E: std::fmt::Display>(
        self,
        ready: impl Future<Output = ()> + Send + 'static,
        bound: Duration,
        alive: impl Fn() -> Result<(), E> + Send + 'static,
        status: impl Fn() -> String + Send + 'static,
    ) -> Heartbeat {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(bound, ready) => {}
                _ = stopped.wait_for(|s| *s) => return self,
            }
            self.send(&format!("READY=1\nSTATUS={}", status()));
            // Without a watchdog the STATUS line still wants refreshing.
            let period = self.watchdog.unwrap_or(Duration::from_secs(30));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => return self,
                }
                let status = format!("STATUS={}", status());
                if self.watchdog.is_none() {
                    self.send(&status);
                    continue;
                }
                match alive() {
                    Ok(()) => self.send(&format!("WATCHDOG=1\n{status}")),
                    // Silence is the alarm: systemd restarts the host when
                    // the pings stop.
                    Err(why) => tracing::error!(
                        reason = %why,
                        "the host is not healthy; withholding the systemd watchdog ping"
                    ),
                }
            }
        });
        Heartbeat { stop, task }
    }
}

/// The task keeping systemd informed; see [`Notifier::start`].
pub struct Heartbeat {
    stop: watch::Sender<bool>,
    task: JoinHandle<Notifier>,
}

impl Heartbeat {
    /// Ends the pings and tells systemd the service is stopping (so it
    /// waits for `TimeoutStopSec` rather than counting a hang).
    pub async fn stop(self, status: &str) {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(notifier) => notifier.send(&format!("STOPPING=1\nSTATUS={status}")),
            Err(e) => tracing::error!("the systemd notifier task failed: {e}"),
        }
    }
}

/// `@name` is an abstract socket (Linux), anything else a path.
fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes())
    } else {
        SocketAddr::from_pathname(PathBuf::from(name))
    }
}

/// Half of `WATCHDOG_USEC` (systemd's advice: ping at half the timeout),
/// unless `WATCHDOG_PID` names another process (the variables were
/// inherited, not meant for us).
pub fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(own_pid)) {
        return Ok(None);
    }
    let micros: u64 =
        usec.trim()
            .parse()
            .ok()
            .filter(|u| *u > 0)
            .ok_or_else(|| NotifyError::WatchdogUsec {
                value: usec.to_owned(),
            })?;
    Ok(Some(Duration::from_micros(micros / 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_watchdog_period_and_only_for_this_process() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7).unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7).unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("8"), 7).unwrap(),
            None
        );
        assert_eq!(watchdog_interval(None, None, 7).unwrap(), None);
        assert!(watchdog_interval(Some("soon"), None, 7).is_err());
        assert!(watchdog_interval(Some("0"), None, 7).is_err());
    }

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        Notifier::connect(path.to_str().unwrap(), None)
            .unwrap()
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("vigil-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Notifier::connect(&format!("@{name}"), None)
            .unwrap()
            .notify("STOPPING=1")
            .unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[tokio::test]
    async fn ready_once_ready_then_pings_only_while_alive_and_stopping_at_the_end() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = tokio::net::UnixDatagram::bind(&path).unwrap();
        let next = || async {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), receiver.recv(&mut buf))
                .await
                .expect("a message within 5 s")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let notifier =
            Notifier::connect(path.to_str().unwrap(), Some(Duration::from_millis(20))).unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let alive = Arc::new(AtomicBool::new(true));
        let heartbeat = notifier.start(
            async move {
                let _ = ready_rx.await;
            },
            Duration::from_secs(60),
            {
                let alive = Arc::clone(&alive);
                move || {
                    if alive.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err("a session task ended")
                    }
                }
            },
            || "1 session: 1 connected".into(),
        );
        let mut scratch = [0u8; 256];
        // Nothing before the host is ready.
        let early = tokio::time::timeout(Duration::from_millis(100), receiver.recv(&mut scratch));
        assert!(early.await.is_err(), "a message before ready");
        ready_tx.send(()).unwrap();
        assert_eq!(next().await, "READY=1\nSTATUS=1 session: 1 connected");
        assert_eq!(next().await, "WATCHDOG=1\nSTATUS=1 session: 1 connected");
        // A broken host goes silent, so systemd's watchdog fires.
        alive.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        while receiver.try_recv(&mut scratch).is_ok() {}
        let silent = tokio::time::timeout(Duration::from_millis(100), receiver.recv(&mut scratch));
        assert!(silent.await.is_err(), "pinged while not alive");
        heartbeat.stop("draining").await;
        assert_eq!(next().await, "STOPPING=1\nSTATUS=draining");
    }
}
