//! A small quota for connections whose identity matches no caller entry.
//!
//! Such a connection is still served (WhoAmI shows a misconfigured client who it is, and every
//! other call is refused with `CALLER_NOT_ALLOWED`), but it could otherwise hold one of the
//! `max_connections` slots the broker's callers need. So connections without an entry share a
//! quota of their own ([`unmatched_quota`]): when it is full, the oldest of them is closed to
//! make room for the newest, and the callers with entries keep every other slot.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Context;

use tokio::sync::oneshot;

use super::PeerInfo;

/// The quota for `max_connections`: a sixteenth of it, at least 1 and at most 64.
pub fn unmatched_quota(max_connections: usize) -> usize {
    (max_connections / 16).clamp(1, 64)
}

/// Decides, right after a handshake, whether a connection's identity has a caller entry, and
/// hears about connections without one that were closed to keep within their quota.
pub trait Admission: Send + Sync + 'static {
    /// Whether some caller entry matches the connection's identity. Called once per connection,
    /// on its handshake task; must not block.
    fn has_entry(&self, peer: &PeerInfo) -> bool;

    /// A connection without an entry was closed to make room for a newer one (`quota` of them
    /// may be open).
    fn closed_unmatched(&self, peer: &PeerInfo, quota: usize) {
        let _ = (peer, quota);
    }
}

/// Admits every identity as if it had an entry (servers without a policy).
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn has_entry(&self, _peer: &PeerInfo) -> bool {
        true
    }
}

/// The open connections without an entry, oldest first.
#[derive(Default)]
pub(super) struct Unmatched {
    next: u64,
    open: BTreeMap<u64, (oneshot::Sender<()>, PeerInfo)>,
}

fn lock(m: &Mutex<Unmatched>) -> std::sync::MutexGuard<'_, Unmatched> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a connection without an entry, closing the oldest ones while `quota` are open;
/// returns the new connection's slot and the peers that were closed.
pub(super) fn register(
    registry: &Arc<Mutex<Unmatched>>,
    peer: &PeerInfo,
    quota: usize,
) -> (UnmatchedSlot, Vec<PeerInfo>) {
    let (tx, rx) = oneshot::channel();
    let mut r = lock(registry);
    let mut closed = Vec::new();
    while r.open.len() >= quota.max(1) {
        let Some((_, (close, old))) = r.open.pop_first() else {
            break;
        };
        let _ = close.send(());
        closed.push(old);
    }
    let id = r.next;
    r.next += 1;
    r.open.insert(id, (tx, peer.clone()));
    drop(r);
    (
        UnmatchedSlot {
            registry: Arc::clone(registry),
            id,
            close: rx,
            closed: false,
        },
        closed,
    )
}

/// A connection's place in the quota; it leaves the quota when dropped.
#[derive(Debug)]
pub(super) struct UnmatchedSlot {
    registry: Arc<Mutex<Unmatched>>,
    id: u64,
    close: oneshot::Receiver<()>,
    closed: bool,
}

impl UnmatchedSlot {
    /// True once the connection must close (made room for a newer one), and from then on.
    pub(super) fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && Pin::new(&mut self.close).poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }
}

impl Drop for UnmatchedSlot {
    fn drop(&mut self) {
        lock(&self.registry).open.remove(&self.id);
    }
}

impl std::fmt::Debug for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unmatched")
            .field("open", &self.open.len())
            .finish()
    }
}
