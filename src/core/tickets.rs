//! Connect tickets: short-lived, single-use stand-ins for a token in a URL.
//!
//! Browsers cannot set headers on a WebSocket or an `EventSource`, so a
//! token would travel in `?token=` and end up in consoles and logs. A
//! client instead trades its token (in `Authorization`) for a ticket with
//! `POST /rooms/{room}/ticket`, and opens the connection with `?ticket=`.
//!
//! Invariants:
//! - A ticket is redeemed at most once, in the room that issued it (the
//!   book lives in that room's Durable Object: one instance per room, so
//!   single use needs no shared storage), and not after its lifetime:
//!   at most [`TICKET_LIFETIME_S`], and never past its token's deadline.
//! - A ticket carries exactly the identity and the deadline of the token
//!   it was issued for.
//! - The book is bounded: expired tickets are pruned before each issue, and
//!   at most [`MAX_TICKETS`] (and [`MAX_TICKETS_PER_USER`] per user) are
//!   outstanding; past that, issuing is refused (`429`).
//!
//! Tickets live in memory: one issued just before the room was evicted is
//! gone, and the client asks for another (tickets are used at once).
//!
//! Pure: the caller passes the ticket's random text and the time.

use super::auth::Identity;
use super::error::HubError;
use std::collections::HashMap;

/// The longest a ticket is valid.
pub const TICKET_LIFETIME_S: u64 = 60;
/// Outstanding tickets per room.
pub const MAX_TICKETS: usize = 1024;
/// Outstanding tickets per user per room.
pub const MAX_TICKETS_PER_USER: usize = 16;

/// What a ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub identity: Identity,
    /// The token's deadline (seconds), carried to the connection.
    pub expires_s: Option<u64>,
    /// Until when the ticket itself may be redeemed (milliseconds).
    valid_until_ms: u64,
}

/// The room's outstanding tickets, by their text.
#[derive(Debug, Default)]
pub struct TicketBook {
    tickets: HashMap<String, Ticket>,
}

impl TicketBook {
    /// Issues `text` (random, from the caller) for `identity`; returns the
    /// seconds it is valid for.
    pub fn issue(
        &mut self,
        text: String,
        identity: Identity,
        expires_s: Option<u64>,
        now_ms: u64,
    ) -> Result<u64, HubError> {
        self.tickets.retain(|_, t| t.valid_until_ms > now_ms);
        let full = || HubError::RateLimited {
            retry_after_ms: 5000,
        };
        if self.tickets.len() >= MAX_TICKETS {
            return Err(full());
        }
        let held = self
            .tickets
            .values()
            .filter(|t| t.identity == identity)
            .count();
        if held >= MAX_TICKETS_PER_USER {
            return Err(full());
        }
        let valid_until_ms = expires_s
            .map_or(u64::MAX, |deadline| deadline.saturating_mul(1000))
            .min(now_ms + TICKET_LIFETIME_S * 1000);
        let lifetime_s = valid_until_ms.saturating_sub(now_ms) / 1000;
        if lifetime_s == 0 {
            return Err(HubError::Unauthorized("token expired"));
        }
        self.tickets.insert(
            text,
            Ticket {
                identity,
                expires_s,
                valid_until_ms,
            },
        );
        Ok(lifetime_s)
    }

    /// Takes a ticket out of the book: valid once, within its lifetime.
    pub fn redeem(&mut self, text: &str, now_ms: u64) -> Result<Ticket, HubError> {
        match self.tickets.remove(text) {
            Some(t) if t.valid_until_ms > now_ms => Ok(t),
            _ => Err(HubError::Unauthorized("unknown, used or expired ticket")),
        }
    }

    /// Forgets every outstanding ticket of the user `sub`, whatever its
    /// grants (the backend disconnected that user: no ticket of theirs may
    /// open a connection).
    pub fn revoke_user(&mut self, sub: &str) {
        self.tickets.retain(|_, t| t.identity.user() != Some(sub));
    }

    /// Forgets every outstanding ticket (the room was deleted).
    pub fn clear(&mut self) {
        self.tickets.clear();
    }

    /// Outstanding tickets.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

/// Whether `text` can be a ticket at all (checked before any lookup).
pub fn looks_like_ticket(text: &str) -> bool {
    (16..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::User {
            sub: "alice".into(),
            can_publish: false,
        }
    }

    #[test]
    fn a_ticket_works_once_and_carries_its_token() {
        let mut book = TicketBook::default();
        assert_eq!(
            book.issue("t-1".into(), alice(), Some(1_000), 500_000),
            Ok(60)
        );
        let t = book.redeem("t-1", 500_001).unwrap();
        assert_eq!(t.identity, alice());
        assert_eq!(t.expires_s, Some(1_000));
        assert!(book.redeem("t-1", 500_002).is_err(), "not twice");
        assert!(book.redeem("nope", 500_002).is_err());
    }

    #[test]
    fn a_ticket_lives_sixty_seconds_at_most_and_never_past_its_token() {
        let mut book = TicketBook::default();
        assert_eq!(book.issue("a".into(), alice(), None, 0), Ok(60));
        assert!(book.redeem("a", 60_000).is_err(), "gone at 60 s");
        assert_eq!(book.issue("b".into(), alice(), Some(103), 100_000), Ok(3));
        assert!(book.redeem("b", 103_000).is_err(), "gone with its token");
        // Mid-second: still not a millisecond past the token.
        assert_eq!(book.issue("d".into(), alice(), Some(103), 100_900), Ok(2));
        assert!(book.redeem("d", 103_000).is_err());
        assert_eq!(
            book.issue("c".into(), alice(), Some(100), 100_000),
            Err(HubError::Unauthorized("token expired"))
        );
    }

    #[test]
    fn the_book_is_bounded_and_prunes_expired_tickets() {
        let mut book = TicketBook::default();
        for i in 0..MAX_TICKETS_PER_USER {
            book.issue(format!("a-{i}"), alice(), None, 0).unwrap();
        }
        assert!(matches!(
            book.issue("a-x".into(), alice(), None, 0),
            Err(HubError::RateLimited { .. })
        ));
        // Another user still gets one; expired ones make room.
        book.issue("b".into(), Identity::Anonymous, None, 0)
            .unwrap();
        assert_eq!(book.issue("a-y".into(), alice(), None, 61_000), Ok(60));
        assert_eq!(book.len(), 1, "the expired ones were pruned");
        book.issue("c".into(), Identity::Anonymous, None, 61_000)
            .unwrap();
        book.revoke_user("alice");
        assert_eq!(book.len(), 1, "only alice's are revoked");
        assert!(book.redeem("a-y", 61_001).is_err());
        book.clear();
        assert!(book.is_empty());
    }

    #[test]
    fn ticket_shapes() {
        assert!(looks_like_ticket("AbC-_0123456789xyz"));
        assert!(!looks_like_ticket("short"));
        assert!(!looks_like_ticket(&"a".repeat(65)));
        assert!(!looks_like_ticket("has space 0123456789"));
    }
}
