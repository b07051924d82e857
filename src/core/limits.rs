//! Rate limiting: a token bucket per WebSocket connection and per user.
//!
//! The bucket holds at most `burst` tokens and refills `rate` per second;
//! each publish takes one. Time is passed in (`now_ms`), never read here,
//! so tests drive it exactly. A rate of 0 turns the limit off.
//!
//! Pure: plain data, serializable so it can ride in a socket attachment
//! across hibernation.

use serde::{Deserialize, Serialize};

/// Consecutive refused publishes after which a WebSocket is closed with
/// 1008: a client that keeps sending past its limit is abusive, not bursty.
pub const ABUSE_STRIKES: u32 = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Tokens left, in thousandths (integers survive JSON exactly).
    milli_tokens: u64,
    /// When the bucket was last refilled.
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now_ms: u64) -> Self {
        TokenBucket {
            milli_tokens: u64::from(burst) * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes one token. On refusal returns the seconds until one is back.
    pub fn take(&mut self, rate_per_sec: u32, burst: u32, now_ms: u64) -> Result<(), u32> {
        if rate_per_sec == 0 {
            return Ok(());
        }
        let cap = u64::from(burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        // rate tokens/s = rate milli-tokens/ms.
        let refill = elapsed.saturating_mul(u64::from(rate_per_sec));
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(cap);
        self.last_ms = now_ms.max(self.last_ms);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            Ok(())
        } else {
            let missing = 1000 - self.milli_tokens;
            let wait_ms = missing.div_ceil(u64::from(rate_per_sec));
            Err(wait_ms.div_ceil(1000).max(1) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut b = TokenBucket::full(3, 0);
        assert_eq!(b.take(2, 3, 0), Ok(()));
        assert_eq!(b.take(2, 3, 0), Ok(()));
        assert_eq!(b.take(2, 3, 0), Ok(()));
        assert_eq!(b.take(2, 3, 0), Err(1));
        // 2/s: one token every 500 ms.
        assert_eq!(b.take(2, 3, 499), Err(1));
        assert_eq!(b.take(2, 3, 500), Ok(()));
        assert!(b.take(2, 3, 500).is_err());
        // A long pause refills to the burst, never beyond.
        let taken = (0..10).filter(|_| b.take(2, 3, 60_000).is_ok()).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let mut b = TokenBucket::full(0, 0);
        for _ in 0..1000 {
            assert_eq!(b.take(0, 0, 0), Ok(()));
        }
    }

    #[test]
    fn a_clock_going_backwards_never_adds_tokens() {
        let mut b = TokenBucket::full(1, 10_000);
        assert_eq!(b.take(1, 1, 10_000), Ok(()));
        assert!(b.take(1, 1, 5_000).is_err());
        assert!(b.take(1, 1, 10_500).is_err());
        assert_eq!(b.take(1, 1, 11_000), Ok(()));
    }

    #[test]
    fn survives_a_json_round_trip() {
        let mut b = TokenBucket::full(5, 42);
        b.take(1, 5, 42).unwrap();
        let back: TokenBucket = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}
