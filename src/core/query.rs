//! Query parameters of the polling route.
//!
//! Unknown parameters are ignored (a `token` rides along, for one). A
//! parameter given twice takes its last value, as URLSearchParams.set would.
//!
//! Pure: takes decoded key/value pairs.

use super::cursor::{parse_seq, Cursor};
use super::error::HubError;
use serde::{Deserialize, Serialize};

/// Messages a poll returns when it names no `limit`.
pub const DEFAULT_POLL_LIMIT: u32 = 50;
/// The largest `limit` a poll may ask for.
pub const MAX_POLL_LIMIT: u32 = 1000;

/// `GET /rooms/{room}/messages?since=&limit=&wait=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollQuery {
    pub cursor: Cursor,
    pub limit: u32,
    /// Seconds to hold the request for a new message; 0 answers at once.
    pub wait_secs: u32,
}

impl PollQuery {
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        long_poll_max_secs: u32,
    ) -> Result<Self, HubError> {
        let mut q = PollQuery {
            cursor: Cursor::Latest,
            limit: DEFAULT_POLL_LIMIT,
            wait_secs: 0,
        };
        for (key, value) in pairs {
            match key {
                "since" => q.cursor = Cursor::After(parse_seq("since", value)?),
                "limit" => {
                    q.limit = bounded("limit", value, 1, MAX_POLL_LIMIT)?;
                }
                "wait" => {
                    q.wait_secs = bounded("wait", value, 0, long_poll_max_secs)?;
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

fn bounded(name: &'static str, raw: &str, min: u32, max: u32) -> Result<u32, HubError> {
    let err = || HubError::InvalidParam {
        name,
        reason: format!("expected a whole number in {min}..={max}"),
    };
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u64 = raw.parse().map_err(|_| err())?;
    if n < u64::from(min) || n > u64::from(max) {
        return Err(err());
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cursor::Seq;

    fn parse(pairs: &[(&str, &str)]) -> Result<PollQuery, String> {
        PollQuery::parse(pairs.iter().copied(), 30).map_err(|e| e.to_string())
    }

    #[test]
    fn poll_query_table() {
        let q = parse(&[]).unwrap();
        assert_eq!((q.cursor, q.limit, q.wait_secs), (Cursor::Latest, 50, 0));
        let q = parse(&[
            ("since", "5"),
            ("limit", "1000"),
            ("wait", "30"),
            ("token", "x"),
        ])
        .unwrap();
        assert_eq!(
            (q.cursor, q.limit, q.wait_secs),
            (Cursor::After(Seq(5)), 1000, 30)
        );
        assert_eq!(parse(&[("limit", "1"), ("limit", "2")]).unwrap().limit, 2);
        for bad in [
            ("since", "-1"),
            ("since", ""),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "x"),
            ("wait", "31"),
            ("wait", "-1"),
            ("wait", "99999999999"),
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(parse(&[("wait", "31")]).unwrap_err().contains("0..=30"));
    }
}
