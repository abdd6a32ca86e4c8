//! What the broker counts about its sign-ins and sign-outs at Tableau, for metrics.

use super::*;

/// What the broker counts about its sign-ins and sign-outs at Tableau, for metrics: plain
/// numbers, read with [`Self::snapshot`]. Labels are bounded: a configured site name and an
/// outcome from a fixed vocabulary (or Tableau's numeric error code).
#[derive(Debug, Default)]
pub struct SignInStats {
    sign_ins: LabeledCounters<SiteOutcome>,
    latency: LatencyHistogram,
    pub(super) sign_outs: LabeledCounters<&'static str>,
    /// Refresh-ahead sign-ins started by hits near a token's usable end.
    pub(super) refreshes_started: std::sync::atomic::AtomicU64,
    /// Refresh-ahead sign-ins that failed (the current token is served until it ends).
    pub(super) refreshes_failed: std::sync::atomic::AtomicU64,
}

/// A `(site, outcome)` label pair of [`SignInStats`].
pub type SiteOutcome = (Arc<str>, Arc<str>);

/// [`SignInStats`] as plain numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInStatsSnapshot {
    /// `((site, outcome), count)`: outcome is `ok`, Tableau's error code (`401001`),
    /// `unavailable`, `rate_limited` or `internal`.
    pub sign_ins: Vec<(SiteOutcome, u64)>,
    /// How long sign-ins took (JWT minting and the call to Tableau), successful or not.
    pub latency: HistogramSnapshot,
    /// `(outcome, count)`: `ok` or `failed`.
    pub sign_outs: Vec<(&'static str, u64)>,
    /// Refresh-ahead sign-ins started by hits near a token's usable end.
    pub refreshes_started: u64,
    /// Refresh-ahead sign-ins that failed.
    pub refreshes_failed: u64,
}

impl SignInStats {
    /// The counts now.
    pub fn snapshot(&self) -> SignInStatsSnapshot {
        SignInStatsSnapshot {
            sign_ins: self.sign_ins.snapshot(),
            latency: self.latency.snapshot(),
            sign_outs: self.sign_outs.snapshot(),
            refreshes_started: self.refreshes_started.load(Ordering::Relaxed),
            refreshes_failed: self.refreshes_failed.load(Ordering::Relaxed),
        }
    }

    pub(super) fn record(
        &self,
        site: &str,
        result: &Result<Credentials, BrokerError>,
        took: Duration,
    ) {
        self.latency.observe(took);
        let outcome: Arc<str> = match result {
            Ok(_) => Arc::from("ok"),
            Err(e) => Arc::from(sign_in_outcome(e)),
        };
        self.sign_ins.inc((Arc::from(site), outcome));
    }
}

/// The outcome label of a failed sign-in: Tableau's error code when it answered with one (a
/// short number, so the label set stays bounded whatever Tableau sends), else a fixed word.
pub fn sign_in_outcome(e: &BrokerError) -> &str {
    match e {
        BrokerError::Unavailable { .. } => "unavailable",
        BrokerError::RateLimited { .. } => "rate_limited",
        _ => match e.tableau_codes().0 {
            Some(code)
                if (1..=6).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                code
            }
            Some(_) => "rejected",
            None => "internal",
        },
    }
}
