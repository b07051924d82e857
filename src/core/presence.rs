//! Presence: who is in a room, tracked by connection.
//!
//! A member joins when their first connection opens and leaves when their
//! last one closes. Both are idempotent per connection id: a close reported
//! twice (the server closed the socket, then the runtime reported the
//! close) changes nothing.
//!
//! Telling every socket about every join costs one send per socket, so a
//! room filling up with N members would make N²/2 sends. Presence is
//! therefore exact only up to `limit` members (`PRESENCE_MAX_MEMBERS`):
//!
//! - at or below it, every join and leave is announced ([`Announce::Join`],
//!   [`Announce::Leave`]) and lists are complete;
//! - the join that takes the room above it, and the leave that brings it
//!   back to it, are announced as a snapshot ([`Announce::Snapshot`]: the
//!   listed members and the count), so a client that applies snapshots and
//!   deltas always knows whether its list is complete;
//! - above it nothing is announced; lists hold the first `limit` members
//!   (sorted) and the count says how many there are.
//!
//! The decision depends only on the member count before and after, so the
//! Durable Object can rebuild presence from socket attachments after it
//! wakes from hibernation and carry on without losing that state.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

/// What the room tells its other sockets about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// No member came or went, or the room is above the limit.
    Nothing,
    /// A `join` frame for the member.
    Join,
    /// A `leave` frame for the member.
    Leave,
    /// A `presence` frame (listed members and count): the room crossed the
    /// limit, upwards or back.
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    conns_by_member: BTreeMap<String, BTreeSet<String>>,
    conns: usize,
    limit: usize,
}

impl Presence {
    /// An empty room tracking at most `limit` members one by one.
    pub fn new(limit: u32) -> Self {
        Presence {
            conns_by_member: BTreeMap::new(),
            conns: 0,
            limit: limit as usize,
        }
    }

    /// Records connection `conn` of `member`.
    pub fn add(&mut self, member: &str, conn: &str) -> Announce {
        let conns = self.conns_by_member.entry(member.to_owned()).or_default();
        if !conns.insert(conn.to_owned()) {
            return Announce::Nothing;
        }
        self.conns += 1;
        if conns.len() > 1 {
            return Announce::Nothing;
        }
        let after = self.conns_by_member.len();
        if after <= self.limit {
            Announce::Join
        } else if after == self.limit + 1 {
            Announce::Snapshot
        } else {
            Announce::Nothing
        }
    }

    /// Forgets connection `conn` of `member`.
    pub fn remove(&mut self, member: &str, conn: &str) -> Announce {
        let Some(conns) = self.conns_by_member.get_mut(member) else {
            return Announce::Nothing;
        };
        if !conns.remove(conn) {
            return Announce::Nothing;
        }
        self.conns -= 1;
        if !conns.is_empty() {
            return Announce::Nothing;
        }
        self.conns_by_member.remove(member);
        let after = self.conns_by_member.len();
        if after < self.limit {
            Announce::Leave
        } else if after == self.limit {
            Announce::Snapshot
        } else {
            Announce::Nothing
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

    /// How many members the room has.
    pub fn member_count(&self) -> usize {
        self.conns_by_member.len()
    }

    /// Whether `member` has a connection (whatever the limit).
    pub fn has(&self, member: &str) -> bool {
        self.conns_by_member.contains_key(member)
    }

    /// Every member, sorted.
    pub fn members(&self) -> Vec<String> {
        self.conns_by_member.keys().cloned().collect()
    }

    /// The members sockets are told about: all of them up to the limit,
    /// else the first `limit`, sorted.
    pub fn listed(&self) -> Vec<String> {
        self.conns_by_member
            .keys()
            .take(self.limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Announce::*;

    #[test]
    fn join_on_first_connection_leave_on_last() {
        let mut p = Presence::new(100);
        assert_eq!(p.add("alice", "c1"), Join);
        assert_eq!(p.add("alice", "c2"), Nothing);
        assert_eq!(p.add("bob", "c3"), Join);
        assert_eq!(p.members(), vec!["alice", "bob"]);
        assert_eq!(p.connections(), 3);
        assert_eq!(p.remove("alice", "c1"), Nothing);
        assert_eq!(p.connections_of("alice"), 1);
        assert_eq!(p.remove("alice", "c2"), Leave);
        assert_eq!(
            p.remove("alice", "c2"),
            Nothing,
            "a second leave is never reported"
        );
        assert_eq!(p.members(), vec!["bob"]);
        assert_eq!(p.connections(), 1);
    }

    #[test]
    fn adding_the_same_connection_twice_counts_once() {
        let mut p = Presence::new(100);
        assert_eq!(p.add("a", "c1"), Join);
        assert_eq!(p.add("a", "c1"), Nothing);
        assert_eq!(p.connections(), 1);
        assert_eq!(p.remove("a", "c1"), Leave);
        assert_eq!(p.connections(), 0);
    }

    #[test]
    fn above_the_limit_presence_is_a_count_with_snapshots_at_the_crossings() {
        let mut p = Presence::new(2);
        // (change, announce, member count after, listed after)
        let steps: &[(&str, &str, Announce, usize, &[&str])] = &[
            ("add", "b", Join, 1, &["b"]),
            ("add", "d", Join, 2, &["b", "d"]),
            ("add", "a", Snapshot, 3, &["a", "b"]),
            ("add", "c", Nothing, 4, &["a", "b"]),
            ("remove", "a", Nothing, 3, &["b", "c"]),
            ("remove", "c", Snapshot, 2, &["b", "d"]),
            ("remove", "b", Leave, 1, &["d"]),
            ("add", "e", Join, 2, &["d", "e"]),
        ];
        for (i, (change, member, announce, count, listed)) in steps.iter().enumerate() {
            let got = match *change {
                "add" => p.add(member, &format!("conn-{member}")),
                _ => p.remove(member, &format!("conn-{member}")),
            };
            assert_eq!(got, *announce, "step {i}: {change} {member}");
            assert_eq!(p.member_count(), *count, "step {i}");
            assert_eq!(p.listed(), listed.to_vec(), "step {i}");
        }
    }

    #[test]
    fn a_second_connection_of_a_member_never_announces_even_at_the_limit() {
        let mut p = Presence::new(1);
        assert_eq!(p.add("a", "c1"), Join);
        assert_eq!(p.add("a", "c2"), Nothing);
        assert_eq!(p.add("b", "c3"), Snapshot);
        assert_eq!(p.remove("a", "c1"), Nothing);
        assert_eq!(p.remove("a", "c2"), Snapshot);
        assert_eq!(p.remove("b", "c3"), Leave);
    }

    #[test]
    fn limit_zero_keeps_only_counts() {
        let mut p = Presence::new(0);
        assert_eq!(p.add("a", "c1"), Snapshot);
        assert_eq!(p.add("b", "c2"), Nothing);
        assert!(p.listed().is_empty());
        assert_eq!(p.member_count(), 2);
        assert_eq!(p.remove("b", "c2"), Nothing);
        assert_eq!(p.remove("a", "c1"), Snapshot);
    }
}
