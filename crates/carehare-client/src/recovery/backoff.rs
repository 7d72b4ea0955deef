//! How long to wait between reconnect attempts. A dozen lines, so no
//! crate: exponential growth, a cap, jitter, and a reset once a connection
//! has stayed up for a while.

use std::time::Duration;

/// Exponential backoff with jitter and a cap, for reconnecting.
///
/// Attempt `n` (from 0) waits `initial × 2ⁿ`, capped at `max`, then
/// scaled by a random factor in `[1 − jitter, 1]` so that many clients
/// cut off at once don't all come back in the same instant. A connection
/// that stays up for `reset_after` starts the next outage from `initial`
/// again.
///
/// The defaults (50 ms doubling to 800 ms, jitter 0.5) retry a node that
/// is back within a second, and spread a crowd of clients over that
/// second.
///
/// ```
/// use std::time::Duration;
/// let backoff = carehare_client::Backoff::default();
/// assert!(backoff.delay(0, 1.0) <= Duration::from_millis(50));
/// assert_eq!(backoff.delay(30, 0.0), Duration::from_millis(800));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How much of each wait is random: 0 none, 1 anything from 0 to the
    /// full wait.
    pub jitter: f64,
    /// A connection that lived this long resets the growth.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(800),
            jitter: 0.5,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry `attempt` (0 for the first retry), with
    /// `random` in `[0, 1]` choosing where in the jitter range it falls.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let grown = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        grown.mul_f64(1.0 - jitter)
    }
}
