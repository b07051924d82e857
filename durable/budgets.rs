//! The room's publish budgets: one token bucket per budget key
//! (`RATE_PER_SEC`/`RATE_BURST`), shared by every WebSocket and every HTTP
//! publish of that user, so reconnecting does not refill it.
//!
//! Invariant: at most `PUBLISH_BUDGETS_KEPT` buckets are kept before the
//! full ones are forgotten; a full bucket is the same as a new one, so
//! forgetting it changes nothing.

use crate::core::auth::ANONYMOUS_KEY;
use crate::core::error::HubError;
use crate::core::limits::TokenBucket;
use crate::core::settings::Settings;
use std::cell::RefCell;
use std::collections::HashMap;

const PUBLISH_BUDGETS_KEPT: usize = 4096;

#[derive(Default)]
pub struct PublishBudgets {
    buckets: RefCell<HashMap<String, TokenBucket>>,
}

impl PublishBudgets {
    /// Takes one token from the budget of `key` (a budget key, or `None`
    /// for anonymous callers without an address, who share one).
    pub fn take(
        &self,
        key: Option<&str>,
        settings: &Settings,
        now_ms: u64,
    ) -> Result<(), HubError> {
        let (rate, burst) = (settings.rate_per_sec, settings.rate_burst);
        if rate == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= PUBLISH_BUDGETS_KEPT {
            buckets.retain(|_, b| !b.is_full_at(rate, burst, now_ms));
        }
        buckets
            .entry(key.unwrap_or(ANONYMOUS_KEY).to_owned())
            .or_insert_with(|| TokenBucket::full(burst, now_ms))
            .take(rate, burst, now_ms)
            .map_err(|retry_after_ms| HubError::RateLimited { retry_after_ms })
    }
}
