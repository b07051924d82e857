//! Per-delivery accounting: latency into an HDR histogram, and per
//! subscriber completeness, duplicates and out-of-order arrivals.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// What one subscriber saw.
pub struct SubStats {
    pub latency_us: Histogram<u64>,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    seen: Vec<bool>,
    max_seq: Option<u64>,
}

impl SubStats {
    pub fn new(capacity: usize) -> Self {
        SubStats {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            seen: vec![false; capacity],
            max_seq: None,
        }
    }

    /// Records one delivery of `seq`, published at `t_us`, received at `now_us`.
    pub fn record(&mut self, seq: u64, t_us: u64, now_us: u64) {
        let i = seq as usize;
        if i >= self.seen.len() {
            self.seen.resize(i + 1, false);
        }
        if self.seen[i] {
            self.duplicates += 1;
            return;
        }
        self.seen[i] = true;
        self.delivered += 1;
        if self.max_seq.is_some_and(|m| seq < m) {
            self.out_of_order += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        let _ = self.latency_us.record(now_us.saturating_sub(t_us).max(1));
    }
}

/// Everything the subscribers of one run saw.
pub struct Totals {
    pub latency_us: Histogram<u64>,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Totals {
    pub fn merge(all: &[SubStats]) -> Totals {
        let mut latency = Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
        let (mut d, mut dup, mut ooo) = (0, 0, 0);
        for s in all {
            let _ = latency.add(&s.latency_us);
            d += s.delivered;
            dup += s.duplicates;
            ooo += s.out_of_order;
        }
        Totals {
            latency_us: latency,
            delivered: d,
            duplicates: dup,
            out_of_order: ooo,
        }
    }

    pub fn json(&self, expected: u64) -> Value {
        let h = &self.latency_us;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let buckets: Vec<Value> = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
            .iter()
            .map(|q| json!([q, ms(*q)]))
            .collect();
        json!({
            "expected": expected,
            "delivered": self.delivered,
            "completeness": if expected == 0 { 1.0 } else { self.delivered as f64 / expected as f64 },
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "latency_ms": {
                "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
                "max": h.max() as f64 / 1000.0, "mean": h.mean() / 1000.0,
                "quantiles": buckets,
            },
        })
    }
}
