//! Message ids, room epochs and resume cursors.
//!
//! A [`Seq`] is a message id: per room, starting at 1, +1 per accepted
//! message, never reused. A [`Cursor`] is where a client stands: at the
//! start, or after some id. Every transport uses the same cursor, so a
//! client can switch transport and resume.
//!
//! An [`Epoch`] names one life of a room's storage. It is drawn at random
//! when the room's storage is created, so a validator or cursor from a room
//! whose storage was lost can never be mistaken for a current one.
//!
//! Pure: no I/O.

use super::error::HubError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A message id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The id before any message.
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One life of a room's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u32);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Where a client resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cursor {
    /// No cursor given: the transport's default (live only, or the last N for polling).
    Latest,
    /// Every message with an id greater than this one.
    After(Seq),
}

/// The largest id a cursor may name: ids are JSON numbers, and JavaScript
/// clients hold them exactly only up to 2^53 - 1.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// Parses a cursor value (`?since=` or `Last-Event-ID`): a decimal id.
pub fn parse_seq(name: &'static str, raw: &str) -> Result<Seq, HubError> {
    let bad = |reason: &str| HubError::InvalidParam {
        name,
        reason: reason.to_owned(),
    };
    if raw.is_empty() || raw.len() > 16 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected a message id (a non-negative integer)"));
    }
    let n: u64 = raw.parse().map_err(|_| bad("expected a message id"))?;
    if n > MAX_SEQ {
        return Err(bad("message id out of range"));
    }
    Ok(Seq(n))
}

/// The cursor of an SSE request: `?since=` wins over `Last-Event-ID`, because
/// a page that sets `since` explicitly means it; browsers send the header
/// only on their own reconnects, where the query string is unchanged, so
/// the header then carries the newer position. We therefore take the larger
/// of the two when both are present.
pub fn sse_cursor(since: Option<&str>, last_event_id: Option<&str>) -> Result<Cursor, HubError> {
    let since = since.map(|s| parse_seq("since", s)).transpose()?;
    // An empty Last-Event-ID is what a browser sends before it saw any id.
    let header = match last_event_id.map(str::trim) {
        None | Some("") => None,
        Some(h) => Some(parse_seq("Last-Event-ID", h)?),
    };
    Ok(match (since, header) {
        (None, None) => Cursor::Latest,
        (Some(s), None) | (None, Some(s)) => Cursor::After(s),
        (Some(a), Some(b)) => Cursor::After(a.max(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_seq_table() {
        let table: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("42", Some(42)),
            ("007", Some(7)),
            ("9007199254740991", Some(MAX_SEQ)),
            ("9007199254740992", None),
            ("", None),
            ("-1", None),
            ("+1", None),
            ("1.0", None),
            (" 1", None),
            ("1e3", None),
            ("99999999999999999999", None),
        ];
        for (raw, want) in table {
            assert_eq!(parse_seq("since", raw).ok().map(|s| s.0), *want, "{raw:?}");
        }
    }

    #[test]
    fn sse_cursor_prefers_the_newer_position() {
        assert_eq!(sse_cursor(None, None).unwrap(), Cursor::Latest);
        assert_eq!(sse_cursor(None, Some("")).unwrap(), Cursor::Latest);
        assert_eq!(sse_cursor(Some("3"), None).unwrap(), Cursor::After(Seq(3)));
        assert_eq!(sse_cursor(None, Some("9")).unwrap(), Cursor::After(Seq(9)));
        assert_eq!(
            sse_cursor(Some("3"), Some("9")).unwrap(),
            Cursor::After(Seq(9))
        );
        assert!(sse_cursor(None, Some("x")).is_err());
    }

    #[test]
    fn epoch_displays_as_fixed_hex() {
        assert_eq!(Epoch(0xab).to_string(), "000000ab");
    }
}
