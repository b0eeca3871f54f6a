//! The page's screen as a stream of JPEG frames, through the DevTools
//! screencast (`Page.startScreencast`), for the console's live view: an
//! operator scans a login QR code from it.
//!
//! It owns one screencast per browser, shared by everyone watching: the
//! first watcher starts it, and it stops (`Page.stopScreencast`) as soon as
//! the last one has gone, or with the browser. Frames come at most every
//! [`FRAME_GAP`]: Chromium sends the next frame only once the previous one
//! is acknowledged, and the acknowledgement waits out the gap. It never
//! changes the page, and a failed frame only ends the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, EventScreencastFrame, ScreencastFrameAckParams, StartScreencastFormat,
    StartScreencastParams, StopScreencastParams,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use tokio::sync::{Mutex, watch};

use super::ExitSignal;
use crate::id::SessionId;

/// At most one frame per this: about 2 frames a second.
pub const FRAME_GAP: Duration = Duration::from_millis(500);
/// JPEG quality: a QR code still reads, a frame stays near 50 KiB.
const QUALITY: i64 = 70;

/// One picture of the page.
#[derive(Debug)]
pub struct Frame {
    /// The JPEG, base64 (as DevTools sends it, and as the API passes it on).
    pub jpeg_base64: String,
}

type Latest = watch::Sender<Option<Arc<Frame>>>;

/// One watcher's view: the newest frame each time the page changes.
/// Dropping it is leaving; the last to leave stops the screencast.
pub struct Screencast {
    frames: watch::Receiver<Option<Arc<Frame>>>,
}

impl Screencast {
    /// The next frame (the current one first); `None` once the screencast
    /// has ended (the browser closed or failed).
    pub async fn next(&mut self) -> Option<Arc<Frame>> {
        loop {
            self.frames.changed().await.ok()?;
            if let Some(frame) = self.frames.borrow_and_update().clone() {
                return Some(frame);
            }
        }
    }
}

/// The browser's screencast, started on demand.
pub(super) struct Screencaster {
    session: SessionId,
    page: chromiumoxide::Page,
    max_size: (u32, u32),
    /// The running screencast's frames, while someone watches.
    live: Mutex<Option<Arc<Latest>>>,
}

impl Screencaster {
    pub fn new(session: SessionId, page: chromiumoxide::Page, max_size: (u32, u32)) -> Arc<Self> {
        Arc::new(Self {
            session,
            page,
            max_size,
            live: Mutex::new(None),
        })
    }

    /// Whether a screencast runs (someone watches).
    pub async fn is_live(&self) -> bool {
        self.live.lock().await.is_some()
    }

    /// Joins the running screencast, or starts it. `gone` ends it with the
    /// browser.
    pub async fn watch(self: &Arc<Self>, gone: ExitSignal) -> Result<Screencast, CdpError> {
        let mut live = self.live.lock().await;
        if let Some(latest) = live.as_ref() {
            let mut frames = latest.subscribe();
            // The newest frame at once: the page may not change for a while.
            frames.mark_changed();
            return Ok(Screencast { frames });
        }
        let events = self.page.event_listener::<EventScreencastFrame>().await?;
        let (width, height) = self.max_size;
        self.page
            .execute(
                StartScreencastParams::builder()
                    .format(StartScreencastFormat::Jpeg)
                    .quality(QUALITY)
                    .max_width(i64::from(width))
                    .max_height(i64::from(height))
                    .build(),
            )
            .await?;
        // A still page sends no screencast frame: the first picture is a
        // screenshot, so the watcher sees the page at once.
        let first = self
            .page
            .screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Jpeg)
                    .quality(QUALITY)
                    .build(),
            )
            .await
            .ok()
            .map(|jpeg| {
                use base64::Engine as _;
                Arc::new(Frame {
                    jpeg_base64: base64::engine::general_purpose::STANDARD.encode(jpeg),
                })
            });
        let (latest, mut frames) = watch::channel(first);
        frames.mark_changed();
        let latest = Arc::new(latest);
        *live = Some(Arc::clone(&latest));
        tracing::debug!(session = %self.session, "screencast started");
        tokio::spawn(Arc::clone(self).pump(latest, events, gone));
        Ok(Screencast { frames })
    }

    /// Passes frames on until nobody watches or the browser is gone.
    async fn pump(
        self: Arc<Self>,
        latest: Arc<Latest>,
        mut events: chromiumoxide::listeners::EventStream<EventScreencastFrame>,
        mut gone: ExitSignal,
    ) {
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    latest.send_replace(Some(Arc::new(Frame {
                        jpeg_base64: AsRef::<str>::as_ref(&event.data).to_owned(),
                    })));
                    let wait = FRAME_GAP.saturating_sub(last_sent.elapsed());
                    tokio::time::sleep(wait).await;
                    last_sent = Instant::now();
                    if self.page.execute(ScreencastFrameAckParams::new(event.session_id)).await.is_err() {
                        break;
                    }
                }
                () = latest.closed() => {
                    let mut live = self.live.lock().await;
                    // Someone came back while the lock was being taken.
                    if latest.receiver_count() > 0 {
                        continue;
                    }
                    *live = None;
                    drop(live);
                    let _ = self.page.execute(StopScreencastParams::default()).await;
                    tracing::debug!(session = %self.session, "screencast stopped: nobody watches");
                    return;
                }
                _ = gone.wait() => break,
            }
        }
        // The browser is gone or failed: watchers see the stream end.
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|l| Arc::ptr_eq(l, &latest)) {
            *live = None;
        }
        tracing::debug!(session = %self.session, "screencast ended with the browser");
    }
}
