//! The audit sink: a file (or stdout) apart from the diagnostic log, written by one writer with
//! group commit (the `writer` module).
//!
//! Callers serialize their record, hand it to the writer over a bounded channel and, in
//! fail-closed mode, wait for the writer's answer. The writer takes every record queued at that
//! moment, writes them with one `write` (and one `fdatasync` when `sync = true`), then wakes all
//! their callers with the result. Under load one write carries many records, so the cost per
//! record stays small; an idle broker pays one write per record.
//!
//! No trail is written with a blocking call on a runtime worker: a file by a thread of its own,
//! standard output that is a pipe by a task that never blocks (a full pipe makes it wait for room).
//! A write that hangs (an NFS mount, a collector that stopped reading the pipe) stalls only the
//! calls that wait for their records, never probes, cache hits without a trail, WhoAmI or
//! ResolveScopes. The writer notes when a write started, so a hang shows up in
//! [`AuditSink::health`] (and so in `/readyz`) while it lasts.
//!
//! A failed write (disk full, I/O error, closed pipe) fails every record of its batch. The next
//! batch starts with a newline, so a record cut short by the failure stands on a line of its own
//! and readers skip it as unparsable rather than merging it with the next one.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::writer::{self, Job, Output, WriterState, unix_millis};
pub use super::writer::{AuditStats, AuditStatsSnapshot, MAX_BATCH_BYTES};

/// How many records may wait for the writer. Fail-closed callers wait for room (backpressure);
/// best-effort callers count a record that finds no room as failed and go on.
pub const QUEUE_CAPACITY: usize = 16_384;

/// What to do when a record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// Nothing secret leaves before its record is written; a failed write fails the call.
    #[default]
    FailClosed,
    /// Records are queued and the call goes on; failures are counted.
    BestEffort,
}

impl AuditMode {
    /// The configuration name (`fail-closed`, `best-effort`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::FailClosed => "fail-closed",
            AuditMode::BestEffort => "best-effort",
        }
    }
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// No audit trail: development configurations only (benchmarks, quick experiments).
    Off,
    /// The process's standard output (`path = "-"`), for platforms that collect it.
    Stdout,
    /// A file, opened for appending (created with mode 0600).
    File(PathBuf),
}

/// The validated `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Where records go.
    pub target: AuditTarget,
    /// What a failed write does.
    pub mode: AuditMode,
    /// `fdatasync` after each batch: survives a power cut, costs a disk flush per batch.
    pub sync: bool,
    /// Key shared by replicas for stable token fingerprints; `None`: random per process.
    pub hmac_key_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            target: AuditTarget::Stdout,
            mode: AuditMode::FailClosed,
            sync: false,
            hmac_key_file: None,
        }
    }
}

/// Why the audit sink could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    /// The file could not be opened for appending.
    #[error(
        "cannot open the audit trail {path} for writing: {source}; fix the path or its permissions ([audit] path)"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(std::io::Error),
}

/// The record could not be put on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit record could not be written")]
pub struct AuditWriteFailed;

/// Who writes the records.
#[derive(Debug)]
enum Writer {
    /// No trail.
    Off,
    /// The writer (a thread, or a task for a pipe), fed over a bounded queue.
    Queue(mpsc::Sender<Job>),
}

/// The audit sink. Cheap to share (`Arc`); dropping the last handle lets the writer finish the
/// queue and stop.
#[derive(Debug)]
pub struct AuditSink {
    writer: Writer,
    mode: AuditMode,
    stats: Arc<AuditStats>,
    healthy: Arc<AtomicBool>,
    /// When the write in progress started (ms since the Unix epoch), 0 while none is.
    writing_since: Arc<AtomicU64>,
}

/// Longest a single write may take before the trail counts as stalled in [`AuditSink::health`].
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The trail's state, for readiness: what a probe and an operator need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditHealth {
    /// Writes succeed (or there is no trail).
    Ok,
    /// The last write failed (disk full, I/O error, closed pipe) and none has succeeded since.
    Failing,
    /// A write has been in progress for this long, at least [`STALLED_AFTER`]: the file system
    /// or the reader of the pipe is not taking records.
    Stalled(std::time::Duration),
}

impl AuditSink {
    /// Opens the sink; the file is created if needed and appended to. Call inside a tokio
    /// runtime or not. Standard output that is a pipe is written without blocking by a task on
    /// the runtime; everything else by a writer thread of its own, so that a stalled reader or a
    /// slow flush never holds up the runtime.
    pub fn open(cfg: &AuditConfig) -> Result<AuditSink, AuditOpenError> {
        let stats = Arc::new(AuditStats::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let output = match &cfg.target {
            AuditTarget::Off => return Ok(AuditSink::off()),
            AuditTarget::Stdout => Output::Stdout,
            AuditTarget::File(path) => Output::File(open_append(path)?),
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writing_since = Arc::new(AtomicU64::new(0));
        let state = WriterState {
            sync: cfg.sync,
            stats: Arc::clone(&stats),
            healthy: Arc::clone(&healthy),
            writing_since: Arc::clone(&writing_since),
        };
        writer::start(output, rx, state).map_err(AuditOpenError::Thread)?;
        Ok(AuditSink {
            writer: Writer::Queue(tx),
            mode: cfg.mode,
            stats,
            healthy,
            writing_since,
        })
    }

    /// The trail's health now: failing after a failed write, stalled while one write has taken
    /// longer than [`STALLED_AFTER`] (measured on the system clock, which is what the write
    /// itself waits on).
    pub fn health(&self) -> AuditHealth {
        let since = self.writing_since.load(Ordering::Acquire);
        if since != 0 {
            let now = unix_millis();
            let busy = std::time::Duration::from_millis(now.saturating_sub(since));
            if busy >= STALLED_AFTER {
                return AuditHealth::Stalled(busy);
            }
        }
        if self.is_healthy() {
            AuditHealth::Ok
        } else {
            AuditHealth::Failing
        }
    }

    /// A sink that records nothing and always succeeds.
    pub fn off() -> AuditSink {
        AuditSink {
            writer: Writer::Off,
            mode: AuditMode::BestEffort,
            stats: Arc::new(AuditStats::default()),
            healthy: Arc::new(AtomicBool::new(true)),
            writing_since: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether records go anywhere.
    pub fn is_enabled(&self) -> bool {
        !matches!(self.writer, Writer::Off)
    }

    /// The configured mode.
    pub fn mode(&self) -> AuditMode {
        self.mode
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<AuditStats> {
        &self.stats
    }

    /// False after a write failed, until one succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a line. Fail-closed: returns once it is written (or failed). Best-effort: queues
    /// it and returns at once; a failure is only counted.
    pub async fn record(&self, line: Vec<u8>) -> Result<(), AuditWriteFailed> {
        match self.mode {
            AuditMode::FailClosed => self.commit(line).await,
            AuditMode::BestEffort => {
                self.enqueue(line);
                Ok(())
            }
        }
    }

    /// Records a line and waits for the write, whatever the mode.
    pub async fn commit(&self, line: Vec<u8>) -> Result<(), AuditWriteFailed> {
        let tx = match &self.writer {
            Writer::Off => return Ok(()),
            Writer::Queue(tx) => tx,
        };
        let (done, wait) = oneshot::channel();
        let job = Job {
            line,
            done: Some(done),
        };
        if tx.send(job).await.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return Err(AuditWriteFailed);
        }
        match wait.await {
            Ok(true) => Ok(()),
            // The writer counted the failure (or is gone: then nothing was counted, count it).
            Ok(false) => Err(AuditWriteFailed),
            Err(_) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                Err(AuditWriteFailed)
            }
        }
    }

    /// Waits until every record queued before this call has been written (or has failed): call
    /// before the process exits so background records are not lost.
    pub async fn flush(&self) {
        let tx = match &self.writer {
            Writer::Off => return,
            Writer::Queue(tx) => tx,
        };
        let (done, wait) = oneshot::channel();
        if tx
            .send(Job {
                line: Vec::new(),
                done: Some(done),
            })
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Queues a line without waiting (background events: sign-outs). A full queue drops the
    /// record and counts it as failed.
    pub fn enqueue(&self, line: Vec<u8>) {
        let tx = match &self.writer {
            Writer::Off => return,
            Writer::Queue(tx) => tx,
        };
        if tx.try_send(Job { line, done: None }).is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open_append(path: &Path) -> Result<File, AuditOpenError> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(|source| AuditOpenError::Open {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(target: AuditTarget, mode: AuditMode) -> AuditConfig {
        AuditConfig {
            target,
            mode,
            sync: false,
            hmac_key_file: None,
        }
    }

    #[tokio::test]
    async fn concurrent_records_are_written_whole_and_counted() {
        concurrent_records(AuditMode::FailClosed, false, 200).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_over_workers_are_written_whole_and_counted() {
        concurrent_records(AuditMode::FailClosed, false, 2_000).await;
        concurrent_records(AuditMode::FailClosed, true, 200).await;
    }

    async fn concurrent_records(mode: AuditMode, sync: bool, n: u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let sink = AuditSink::open(&AuditConfig {
            sync,
            ..cfg(AuditTarget::File(path.clone()), mode)
        })
        .unwrap();
        let sink = Arc::new(sink);
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let s = Arc::clone(&sink);
                tokio::spawn(async move { s.record(format!("{{\"i\":{i}}}\n").into_bytes()).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        let s = sink.stats().snapshot();
        assert_eq!((s.written, s.failed), (n, 0));
        assert!(s.batches >= 1 && s.batches <= n);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_full_disk_fails_the_record_and_marks_the_sink() {
        let full = cfg(AuditTarget::File("/dev/full".into()), AuditMode::FailClosed);
        let sink = AuditSink::open(&full).unwrap();
        assert!(sink.is_healthy());
        assert_eq!(sink.record(b"{}\n".to_vec()).await, Err(AuditWriteFailed));
        assert!(!sink.is_healthy());
        assert_eq!(sink.stats().snapshot().failed, 1);

        let best = AuditSink::open(&AuditConfig {
            mode: AuditMode::BestEffort,
            ..full
        })
        .unwrap();
        assert_eq!(best.record(b"{}\n".to_vec()).await, Ok(()));
        for _ in 0..500 {
            if best.stats().snapshot().failed == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("best-effort failure never counted");
    }

    #[test]
    fn an_unopenable_path_is_an_error() {
        let e = AuditSink::open(&cfg(
            AuditTarget::File("/nonexistent-dir/a.jsonl".into()),
            AuditMode::FailClosed,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/a.jsonl"), "{e}");
    }
}
