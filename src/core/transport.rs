//! One interface for every transport's connections.
//!
//! A room serves three transports over one log: WebSocket sessions, SSE
//! streams and held long polls. Each has a hub in `durable/` that owns its
//! connections and implements [`Transport`]; the room then does what
//! concerns every connection as one loop over its hubs: handing a new
//! message to all ([`deliver_all`]), admitting one more connection
//! ([`admit`]), counting them ([`counts`]) and ending those whose token
//! expired or that the backend ends ([`end`]; deadlines at [`next_expiry`]). The decisions live here,
//! tested natively with fake hubs.
//!
//! Invariants:
//! - A message is handed to the hubs in the order of `hubs`, within one
//!   synchronous stretch: no other message can fall between two hubs.
//! - A connection counts toward the limits from the moment its hub holds it
//!   until it is gone, on whichever transport.
//! - A connection opened with a token carries its deadline (`exp` plus
//!   `TOKEN_LEEWAY_SECS`, in seconds) and is ended, with `token_expired`,
//!   once the deadline has passed; one opened without a token never is.
//!
//! Pure: no `worker` types.

use super::cursor::Seq;
use super::error::HubError;
use super::protocol::ConnectionCounts;
use serde::Deserialize;

/// A message of the log as the transports deliver it: its id, its event
/// name (SSE's `event:` line) and its envelope exactly as first stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredMessage {
    #[serde(deserialize_with = "seq_from_i64")]
    pub id: Seq,
    pub event: String,
    #[serde(rename = "body")]
    pub envelope: String,
}

/// Storage hands ids back as signed integers.
fn seq_from_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Seq, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n).map(Seq).map_err(serde::de::Error::custom)
}

/// Which transport a hub serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    Sse,
    Poll,
}

/// What the room needs from each transport's hub.
pub trait Transport {
    fn kind(&self) -> TransportKind;
    /// Open connections.
    fn connections(&self) -> usize;
    /// Open connections of one connection key (`u:<sub>`).
    fn connections_of(&self, key: &str) -> usize;
    /// Hands a newly stored message to every connection that should see it
    /// now (a connection catching up gets it through its replay); says
    /// how many got it (held long polls are counted when they answer).
    fn deliver(&self, message: &StoredMessage) -> Handed;
    /// The earliest token deadline among its connections, in seconds.
    fn next_expiry(&self) -> Option<u64>;
    /// Ends the connections `which` names, each told why
    /// ([`Ending::reason`]); returns how many it ended.
    fn end(&self, which: &Ending<'_>) -> usize;
}

/// What a hub did with one message: how many connections it went to and
/// the bytes of each copy (the frame or event as the transport sends it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handed {
    pub count: usize,
    pub bytes: usize,
}

/// Which connections to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending<'a> {
    /// Those whose token deadline is at or before `now_s`.
    Expired { now_s: u64 },
    /// Those of one connection key (`u:<sub>`): the backend disconnects a user.
    User { key: &'a str },
    /// All of them: the backend deletes the room.
    All,
}

impl Ending<'_> {
    /// Whether a connection of `key` with token deadline `expires_s` ends.
    pub fn ends(&self, key: Option<&str>, expires_s: Option<u64>) -> bool {
        match self {
            Ending::Expired { now_s } => expires_s.is_some_and(|d| d <= *now_s),
            Ending::User { key: user } => key == Some(*user),
            Ending::All => true,
        }
    }

    /// What the ended connections are told.
    pub fn reason(&self) -> HubError {
        match self {
            Ending::Expired { .. } => HubError::TokenExpired,
            Ending::User { .. } => HubError::Disconnected,
            Ending::All => HubError::RoomDeleted,
        }
    }
}

/// Ends the connections `which` names, on every hub; returns how many.
pub fn end(hubs: &[&dyn Transport], which: &Ending<'_>) -> usize {
    hubs.iter().map(|h| h.end(which)).sum()
}

/// The earliest token deadline of any connection, in seconds: when the
/// room must next look (its alarm).
pub fn next_expiry(hubs: &[&dyn Transport]) -> Option<u64> {
    hubs.iter().filter_map(|h| h.next_expiry()).min()
}

/// Hands `message` to every hub, in order; says what each did with it.
pub fn deliver_all(
    hubs: &[&dyn Transport],
    message: &StoredMessage,
) -> Vec<(TransportKind, Handed)> {
    hubs.iter()
        .map(|h| (h.kind(), h.deliver(message)))
        .collect()
}

/// Live connections by transport.
pub fn counts(hubs: &[&dyn Transport]) -> ConnectionCounts {
    let mut counts = ConnectionCounts::default();
    for hub in hubs {
        let n = hub.connections() as u32;
        match hub.kind() {
            TransportKind::WebSocket => counts.ws += n,
            TransportKind::Sse => counts.sse += n,
            TransportKind::Poll => counts.poll += n,
        }
    }
    counts
}

/// Live connections on every transport together.
pub fn live(hubs: &[&dyn Transport]) -> usize {
    hubs.iter().map(|h| h.connections()).sum()
}

/// Whether one more live connection of `key` (`None`: anonymous) may open:
/// `room_full` when the room holds `per_room` connections, across
/// transports; `too_many_connections` when `key` holds `per_user`. A limit
/// of 0 is off; anonymous callers are bounded by the room's limit only.
pub fn admit(
    hubs: &[&dyn Transport],
    key: Option<&str>,
    per_room: u32,
    per_user: u32,
) -> Result<(), HubError> {
    if per_room > 0 && live(hubs) >= per_room as usize {
        return Err(HubError::RoomFull { limit: per_room });
    }
    if let (Some(key), true) = (key, per_user > 0) {
        let held: usize = hubs.iter().map(|h| h.connections_of(key)).sum();
        if held >= per_user as usize {
            return Err(HubError::TooManyConnections { limit: per_user });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A hub with connections of given keys (and token deadlines);
    /// records what it was handed.
    struct Fake {
        kind: TransportKind,
        keys: Vec<&'static str>,
        deadlines: RefCell<Vec<u64>>,
        got: RefCell<Vec<(TransportKind, u64)>>,
    }

    impl Fake {
        fn new(kind: TransportKind, keys: &[&'static str]) -> Self {
            Fake {
                kind,
                keys: keys.to_vec(),
                deadlines: RefCell::new(Vec::new()),
                got: RefCell::new(Vec::new()),
            }
        }
    }

    impl Transport for Fake {
        fn kind(&self) -> TransportKind {
            self.kind
        }
        fn connections(&self) -> usize {
            self.keys.len()
        }
        fn connections_of(&self, key: &str) -> usize {
            self.keys.iter().filter(|k| **k == key).count()
        }
        fn deliver(&self, message: &StoredMessage) -> Handed {
            self.got.borrow_mut().push((self.kind, message.id.0));
            Handed {
                count: self.keys.len(),
                bytes: message.envelope.len(),
            }
        }
        fn next_expiry(&self) -> Option<u64> {
            self.deadlines.borrow().iter().copied().min()
        }
        fn end(&self, which: &Ending<'_>) -> usize {
            let mut deadlines = self.deadlines.borrow_mut();
            let before = deadlines.len();
            deadlines.retain(|d| !which.ends(None, Some(*d)));
            before - deadlines.len()
        }
    }

    fn room() -> [Fake; 3] {
        [
            Fake::new(TransportKind::WebSocket, &["u:a", "u:b", ""]),
            Fake::new(TransportKind::Sse, &["u:a"]),
            Fake::new(TransportKind::Poll, &["u:a", ""]),
        ]
    }

    fn hubs(r: &[Fake; 3]) -> [&dyn Transport; 3] {
        [&r[0], &r[1], &r[2]]
    }

    #[test]
    fn live_is_every_transport_together() {
        let r = room();
        assert_eq!(live(&hubs(&r)), 6);
    }

    #[test]
    fn counts_are_per_transport() {
        let r = room();
        assert_eq!(
            counts(&hubs(&r)),
            ConnectionCounts {
                ws: 3,
                sse: 1,
                poll: 2
            }
        );
    }

    #[test]
    fn a_user_limit_counts_every_transport() {
        let r = room();
        // u:a holds one socket, one stream and one poll.
        assert_eq!(admit(&hubs(&r), Some("u:a"), 0, 4), Ok(()));
        assert_eq!(
            admit(&hubs(&r), Some("u:a"), 0, 3),
            Err(HubError::TooManyConnections { limit: 3 })
        );
        assert_eq!(admit(&hubs(&r), Some("u:b"), 0, 2), Ok(()));
        // Anonymous callers have no per-user count; 0 turns a limit off.
        assert_eq!(admit(&hubs(&r), None, 0, 1), Ok(()));
        assert_eq!(admit(&hubs(&r), Some("u:a"), 0, 0), Ok(()));
    }

    #[test]
    fn a_room_limit_counts_everyone_first() {
        let r = room();
        assert_eq!(admit(&hubs(&r), None, 7, 0), Ok(()));
        assert_eq!(
            admit(&hubs(&r), None, 6, 0),
            Err(HubError::RoomFull { limit: 6 })
        );
        assert_eq!(
            admit(&hubs(&r), Some("u:b"), 6, 10),
            Err(HubError::RoomFull { limit: 6 })
        );
    }

    #[test]
    fn expiry_is_the_earliest_deadline_and_ends_only_what_passed() {
        let r = room();
        assert_eq!(next_expiry(&hubs(&r)), None, "no token, no alarm");
        *r[0].deadlines.borrow_mut() = vec![50, 20];
        *r[1].deadlines.borrow_mut() = vec![30];
        assert_eq!(next_expiry(&hubs(&r)), Some(20));
        assert_eq!(end(&hubs(&r), &Ending::Expired { now_s: 30 }), 2);
        assert_eq!(*r[0].deadlines.borrow(), vec![50]);
        assert!(r[1].deadlines.borrow().is_empty(), "a deadline at now ends");
        assert_eq!(next_expiry(&hubs(&r)), Some(50));
    }

    #[test]
    fn endings_pick_their_connections_and_say_why() {
        let expired = Ending::Expired { now_s: 10 };
        assert!(expired.ends(Some("u:a"), Some(10)));
        assert!(!expired.ends(Some("u:a"), Some(11)));
        assert!(!expired.ends(Some("u:a"), None), "no token, no expiry");
        let user = Ending::User { key: "u:a" };
        assert!(user.ends(Some("u:a"), None));
        assert!(!user.ends(Some("u:b"), None));
        assert!(!user.ends(None, None), "anonymous connections are nobody's");
        assert!(Ending::All.ends(None, None));
        assert_eq!(expired.reason().close_code(), 4001);
        assert_eq!(user.reason().close_code(), 4003);
        assert_eq!(Ending::All.reason().close_code(), 4004);
    }

    #[test]
    fn every_hub_gets_each_message_in_order() {
        let r = room();
        for id in [1, 2] {
            let m = StoredMessage {
                id: Seq(id),
                event: "message".into(),
                envelope: "{}".into(),
            };
            let handed = deliver_all(&hubs(&r), &m);
            let counts: Vec<usize> = handed.iter().map(|(_, h)| h.count).collect();
            assert_eq!(counts, vec![3, 1, 2]);
        }
        for hub in &r {
            let got: Vec<u64> = hub.got.borrow().iter().map(|(_, id)| *id).collect();
            assert_eq!(got, vec![1, 2], "{:?}", hub.kind);
        }
    }
}
