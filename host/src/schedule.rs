//! Cron jobs (`tokio-cron-scheduler`, six fields with seconds, UTC): runs
//! backups and retention on the `[backup] schedule`. Owns the scheduler's
//! lifetime and the no-overlap rule; what a run does is the caller's job.
//!
//! Never reaches into sessions or browsers: a backup run gets each
//! session's claimed profile and quiesce hook from the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::archive::Progress;
use crate::backup::CronSchedule;
use crate::backup::{Backups, Quiesce};
use crate::id::SessionId;
use crate::volume::ProfileClaim;

/// The work done at each tick.
pub type Task = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("schedule {name} ({cron:?}): {reason}")]
    Start {
        name: String,
        cron: String,
        reason: String,
    },
}

/// A running schedule. Stop it with [`Schedule::shutdown`], which waits for
/// a run in progress.
pub struct Schedule {
    scheduler: JobScheduler,
    /// Held by a run in progress; `true` once stopped, so that a tick
    /// already dispatched when `shutdown` came does not run after it.
    running: Arc<Mutex<bool>>,
    name: String,
}

impl Schedule {
    /// Runs `task` at every tick of `cron`. A tick that comes while the
    /// previous run is still going is skipped, with a warning: backups never
    /// pile up behind a slow store.
    pub async fn start(name: &str, cron: &CronSchedule, task: Task) -> Result<Self, ScheduleError> {
        let failed = |reason: String| ScheduleError::Start {
            name: name.to_string(),
            cron: cron.as_str().to_string(),
            reason,
        };
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let running = Arc::new(Mutex::new(false));
        let job_running = Arc::clone(&running);
        let job_name = name.to_string();
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let running = Arc::clone(&job_running);
            let task = Arc::clone(&task);
            let name = job_name.clone();
            Box::pin(async move {
                let Ok(_running) = running.try_lock() else {
                    tracing::warn!(
                        schedule = name,
                        "previous run still going; skipping this tick"
                    );
                    return;
                };
                tracing::info!(schedule = name, "scheduled run starts");
                task().await;
            })
        })
        .map_err(|e| failed(e.to_string()))?;
        scheduler
            .add(job)
            .await
            .map_err(|e| failed(e.to_string()))?;
        scheduler.start().await.map_err(|e| failed(e.to_string()))?;
        tracing::info!(schedule = name, cron = cron.as_str(), next = ?cron.next_after(chrono::Utc::now()), "schedule started");
        Ok(Self {
            scheduler,
            running,
            name: name.to_string(),
        })
    }

    /// Stops ticking, then waits for a run in progress to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(schedule = self.name, error = %e, "scheduler did not shut down cleanly");
        }
        *self.running.lock().await = true;
        tracing::info!(schedule = self.name, "schedule stopped");
    }
}

/// A session a scheduled backup covers.
#[derive(Clone)]
pub struct BackupTarget {
    pub session: SessionId,
    pub profile: ProfileClaim,
    pub quiesce: Arc<dyn Quiesce>,
}

/// The scheduled run: back up every target, then apply retention. A failed
/// backup is logged and does not stop the others, nor pruning (which never
/// deletes the newest good backup).
pub fn backup_task(backups: Arc<Backups>, targets: Vec<BackupTarget>) -> Task {
    Arc::new(move || {
        let backups = Arc::clone(&backups);
        let targets = targets.clone();
        Box::pin(async move {
            for t in &targets {
                match backups
                    .backup(
                        &t.session,
                        &t.profile,
                        Arc::clone(&t.quiesce),
                        &Progress::default(),
                    )
                    .await
                {
                    Ok(m) => {
                        tracing::info!(session = %t.session, id = %m.id, "scheduled backup done")
                    }
                    Err(e) => {
                        tracing::error!(session = %t.session, error = %e, "scheduled backup failed")
                    }
                }
            }
            match backups.prune(chrono::Utc::now(), false).await {
                Ok(report) => {
                    let deleted: usize = report.sessions.iter().map(|s| s.deleted.len()).sum();
                    tracing::info!(deleted, "scheduled retention done");
                }
                Err(e) => tracing::error!(error = %e, "scheduled retention failed"),
            }
        })
    })
}
