//! Presence: who is in a room, tracked by connection.
//!
//! A member joins when their first connection opens and leaves when their
//! last one closes; [`Presence::add`] and [`Presence::remove`] say when that
//! happens, so the room sends exactly one `join` and one `leave`. Both are
//! idempotent per connection id: a close reported twice (the server closed
//! the socket, then the runtime reported the close) changes nothing.
//!
//! Pure: the Durable Object rebuilds it from socket attachments after it
//! wakes from hibernation, then keeps it up to date.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    conns_by_member: BTreeMap<String, BTreeSet<String>>,
    conns: usize,
}

impl Presence {
    /// Records connection `conn` of `member`; `true` when it is their first.
    pub fn add(&mut self, member: &str, conn: &str) -> bool {
        let conns = self.conns_by_member.entry(member.to_owned()).or_default();
        let new_conn = conns.insert(conn.to_owned());
        if new_conn {
            self.conns += 1;
        }
        new_conn && conns.len() == 1
    }

    /// Forgets connection `conn` of `member`; `true` when it was their last.
    pub fn remove(&mut self, member: &str, conn: &str) -> bool {
        let Some(conns) = self.conns_by_member.get_mut(member) else {
            return false;
        };
        if !conns.remove(conn) {
            return false;
        }
        self.conns -= 1;
        if conns.is_empty() {
            self.conns_by_member.remove(member);
            true
        } else {
            false
        }
    }

    /// Live connections of `member`.
    pub fn connections_of(&self, member: &str) -> usize {
        self.conns_by_member.get(member).map_or(0, BTreeSet::len)
    }

    /// All live connections.
    pub fn connections(&self) -> usize {
        self.conns
    }

    /// Members, sorted.
    pub fn members(&self) -> Vec<String> {
        self.conns_by_member.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_on_first_connection_leave_on_last() {
        let mut p = Presence::default();
        assert!(p.add("alice", "c1"));
        assert!(!p.add("alice", "c2"));
        assert!(p.add("bob", "c3"));
        assert_eq!(p.members(), vec!["alice", "bob"]);
        assert_eq!(p.connections(), 3);
        assert!(!p.remove("alice", "c1"));
        assert_eq!(p.connections_of("alice"), 1);
        assert!(p.remove("alice", "c2"));
        assert!(!p.remove("alice", "c2"), "a second leave is never reported");
        assert_eq!(p.members(), vec!["bob"]);
        assert_eq!(p.connections(), 1);
    }

    #[test]
    fn adding_the_same_connection_twice_counts_once() {
        let mut p = Presence::default();
        assert!(p.add("a", "c1"));
        assert!(!p.add("a", "c1"));
        assert_eq!(p.connections(), 1);
        assert!(p.remove("a", "c1"));
        assert_eq!(p.connections(), 0);
    }
}
