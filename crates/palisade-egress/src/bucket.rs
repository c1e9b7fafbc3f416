//! A token bucket for rates (bytes or calls per second) that slows a caller down before it
//! refuses it: shared by the egress gateway (bandwidth) and the server (admission, key-value
//! rates).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `rate` tokens per second, accumulating at most one second's worth while idle. Every take
/// is charged in full: an amount larger than the bucket is admitted only after the time it
/// needs at `rate` (the balance goes negative, and later takes wait for the debt too).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` tokens now, or says how long until all `n` are there (then takes nothing).
    pub fn take(&self, n: u64, now: Instant) -> Result<(), Duration> {
        self.reserve(n, now, Duration::ZERO).map(|_| ())
    }

    /// Charges all `n` tokens if they are there within `max_wait` of `now` and returns how long
    /// the caller must wait before going ahead (zero when they are there now); else charges
    /// nothing and returns the wait it would need.
    pub fn reserve(&self, n: u64, now: Instant, max_wait: Duration) -> Result<Duration, Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, updated) = &mut *state;
        let elapsed = now.saturating_duration_since(*updated).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.rate);
        *updated = now;
        let wanted = n as f64;
        let wait = if *tokens >= wanted {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64((wanted - *tokens) / self.rate).unwrap_or(Duration::MAX)
        };
        if wait <= max_wait {
            *tokens -= wanted;
            Ok(wait)
        } else {
            Err(wait)
        }
    }
}

/// Takes `n` tokens, waiting for them when they are due before `deadline`; fails (with the
/// wait it would need, charging nothing) when waiting would miss the deadline.
pub async fn take_by(
    bucket: &TokenBucket,
    n: u64,
    deadline: tokio::time::Instant,
) -> Result<(), Duration> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    // Strictly before the deadline, as before.
    let max_wait = left.saturating_sub(Duration::from_nanos(1));
    let wait = bucket.reserve(n, Instant::now(), max_wait)?;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bucket_slows_a_caller_before_it_fails_it() {
        let bucket = TokenBucket::new(100);
        let now = Instant::now();
        assert!(bucket.take(100, now).is_ok());
        assert!(bucket.take(1, now).is_err());
        let soon = tokio::time::Instant::now() + Duration::from_millis(200);
        assert!(
            take_by(&bucket, 5, soon).await.is_ok(),
            "5 tokens come within 50 ms"
        );
        let now = tokio::time::Instant::now();
        assert!(
            take_by(&bucket, 100, now + Duration::from_millis(10))
                .await
                .is_err()
        );
    }
    #[test]
    fn an_amount_larger_than_the_bucket_is_charged_in_full() {
        let bucket = TokenBucket::new(100);
        let start = Instant::now();
        assert!(bucket.take(100, start).is_ok(), "drain the bucket");
        // 4R from an empty bucket needs 4 s at R.
        let wait = bucket
            .take(400, start)
            .err()
            .unwrap_or_else(|| panic!("400 tokens are not there"));
        assert!(
            (wait.as_secs_f64() - 4.0).abs() < 0.01,
            "waits {wait:?}, not 4 s"
        );
        // A deadline shorter than the wait refuses and charges nothing.
        assert_eq!(
            bucket.reserve(400, start, Duration::from_secs(3)),
            Err(wait)
        );
        let reserved = bucket
            .reserve(400, start, Duration::from_secs(5))
            .unwrap_or_else(|w| panic!("refused with {w:?}"));
        assert!((reserved.as_secs_f64() - 4.0).abs() < 0.01);
        // The debt is real: 4 s later the balance is back at zero, not at a full bucket.
        let later = start + Duration::from_secs(4);
        assert!(bucket.take(1, later).is_err());
        assert!(bucket.take(100, later + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_full_bucket_does_not_admit_more_than_it_holds_at_once() {
        let bucket = TokenBucket::new(256 << 10);
        let now = Instant::now();
        let wait = bucket
            .take(1 << 20, now)
            .err()
            .unwrap_or_else(|| panic!("1 MiB against 256 KiB/s is not admitted at once"));
        assert!((wait.as_secs_f64() - 3.0).abs() < 0.01, "{wait:?}");
        // Refused takes charge nothing: the full bucket is still there.
        assert!(bucket.take(256 << 10, now).is_ok());
    }

    #[tokio::test]
    async fn take_by_refuses_when_the_full_charge_misses_the_deadline() {
        let bucket = TokenBucket::new(100);
        assert!(bucket.take(100, Instant::now()).is_ok());
        let soon = tokio::time::Instant::now() + Duration::from_millis(500);
        let wait = take_by(&bucket, 400, soon)
            .await
            .err()
            .unwrap_or_else(|| panic!("400 tokens at 100/s cannot come within 500 ms"));
        assert!(wait > Duration::from_secs(3), "{wait:?}");
    }
}
