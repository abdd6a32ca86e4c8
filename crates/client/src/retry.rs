//! Retries of broker calls: `UNAVAILABLE` with backoff, `RESOURCE_EXHAUSTED` after `RetryInfo`.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// When the [`Client`](crate::Client) calls again after a failed call.
///
/// - `UNAVAILABLE` (the broker restarting, a connection refused, Tableau unreachable behind the
///   broker) is retried after an exponential backoff with jitter: `initial_backoff`, doubling up to
///   `max_backoff`, each wait drawn between half and all of it. When the status carries a
///   `RetryInfo`, its delay is waited instead.
/// - `RESOURCE_EXHAUSTED` (a rate limit of the broker, or Tableau's 429 behind it) is retried
///   only when the status carries a `google.rpc.RetryInfo` whose delay is at most
///   `max_retry_info_wait`; that delay is waited.
/// - Every other code is returned at once.
///
/// At most `max_attempts` calls are made in all (1 turns retrying off).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Calls in all, the first included.
    pub max_attempts: u32,
    /// The first backoff after `UNAVAILABLE`.
    pub initial_backoff: Duration,
    /// The longest backoff after `UNAVAILABLE`.
    pub max_backoff: Duration,
    /// The longest `RetryInfo` delay worth waiting for; a longer one is returned as the error.
    pub max_retry_info_wait: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, backoff from 100 ms up to 2 s, `RetryInfo` delays up to 30 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retry_info_wait: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: every error is returned as it comes.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Sets the number of calls in all (at least 1).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff range after `UNAVAILABLE`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sets the longest `RetryInfo` delay worth waiting for.
    pub fn with_max_retry_info_wait(mut self, max: Duration) -> Self {
        self.max_retry_info_wait = max;
        self
    }

    /// How long to wait before attempt `attempt + 1` after `status` failed attempt `attempt`
    /// (1-based); `None` when the status is not retried or the attempts are used up.
    pub(crate) fn delay(&self, attempt: u32, status: &Status) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let hint = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        match status.code() {
            Code::Unavailable => Some(hint.unwrap_or_else(|| self.backoff(attempt))),
            Code::ResourceExhausted => hint.filter(|d| *d <= self.max_retry_info_wait),
            _ => None,
        }
    }

    /// The jittered exponential backoff after attempt `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let full = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        full.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// Runs `call` until it succeeds, fails with a status that is not retried, or the attempts
    /// are used up; returns the last status then.
    pub(crate) async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(status) => match self.delay(attempt, &status) {
                    Some(d) => {
                        tracing::debug!(
                            code = ?status.code(),
                            attempt,
                            delay_ms = d.as_millis() as u64,
                            "broker call failed; retrying"
                        );
                        tokio::time::sleep(d).await;
                        attempt += 1;
                    }
                    None => return Err(status),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tonic_types::ErrorDetails;

    fn exhausted(after: Option<Duration>) -> Status {
        let mut d = ErrorDetails::with_error_info(
            "SIGN_IN_RATE_LIMITED",
            "tableau-token-broker",
            HashMap::new(),
        );
        if let Some(a) = after {
            d.set_retry_info(Some(a));
        }
        Status::with_error_details(Code::ResourceExhausted, "slow down", d)
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_is_retried_with_backoff_until_it_answers() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out = RetryPolicy::default()
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(Status::unavailable("restarting"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 2);
        // 50..100 ms, then 100..200 ms, on Tokio's paused clock.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .with_max_attempts(3)
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Status::unavailable("down")) }
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn resource_exhausted_waits_for_its_retry_info() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out = RetryPolicy::default()
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(exhausted(Some(Duration::from_secs(3))))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(out.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn resource_exhausted_without_a_usable_hint_is_returned() {
        for hint in [None, Some(Duration::from_secs(600))] {
            let calls = AtomicU32::new(0);
            let err = RetryPolicy::default()
                .run(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move { Err::<(), _>(exhausted(hint)) }
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted);
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{hint:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn other_codes_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Status::permission_denied("no")) }
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
