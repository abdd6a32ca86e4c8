//! Per-connection activity, so that a connection with no call in progress for `idle_timeout` is
//! closed: a client that connects and then sends nothing (or stops sending) would otherwise hold
//! a file descriptor for ever.
//!
//! [`IdentityLayer`](crate::grpc::IdentityLayer) marks each call active from the moment it reaches the
//! layer until its response body has been sent or dropped (so a long server stream, such as a
//! health `Watch`, keeps its connection). The connection's reader ([`ConnTimer`], polled from the
//! IO's `poll_read`) ends the stream once the connection has been idle long enough, or once it is
//! past its maximum age and no call is in progress; hyper then closes it. HTTP/2 keepalive PINGs
//! are not calls, so they do not keep an idle connection open.
//!
//! Why here and not with tonic's `max_connection_age`: in tonic 0.14 that setting sends no GOAWAY
//! when a grace is set, and without one it polls a finished future on the next event. Closing at
//! the IO level between calls cuts no call in progress; a gRPC client sees the connection end
//! and reconnects (to any replica, which is how clients rebalance) with its current certificate.
//! The one race, a call sent at the instant the connection closes, fails as `UNAVAILABLE`, which
//! gRPC clients retry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Calls in progress on one connection and when the last one ended. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Activity(Arc<ActivityInner>);

#[derive(Default)]
struct ActivityInner {
    active: AtomicUsize,
    /// When the connection last became idle, as nanoseconds after `base`.
    idle_since: AtomicU64,
    base: std::sync::OnceLock<Instant>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("active", &self.0.active.load(Ordering::Relaxed))
            .finish()
    }
}

/// Activity is bookkeeping, not identity: two [`super::PeerInfo`]s compare by who and where.
impl PartialEq for Activity {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Activity {}

impl Activity {
    fn base(&self) -> Instant {
        *self.0.base.get_or_init(Instant::now)
    }

    fn mark_idle_now(&self) {
        let nanos = Instant::now()
            .saturating_duration_since(self.base())
            .as_nanos();
        self.0
            .idle_since
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Marks a call in progress until the guard drops.
    pub fn begin(&self) -> ActiveGuard {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    /// Calls in progress now.
    pub fn active(&self) -> usize {
        self.0.active.load(Ordering::Acquire)
    }

    /// When the connection may be closed if no call starts before then; `None` while a call is
    /// in progress.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.active() > 0 {
            return None;
        }
        let since = self.base() + Duration::from_nanos(self.0.idle_since.load(Ordering::Relaxed));
        Some(since + timeout)
    }
}

/// A call in progress; dropping it ends the call for idle accounting.
#[derive(Debug)]
pub struct ActiveGuard(Activity);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // Mark first, so a reader that sees no call in progress also sees the new idle time.
        self.0.mark_idle_now();
        self.0.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a connection closes: after `idle` without a call in progress, and once it is older than
/// `max_age` (at the first moment no call is in progress, and at `max_age + grace` whatever runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnTimeouts {
    /// Idle time after which the connection closes.
    pub idle: Option<Duration>,
    /// Age after which the connection closes as soon as it is idle.
    pub max_age: Option<Duration>,
    /// Time after `max_age` by which calls still running are cut.
    pub grace: Duration,
}

/// How often a connection past its age checks whether its last call has ended.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// Ends a connection's read side when [`ConnTimeouts`] say so; hyper then closes it.
#[derive(Debug)]
pub struct ConnTimer {
    activity: Activity,
    timeouts: ConnTimeouts,
    opened: Instant,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl ConnTimer {
    /// A timer for a connection that opens, idle, now.
    pub fn new(activity: Activity, timeouts: ConnTimeouts) -> ConnTimer {
        activity.mark_idle_now();
        let opened = Instant::now();
        let mut t = ConnTimer {
            sleep: Box::pin(tokio::time::sleep_until(opened)),
            activity,
            timeouts,
            opened,
            expired: false,
        };
        let next = t
            .next_look(opened)
            .unwrap_or(opened + Duration::from_secs(86_400));
        t.sleep.as_mut().reset(next);
        t
    }

    /// `None` when the connection must close now, else when to look again.
    fn next_look(&self, now: Instant) -> Option<Instant> {
        let mut next = now + Duration::from_secs(86_400);
        let idle = self.timeouts.idle.map(|t| self.activity.idle_deadline(t));
        if let Some(age) = self.timeouts.max_age {
            let aged = self.opened + age;
            let cut = aged + self.timeouts.grace;
            if now >= cut || (now >= aged && self.activity.active() == 0) {
                return None;
            }
            next = next.min(if now >= aged {
                (now + DRAIN_CHECK).min(cut)
            } else {
                aged
            });
        }
        match idle {
            Some(Some(deadline)) if deadline <= now => return None,
            Some(Some(deadline)) => next = next.min(deadline),
            // A call is in progress: look again an idle timeout from now.
            Some(None) => next = next.min(now + self.timeouts.idle.unwrap_or_default()),
            None => {}
        }
        Some(next)
    }

    /// True once the connection must close (and from then on). Registers the task to be woken
    /// when it next needs a look.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            match self.next_look(Instant::now()) {
                None => {
                    self.expired = true;
                    return true;
                }
                Some(at) => self.sleep.as_mut().reset(at),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that carries its call's [`ActiveGuard`] into the response body.
    pub struct ActiveFuture<F> {
        #[pin]
        inner: F,
        guard: Option<ActiveGuard>,
    }
}

impl<F> ActiveFuture<F> {
    /// Wraps `inner`; `guard` moves into the body of its response.
    pub fn new(inner: F, guard: Option<ActiveGuard>) -> Self {
        ActiveFuture { inner, guard }
    }
}

impl<F, B, E> Future for ActiveFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<ActiveBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                let guard = this.guard.take();
                Poll::Ready(r.map(|resp| resp.map(|body| ActiveBody::new(body, guard))))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call active until it has been sent or dropped.
    pub struct ActiveBody<B> {
        #[pin]
        inner: B,
        guard: Option<ActiveGuard>,
    }
}

impl<B> ActiveBody<B> {
    /// `inner`, holding `guard` until it ends.
    pub fn new(inner: B, guard: Option<ActiveGuard>) -> Self {
        ActiveBody { inner, guard }
    }
}

impl<B: Default> Default for ActiveBody<B> {
    fn default() -> Self {
        ActiveBody::new(B::default(), None)
    }
}

impl<B: http_body::Body> http_body::Body for ActiveBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
