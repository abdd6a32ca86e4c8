//! The problems and warnings collected while a configuration is validated, and the
//! bounded-value readers that report into them.

use super::*;

/// Collects issues while validating.
/// Problems (`.0`, which refuse the file) and warnings (`.1`, which do not).
pub(super) struct Issues(pub(super) Vec<Issue>, pub(super) Vec<Issue>);

impl Issues {
    pub(super) fn warn(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.1.push(Issue {
            at: at.into(),
            message: message.into(),
        });
    }

    pub(super) fn add(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            at: at.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, at: &str, v: Option<&str>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => {
                match humantime::parse_duration(s.trim()) {
                    Ok(d) => bounds::check(at, d).unwrap_or_else(|m| {
                        self.add(at, m);
                        default
                    }),
                    Err(e) => {
                        self.add(at, format!("{s:?} is not a duration ({e}); write e.g. \"5m\", \"240m\", \"30s\""));
                        default
                    }
                }
            }
        }
    }
}

impl Issues {
    /// A positive count that fits `usize`; 0 is refused with `why`.
    pub(super) fn count(&mut self, at: &str, v: Option<u64>, default: usize, why: &str) -> usize {
        match v {
            None => default,
            Some(0) => {
                self.add(at, format!("0: {why}; use at least 1"));
                default
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    /// A duration that must not be zero.
    pub(super) fn positive(&mut self, at: &str, v: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(at, v, default);
        if d.is_zero() {
            self.add(at, "must be more than zero");
            return default;
        }
        d
    }

    /// `sign_ins_per_second` and `sign_in_burst` under `at`, each falling back to `default`.
    pub(super) fn rate(
        &mut self,
        at: &str,
        per_second: Option<f64>,
        burst: Option<u64>,
        default: SignInRate,
    ) -> SignInRate {
        let per_second = match per_second {
            None => default.per_second,
            Some(r) if r.is_finite() && r > 0.0 && r <= bounds::MAX_SIGN_INS_PER_SECOND => r,
            Some(r) => {
                self.add(
                    format!("{at}.sign_ins_per_second"),
                    format!("{r} is not a rate in (0, 1000000]; e.g. 10, or 0.5 for one every 2s"),
                );
                default.per_second
            }
        };
        let burst = match burst {
            None => default.burst,
            Some(b) if (1..=bounds::MAX_SIGN_IN_BURST).contains(&b) => {
                u32::try_from(b).unwrap_or(u32::MAX)
            }
            Some(b) => {
                self.add(
                    format!("{at}.sign_in_burst"),
                    format!(
                        "{b} is not in [1, 1000000]; it is how many sign-ins may run back to back"
                    ),
                );
                default.burst
            }
        };
        SignInRate { per_second, burst }
    }
}
