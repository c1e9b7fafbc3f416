//! A token bucket for rates (bytes or calls per second) that slows a caller down before it
//! refuses it: shared by the egress gateway (bandwidth) and the server (admission, key-value
//! rates).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `rate` tokens per second, holding at most one second's worth.
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

    /// Takes `n` tokens, or says how long until they are there (then takes nothing). A
    /// request larger than the bucket waits for a full bucket and takes it all.
    pub fn take(&self, n: u64, now: Instant) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, updated) = &mut *state;
        let elapsed = now.saturating_duration_since(*updated).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.rate);
        *updated = now;
        let wanted = (n as f64).min(self.rate);
        if *tokens >= wanted {
            *tokens -= wanted;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((wanted - *tokens) / self.rate))
        }
    }
}

/// Takes `n` tokens, waiting for them when they are due before `deadline`; fails (with the
/// wait it would need) only when waiting would miss the deadline.
pub async fn take_by(
    bucket: &TokenBucket,
    n: u64,
    deadline: tokio::time::Instant,
) -> Result<(), Duration> {
    loop {
        match bucket.take(n, Instant::now()) {
            Ok(()) => return Ok(()),
            Err(wait) if tokio::time::Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await
            }
            Err(wait) => return Err(wait),
        }
    }
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
}
