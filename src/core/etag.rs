//! ETags for polling, and `If-None-Match` evaluation.
//!
//! A room's ETag is `"<epoch>-<last id>"`: it changes with every accepted
//! message and with every new life of the room's storage, and with nothing
//! else, so a poller that already holds the current state gets a `304`.
//! The ETag names the room's state, not one query's body (docs/PROTOCOL.md,
//! "Polling": an opaque validator of the room's state).
//!
//! Evaluation follows RFC 9110 §13.1.2: `*` matches any current
//! representation, lists are comma-separated, and comparison is weak
//! (`W/"x"` matches `"x"`). A malformed header matches nothing, so the
//! client gets a full `200`, never a wrong `304`.
//!
//! Pure: no I/O, and [`if_none_match`] does not allocate, so the 304 path
//! costs a string scan.

use super::cursor::{Epoch, Seq};

/// The strong ETag of a room state, quotes included.
pub fn etag_for(epoch: Epoch, last: Seq) -> String {
    format!("\"{epoch}-{last}\"")
}

/// Whether an `If-None-Match` header value matches `current` (an ETag with
/// its quotes, as produced by [`etag_for`]).
pub fn if_none_match(header: &str, current: &str) -> bool {
    let current = current.strip_prefix("W/").unwrap_or(current);
    let mut rest = header.trim_matches(|c: char| c == ' ' || c == '\t');
    if rest == "*" {
        return true;
    }
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let tag_start = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(after_quote) = tag_start.strip_prefix('"') else {
            return false; // malformed: not an entity-tag
        };
        let Some(close) = after_quote.find('"') else {
            return false; // unterminated
        };
        let tag = &tag_start[..close + 2];
        if tag == current {
            return true;
        }
        rest = &after_quote[close + 1..];
        let next = rest.trim_start_matches([' ', '\t']);
        if !next.is_empty() && !next.starts_with(',') {
            return false; // garbage after a tag
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_shape() {
        assert_eq!(etag_for(Epoch(0x1f), Seq(42)), "\"0000001f-42\"");
    }

    #[test]
    fn if_none_match_table() {
        let cur = "\"0000001f-42\"";
        let table: &[(&str, bool)] = &[
            ("\"0000001f-42\"", true),
            ("W/\"0000001f-42\"", true),
            ("*", true),
            (" * ", true),
            ("\"a\", \"0000001f-42\"", true),
            ("\"a\",W/\"0000001f-42\" , \"b\"", true),
            (",,\"0000001f-42\"", true),
            ("\"0000001f-41\"", false),
            ("\"0000001e-42\"", false),
            ("0000001f-42", false),
            ("\"0000001f-42", false),
            ("", false),
            ("\"a\" junk, \"0000001f-42\"", false),
            ("w/\"0000001f-42\"", false),
            ("**", false),
        ];
        for (header, want) in table {
            assert_eq!(if_none_match(header, cur), *want, "{header:?}");
        }
    }

    #[test]
    fn a_new_epoch_never_matches_an_old_etag() {
        let old = etag_for(Epoch(1), Seq(5));
        let new = etag_for(Epoch(2), Seq(5));
        assert!(!if_none_match(&old, &new));
    }
}
