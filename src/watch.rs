//! When to reload: file events (notify), a periodic re-check, and manual triggers (SIGHUP).
//!
//! Kubernetes changes mounted Secrets and ConfigMaps without a signal: the kubelet writes the new
//! files into a fresh timestamped directory and swaps the `..data` symlink to it with one rename,
//! and the paths the broker reads (`tls.crt` → `..data/tls.crt`) follow it. So the watcher watches
//! the *directories* that hold each file (as configured, and as resolved through symlinks), not
//! the files: the rename of `..data` is an event in the mount directory. After an event it waits
//! a short debounce for the rest of the burst, then until the content of every watched file has
//! stayed the same for one more debounce interval, then asks [`Reloader::check`], which reloads
//! only when some file's content actually changed. A file written in place with a pause (an
//! editor or script that truncates and rewrites) is thus not read half-written unless the pause
//! is longer than a debounce; files should be replaced atomically (a rename), as editors,
//! `kubectl` and the kubelet do.
//!
//! Some filesystems send no events at all (some network and FUSE mounts); the periodic re-check
//! (`[reload] check_interval`, 30 s by default) is the fallback, and waits for the same stability.
//! Manual triggers always reload.
//!
//! The task must outlive anything a bad value or a bug can do to one round: its arithmetic on
//! configured durations saturates, and a round that panics is logged and the task restarted
//! (after a pause that grows to [`MAX_RESTART_PAUSE`]), so reloads, SIGHUP included, never stop
//! for good.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::reload::Reloader;

/// Asks the watch task to reload now, as SIGHUP does.
#[derive(Debug, Clone)]
pub struct ReloadTrigger(mpsc::UnboundedSender<()>);

impl ReloadTrigger {
    /// Requests a reload; `false` when the watch task has stopped.
    pub fn reload(&self) -> bool {
        self.0.send(()).is_ok()
    }
}

/// The running watch task; dropping it does not stop it, [`WatchTask::stop`] does.
#[derive(Debug)]
pub struct WatchTask {
    trigger: ReloadTrigger,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl WatchTask {
    /// A handle that requests reloads.
    pub fn trigger(&self) -> ReloadTrigger {
        self.trigger.clone()
    }

    /// Stops watching and waits for the task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts watching what `reloader` reads; must be called inside a tokio runtime. The watches are
/// in place when it returns, so no change after that is missed; a change made between loading
/// the configuration and this call is caught by a first check.
pub fn spawn(reloader: Arc<Reloader>) -> WatchTask {
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut watch = Watch::new(events_tx.clone());
    if let Some(w) = &mut watch {
        w.sync(dirs_for(&reloader.watched_files()));
    }
    let mut state = WatchState {
        reloader,
        watch,
        nudge: events_tx,
        events,
        manual: trigger_rx,
        stop: stop_rx,
    };
    let task = tokio::spawn(async move {
        supervise("watch", &mut state, run_round).await;
    });
    WatchTask {
        trigger: ReloadTrigger(trigger_tx),
        stop: Some(stop_tx),
        task,
    }
}

/// The longest pause before a failed background task is started again.
pub const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);

/// The pause before restart number `restarts` (the first run has none): 100 ms, doubling up to
/// [`MAX_RESTART_PAUSE`].
fn restart_pause(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(restarts.saturating_sub(1).min(16)))
        .min(MAX_RESTART_PAUSE)
}

/// Runs `body` (given the pause to wait first) until it returns; when it panics, logs the panic
/// and runs it again, so one failure does not end the task for good. The state lives here, so it
/// survives a panicking round. Returns how many times it restarted.
async fn supervise<S: Send>(
    what: &'static str,
    state: &mut S,
    body: for<'a> fn(&'a mut S, Duration) -> BoxFuture<'a, ()>,
) -> u32 {
    let mut restarts: u32 = 0;
    loop {
        let round = AssertUnwindSafe(body(state, restart_pause(restarts)))
            .catch_unwind()
            .await;
        let Err(panic) = round else {
            return restarts;
        };
        restarts = restarts.saturating_add(1);
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        tracing::error!(target: "reload", task = what, restarts, error = %reason, pause = ?restart_pause(restarts), "a background task failed; restarting it");
    }
}

/// What the watch task keeps across its rounds (and restarts).
struct WatchState {
    reloader: Arc<Reloader>,
    watch: Option<Watch>,
    /// Asks the loop for a check, as a file event does.
    nudge: mpsc::UnboundedSender<()>,
    events: mpsc::UnboundedReceiver<()>,
    manual: mpsc::UnboundedReceiver<()>,
    stop: oneshot::Receiver<()>,
}

fn run_round(state: &mut WatchState, pause: Duration) -> BoxFuture<'_, ()> {
    Box::pin(run(state, pause))
}

/// Whether an event can mean new content. Opening or reading a file is not a change (and the
/// broker's own reads would otherwise wake it up forever).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directories to watch for `files`: each file's folder as written, and the folders met
/// resolving its symlinks (the timestamped folder behind `..data`).
fn dirs_for(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in files {
        if let Some(d) = f.parent() {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            dirs.insert(d.to_path_buf());
        }
        if let Ok(real) = std::fs::canonicalize(f) {
            if let Some(d) = real.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
    }
    dirs
}

struct Watch {
    watcher: notify::RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
}

impl Watch {
    fn new(events: mpsc::UnboundedSender<()>) -> Option<Watch> {
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if is_change(&ev.kind) => {
                let _ = events.send(());
            }
            Ok(_) => {}
            // Lost events (queue overflow) mean a change may have been missed: check.
            Err(_) => {
                let _ = events.send(());
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(Watch {
                watcher,
                dirs: BTreeSet::new(),
            }),
            Err(e) => {
                tracing::warn!(target: "reload", error = %e, "cannot watch files for changes; relying on the periodic re-check");
                None
            }
        }
    }

    /// Watches exactly `wanted`: adds new folders, drops ones no longer needed (or gone, like
    /// an old timestamped folder the kubelet removed).
    fn sync(&mut self, wanted: BTreeSet<PathBuf>) {
        for gone in self.dirs.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut now = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                now.insert(dir);
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    now.insert(dir);
                }
                Err(e) => {
                    tracing::debug!(target: "reload", dir = %dir.display(), error = %e, "cannot watch folder; the periodic re-check covers it")
                }
            }
        }
        self.dirs = now;
    }
}

/// The watch loop, after `pause` (a restart's). Its first round is a check: something may have
/// changed before it started.
async fn run(state: &mut WatchState, pause: Duration) {
    let WatchState {
        reloader,
        watch,
        nudge,
        events,
        manual,
        stop,
    } = state;
    if !pause.is_zero() {
        tokio::select! {
            _ = &mut *stop => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
    let _ = nudge.send(());
    let mut settings = reloader.settings();
    let mut tick = periodic(settings.check_interval);
    loop {
        if let Some(w) = watch.as_mut() {
            w.sync(dirs_for(&reloader.watched_files()));
        }
        let mut manual_reload = tokio::select! {
            _ = &mut *stop => return,
            m = manual.recv() => match m {
                Some(()) => true,
                None => return,
            },
            Some(()) = events.recv() => false,
            _ = tick.tick() => false,
        };
        if !manual_reload {
            // The kubelet writes several files, then swaps one symlink; an in-place write may
            // pause: wait until the content has been still for a whole debounce interval.
            // Files that never stop changing must not hold up SIGHUP.
            tokio::select! {
                _ = &mut *stop => return,
                () = settle(reloader, settings.debounce) => {}
                m = manual.recv() => match m {
                    Some(()) => manual_reload = true,
                    None => return,
                },
            }
            while events.try_recv().is_ok() {}
        }
        let r = Arc::clone(reloader);
        let outcome = tokio::task::spawn_blocking(move || {
            if manual_reload {
                Some(r.reload("manual (SIGHUP)"))
            } else {
                r.check("file change")
            }
        })
        .await;
        if let Err(e) = outcome {
            tracing::error!(target: "reload", error = %e, "the reload task failed");
        }
        let now = reloader.settings();
        if now.check_interval != settings.check_interval {
            tick = periodic(now.check_interval);
        }
        settings = now;
    }
}

/// Returns once the digest of every watched file is the same at both ends of one `debounce`
/// interval (the first taken a debounce after the event that woke the loop).
async fn settle(reloader: &Arc<Reloader>, debounce: Duration) {
    let digest = || {
        let r = Arc::clone(reloader);
        async move { tokio::task::spawn_blocking(move || r.digest()).await.ok() }
    };
    tokio::time::sleep(debounce).await;
    let mut last = digest().await;
    loop {
        tokio::time::sleep(debounce).await;
        let now = digest().await;
        if now == last {
            return;
        }
        tracing::debug!(target: "reload", "watched files still changing; waiting for them to settle");
        last = now;
    }
}

/// The longest period the periodic re-check runs at: a larger configured value (a typo of a
/// unit) means "practically never", not an overflow.
const LONGEST_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn periodic(every: Duration) -> tokio::time::Interval {
    let every = every.clamp(Duration::from_millis(1), LONGEST_PERIOD);
    let now = tokio::time::Instant::now();
    let start = now
        .checked_add(every)
        .unwrap_or_else(|| now + Duration::from_secs(86_400));
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn a_huge_or_zero_period_does_not_panic() {
        for every in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 2),
            Duration::ZERO,
        ] {
            let mut tick = periodic(every);
            assert!(
                tokio::time::timeout(Duration::from_millis(20), tick.tick())
                    .await
                    .is_err()
                    || every.is_zero()
            );
        }
    }

    #[test]
    fn restart_pauses_grow_and_stop_growing() {
        assert_eq!(restart_pause(0), Duration::ZERO);
        assert_eq!(restart_pause(1), Duration::from_millis(100));
        assert_eq!(restart_pause(2), Duration::from_millis(200));
        assert_eq!(restart_pause(u32::MAX), MAX_RESTART_PAUSE);
    }

    fn flaky(runs: &mut u32, _pause: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *runs += 1;
            if *runs < 3 {
                panic!("round {runs} failed");
            }
        })
    }

    #[tokio::test]
    async fn a_panicking_round_is_restarted_with_its_state() {
        let mut runs = 0u32;
        let restarts = supervise("test", &mut runs, flaky).await;
        assert_eq!((runs, restarts), (3, 2));
    }
}
