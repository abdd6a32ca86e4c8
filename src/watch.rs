//! When to reload: file events (notify), a periodic re-check, and manual triggers (SIGHUP).
//!
//! Kubernetes changes mounted Secrets and ConfigMaps without a signal: the kubelet writes the new
//! files into a fresh timestamped directory and swaps the `..data` symlink to it with one rename,
//! and the paths the broker reads (`tls.crt` → `..data/tls.crt`) follow it. So the watcher watches
//! the *directories* that hold each file (as configured, and as resolved through symlinks), not
//! the files: the rename of `..data` is an event in the mount directory. After an event it waits
//! a short debounce for the rest of the burst, then asks [`Reloader::check`], which reloads only
//! when some file's content actually changed.
//!
//! Some filesystems send no events at all (some network and FUSE mounts); the periodic re-check
//! (`[reload] check_interval`, 30 s by default) is the fallback. Manual triggers always reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    // The first round of the loop is a check.
    let _ = events_tx.send(());
    let task = tokio::spawn(run(reloader, watch, events, trigger_rx, stop_rx));
    WatchTask {
        trigger: ReloadTrigger(trigger_tx),
        stop: Some(stop_tx),
        task,
    }
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

async fn run(
    reloader: Arc<Reloader>,
    mut watch: Option<Watch>,
    mut events: mpsc::UnboundedReceiver<()>,
    mut manual: mpsc::UnboundedReceiver<()>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut settings = reloader.settings();
    let mut tick = periodic(settings.check_interval);
    loop {
        if let Some(w) = &mut watch {
            w.sync(dirs_for(&reloader.watched_files()));
        }
        let manual_reload = tokio::select! {
            _ = &mut stop => return,
            m = manual.recv() => match m {
                Some(()) => true,
                None => return,
            },
            Some(()) = events.recv() => {
                // The kubelet writes several files, then swaps one symlink: let the burst end.
                tokio::time::sleep(settings.debounce).await;
                while events.try_recv().is_ok() {}
                false
            }
            _ = tick.tick() => false,
        };
        let r = Arc::clone(&reloader);
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

fn periodic(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
