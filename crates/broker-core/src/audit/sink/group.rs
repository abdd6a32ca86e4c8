//! Group commit led by the waiting calls themselves, for a fail-closed trail in a file written
//! without `sync`.
//!
//! The first call to find no batch open leads one: it gives its worker thread one turn (so that
//! the calls already running add their records to the batch), then writes the whole batch with
//! one `write` and wakes the calls in it. A page-cache write costs a few microseconds; handing
//! every batch to a writer thread and being woken by it cost more than that, in thread switches
//! on the cores the calls need.
//!
//! Batches are written in the order they were closed, one at a time (the file lock is taken
//! before the batch is closed), so a record's batch is on file only after every earlier one.
//! A leader dropped before its turn comes back (its call cancelled) writes its batch as it goes,
//! so the calls waiting on that batch are never left behind.

use std::fs::File;
use std::future::poll_fn;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use super::AuditStats;

/// The sink's side of a group-committed file.
#[derive(Debug)]
pub(super) struct GroupCommit {
    /// The batch records are being added to. Taken after `file`, never before.
    open: Mutex<Open>,
    /// The file, locked by the leader writing a batch.
    file: Mutex<FileOut>,
    stats: Arc<AuditStats>,
    healthy: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Open {
    buf: Vec<u8>,
    records: u64,
    batch: Arc<Batch>,
    /// True while a call has taken on writing this batch.
    led: bool,
}

#[derive(Debug)]
struct FileOut {
    file: File,
    /// The last write failed: the next one starts on a new line (see the sink's module docs).
    after_failure: bool,
}

/// One batch's outcome, and the calls waiting for it.
#[derive(Debug, Default)]
struct Batch(Mutex<BatchState>);

#[derive(Debug, Default)]
struct BatchState {
    written: Option<bool>,
    waiters: Vec<Waker>,
}

/// A poisoned lock only means another thread panicked holding it; the data is still whole
/// (every update under these locks is a single assignment or append).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A batch's first buffer: most batches hold a few records of a few hundred bytes.
const BATCH_CAPACITY: usize = 16 << 10;

impl GroupCommit {
    pub(super) fn new(file: File, stats: Arc<AuditStats>, healthy: Arc<AtomicBool>) -> Self {
        GroupCommit {
            open: Mutex::new(Open {
                buf: Vec::with_capacity(BATCH_CAPACITY),
                records: 0,
                batch: Arc::default(),
                led: false,
            }),
            file: Mutex::new(FileOut {
                file,
                after_failure: false,
            }),
            stats,
            healthy,
        }
    }

    /// Adds `line` to the open batch. Returns the batch, and whether this call leads it.
    fn join(&self, line: &[u8]) -> (Arc<Batch>, bool) {
        let mut open = lock(&self.open);
        open.buf.extend_from_slice(line);
        open.records += u64::from(!line.is_empty());
        let lead = !open.led;
        open.led = true;
        (Arc::clone(&open.batch), lead)
    }

    /// Writes `line` with the calls around it; true once it is on file, false if the write
    /// failed.
    pub(super) async fn commit(&self, line: &[u8]) -> bool {
        let (batch, lead) = self.join(line);
        if !lead {
            return wait(&batch).await;
        }
        let leader = Leader(Some(self));
        tokio::task::yield_now().await;
        leader.write()
    }

    /// Adds `line` without waiting: the batch's leader writes it, or this call does, at once,
    /// when no batch was open.
    pub(super) fn enqueue(&self, line: &[u8]) {
        if self.join(line).1 {
            self.write_open();
        }
    }

    /// Waits until every record added before this call is on file (or has failed).
    pub(super) async fn flush(&self) {
        // An empty record joins the open batch; batches are written in order.
        let _ = self.commit(&[]).await;
    }

    /// Closes the open batch and writes it (the leader's part). True when it was written.
    fn write_open(&self) -> bool {
        let mut out = lock(&self.file);
        let (buf, records, batch) = {
            let mut open = lock(&self.open);
            let buf = std::mem::replace(&mut open.buf, Vec::with_capacity(BATCH_CAPACITY));
            let records = std::mem::take(&mut open.records);
            let batch = std::mem::take(&mut open.batch);
            open.led = false;
            (buf, records, batch)
        };
        let ok = buf.is_empty() || self.write(&mut out, &buf, records);
        drop(out);
        let waiters = {
            let mut state = lock(&batch.0);
            state.written = Some(ok);
            std::mem::take(&mut state.waiters)
        };
        for w in waiters {
            w.wake();
        }
        ok
    }

    fn write(&self, out: &mut FileOut, buf: &[u8], records: u64) -> bool {
        let mut result = Ok(());
        if out.after_failure {
            result = out.file.write_all(b"\n");
        }
        if result.is_ok() {
            result = out.file.write_all(buf);
        }
        let ok = super::settle(result, records, &self.stats, &self.healthy);
        out.after_failure = !ok;
        ok
    }
}

/// Waits for `batch` to be written; true when it was.
async fn wait(batch: &Batch) -> bool {
    poll_fn(|cx| {
        let mut state = lock(&batch.0);
        if let Some(written) = state.written {
            return Poll::Ready(written);
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    })
    .await
}

/// The duty to write the open batch: done by [`Leader::write`], or on drop when the leading
/// call is cancelled during its turn.
struct Leader<'a>(Option<&'a GroupCommit>);

impl Leader<'_> {
    fn write(mut self) -> bool {
        self.0.take().is_some_and(GroupCommit::write_open)
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.write_open();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Context;

    use super::*;

    fn group(path: &std::path::Path) -> GroupCommit {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        GroupCommit::new(
            file,
            Arc::new(AuditStats::default()),
            Arc::new(AtomicBool::new(true)),
        )
    }

    #[test]
    fn a_leader_cancelled_during_its_turn_still_writes_the_batch_others_wait_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let g = group(&path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut cx = Context::from_waker(Waker::noop());
            let mut leader = Box::pin(g.commit(b"1\n"));
            assert!(
                leader.as_mut().poll(&mut cx).is_pending(),
                "the leader yields"
            );
            let mut follower = pin!(g.commit(b"2\n"));
            assert!(follower.as_mut().poll(&mut cx).is_pending());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
            drop(leader);
            assert_eq!(follower.as_mut().poll(&mut cx), Poll::Ready(true));
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        let s = g.stats.snapshot();
        assert_eq!((s.written, s.batches), (2, 1));
    }

    #[tokio::test]
    async fn a_record_enqueued_while_a_batch_is_led_is_written_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let g = group(&path);
        let mut cx = Context::from_waker(Waker::noop());
        let mut leader = pin!(g.commit(b"1\n"));
        assert!(leader.as_mut().poll(&mut cx).is_pending());
        g.enqueue(b"2\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(leader.await);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        // With no batch open, an enqueued record is written at once.
        g.enqueue(b"3\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n3\n");
        g.flush().await;
        assert_eq!(g.stats.snapshot().written, 3);
    }
}
