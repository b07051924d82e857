//! Rate limiting: token buckets, and the budgets built from them.
//!
//! A bucket holds at most `burst` tokens and refills `rate` per second;
//! each use takes one. Time is passed in (`now_ms`), never read here, so
//! tests drive it exactly. A rate of 0 turns the limit off.
//!
//! The hub keeps three kinds of budget (see the README's "Limits"):
//! - one **publish budget** per user per room (`RATE_PER_SEC`/`RATE_BURST`),
//!   shared by every socket of that user and by HTTP, so reconnecting does
//!   not refill it; anonymous clients share one per client address;
//! - one **frame budget** per WebSocket ([`frame_budget`]): every client
//!   frame costs a token, whatever it is, so no frame type is free;
//! - one **strike budget** per WebSocket ([`ABUSE_STRIKES`]): invalid frames
//!   and frames over the frame budget are strikes; a socket that runs out
//!   of strikes is abusive and closed with 1008. A publish refused by the
//!   publish budget is *not* a strike: that client is catching up, and it
//!   was told when to retry (`retry_after_ms`).
//!
//! Pure: plain data, serializable so it can ride in a socket attachment
//! across hibernation.

use serde::{Deserialize, Serialize};

/// Bytes of history one WebSocket replay batch holds. A socket that
/// resumes far behind gets one batch, then a `more` frame; the next batch
/// goes out when the client asks for it, so the room never queues more
/// than one batch of history for a socket that does not read.
pub const REPLAY_BATCH_BYTES: usize = 512 * 1024;

/// Fills one bounded batch: admits items while their sizes fit the limit,
/// and always the first one, so every batch makes progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchBudget {
    left: usize,
    admitted: usize,
}

impl BatchBudget {
    pub fn new(limit: usize) -> Self {
        BatchBudget {
            left: limit,
            admitted: 0,
        }
    }

    /// Whether an item of `len` bytes joins the batch (and counts it).
    pub fn admit(&mut self, len: usize) -> bool {
        if self.admitted > 0 && len > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(len);
        self.admitted += 1;
        true
    }
}

/// Strikes a WebSocket may collect at once before it is closed with 1008;
/// they come back at [`STRIKES_PER_SEC`]. A client that sends a few bad
/// frames now and then is buggy, one that sends a stream of them is abusive.
pub const ABUSE_STRIKES: u32 = 20;
/// How fast strikes are forgiven.
pub const STRIKES_PER_SEC: u32 = 1;

/// The smallest per-socket frame rate and burst, so presence requests and
/// publishes at a low `RATE_PER_SEC` never starve each other.
const MIN_FRAME_RATE_PER_SEC: u32 = 50;
const MIN_FRAME_BURST: u32 = 200;

/// A WebSocket's frame budget `(rate, burst)` for a publish budget of
/// `(rate_per_sec, rate_burst)`: twice the publish budget, at least 50/s
/// with a burst of 200, and off when publishing is unlimited. Generous on
/// purpose: a client that re-sends its pending publishes after a reconnect
/// stays within it; a flood does not.
pub fn frame_budget(rate_per_sec: u32, rate_burst: u32) -> (u32, u32) {
    if rate_per_sec == 0 {
        return (0, 0);
    }
    (
        rate_per_sec.saturating_mul(2).max(MIN_FRAME_RATE_PER_SEC),
        rate_burst.saturating_mul(2).max(MIN_FRAME_BURST),
    )
}

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

    /// Takes one token. On refusal returns the milliseconds until one is back.
    pub fn take(&mut self, rate_per_sec: u32, burst: u32, now_ms: u64) -> Result<(), u64> {
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
            Err(missing.div_ceil(u64::from(rate_per_sec)).max(1))
        }
    }

    /// Whether the bucket would be full at `now_ms` (it can be forgotten:
    /// a new full bucket is the same).
    pub fn is_full_at(&self, rate_per_sec: u32, burst: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let refill = elapsed.saturating_mul(u64::from(rate_per_sec));
        rate_per_sec == 0 || self.milli_tokens.saturating_add(refill) >= u64::from(burst) * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_stops_before_the_item_that_would_cross_its_limit() {
        let mut b = BatchBudget::new(100);
        assert!(b.admit(60));
        assert!(b.admit(40), "exactly at the limit still fits");
        assert!(!b.admit(1));
        let mut b = BatchBudget::new(100);
        assert!(b.admit(30));
        assert!(!b.admit(80), "30 + 80 would cross 100");
    }

    #[test]
    fn the_first_item_always_joins_so_every_batch_makes_progress() {
        let mut b = BatchBudget::new(10);
        assert!(b.admit(1_000));
        assert!(!b.admit(1));
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut b = TokenBucket::full(3, 0);
        assert_eq!(b.take(2, 3, 0), Ok(()));
        assert_eq!(b.take(2, 3, 0), Ok(()));
        assert_eq!(b.take(2, 3, 0), Ok(()));
        assert_eq!(b.take(2, 3, 0), Err(500));
        // 2/s: one token every 500 ms.
        assert_eq!(b.take(2, 3, 499), Err(1));
        assert_eq!(b.take(2, 3, 500), Ok(()));
        assert!(b.take(2, 3, 500).is_err());
        // A long pause refills to the burst, never beyond.
        let taken = (0..10).filter(|_| b.take(2, 3, 60_000).is_ok()).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn fullness_and_frame_budgets() {
        let mut b = TokenBucket::full(2, 0);
        assert!(b.is_full_at(1, 2, 0));
        b.take(1, 2, 0).unwrap();
        assert!(!b.is_full_at(1, 2, 999));
        assert!(b.is_full_at(1, 2, 1000));
        assert_eq!(frame_budget(0, 40), (0, 0));
        assert_eq!(frame_budget(20, 40), (50, 200));
        assert_eq!(frame_budget(100, 300), (200, 600));
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
