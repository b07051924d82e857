//! A room request, understood once: what the Worker hands the room.
//!
//! The Worker routes the path, checks the method, authenticates the caller
//! and reads the query and the headers the action needs; it then sends the
//! room one [`RoomRequest`] in one internal header ([`ROOM_REQUEST_HEADER`]:
//! JSON in printable ASCII, every other character a `\u` escape, so any
//! `sub` is a valid header value and arrives as sent). The room never
//! parses the path, the query or identity headers again, but for one kind
//! of request: an anonymous caller's poll or publish
//! ([`RoomRequest::travels_as_sent`]) goes to the room as the client sent
//! it, without the header, and the room reads the same description from
//! it ([`RoomRequest::as_sent`]): making a request to carry the header
//! cost the Worker more than the room's reading (issue 19).
//!
//! Invariants:
//! - The Worker writes the header, over anything a client sent under that
//!   name, on every request it does not send as it came; it sends one as
//!   it came only when the client set no such header. A Durable Object is
//!   reachable only through the Worker: a description the room reads was
//!   written by the Worker, and a request without one is a client's
//!   anonymous poll or publish that the Worker checked and let through.
//! - [`RoomRequest::as_sent`] reads the request with the same functions the
//!   Worker describes it with ([`RoomAction::describe`],
//!   [`RoomRequest::new`]), so for a request that travels as sent the
//!   room's description equals the Worker's.
//! - A description names a valid room and carries only parameters that
//!   already passed their checks (bad ones were answered `400` by the
//!   Worker); a header the room cannot read is an internal error.
//!
//! Pure: takes the query pairs and a header lookup.

use super::auth::Identity;
use super::cursor::{parse_seq, sse_cursor, Cursor, Seq};
use super::error::HubError;
use super::names::RoomName;
use super::protocol::idempotency_key;
use super::query::PollQuery;
use super::request_head::RequestHead;
use super::route::{route, Action, Method, Route};
use super::url::UrlParts;
use serde::{Deserialize, Serialize};

/// The internal header that carries a [`RoomRequest`] to the room.
pub const ROOM_REQUEST_HEADER: &str = "X-Hub-Request";

/// One room request, as the room serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRequest {
    pub room: RoomName,
    pub action: RoomAction,
    /// The verified caller (anonymous when the hub runs without a secret).
    pub identity: Identity,
    /// The client's address (`CF-Connecting-IP`), kept for anonymous
    /// callers only: their publish budget is per address.
    pub addr: Option<String>,
    /// The request's `Origin`, for the CORS headers of the answer.
    pub origin: Option<String>,
    /// When the caller's token stops being valid (`exp` plus
    /// `TOKEN_LEEWAY_SECS`, in seconds): a live connection opened with it
    /// ends then. `None` without a token.
    pub expires_s: Option<u64>,
    /// A connect ticket to redeem in place of a token (`?ticket=`): the
    /// room that issued it knows whose it is; `identity` is then unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// What the request asks of the room, with the parameters it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum RoomAction {
    /// `GET /rooms/{room}`.
    ReadState,
    /// `GET /rooms/{room}/messages`.
    Poll {
        query: PollQuery,
        if_none_match: Option<String>,
    },
    /// `POST /rooms/{room}/messages`; the body is the request's.
    Publish {
        idempotency_key: Option<String>,
        /// The body's declared `Content-Length`, already checked against
        /// `MAX_MESSAGE_BYTES` by the Worker: the room then reads the body
        /// in one piece instead of chunk by chunk.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_len: Option<u64>,
    },
    /// `GET /rooms/{room}/ws` with an upgrade.
    OpenSocket { since: Option<Seq> },
    /// `GET /rooms/{room}/events`.
    OpenEvents { cursor: Cursor },
    /// `POST /rooms/{room}/ticket`.
    IssueTicket,
    /// `POST /rooms/{room}/disconnect`: end `user`'s live connections.
    Disconnect { user: String },
    /// `DELETE /rooms/{room}`.
    DeleteRoom,
}

impl RoomAction {
    /// Reads what `action` needs from the query (`pairs`, decoded), the
    /// headers (`header`) and, for a disconnect, the body. Refuses bad
    /// parameters (`400`).
    pub fn describe<'a>(
        action: Action,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        header: impl Fn(&str) -> Option<String>,
        body: Option<&str>,
        long_poll_max_secs: u32,
    ) -> Result<RoomAction, HubError> {
        // A parameter given twice takes its last value.
        let last = |pairs: Vec<(&'a str, &'a str)>, name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
        };
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        Ok(match action {
            Action::ReadState => RoomAction::ReadState,
            Action::Poll => RoomAction::Poll {
                query: PollQuery::parse(pairs, long_poll_max_secs)?,
                if_none_match: header("If-None-Match"),
            },
            Action::Publish => {
                let key = header("Idempotency-Key");
                if let Some(key) = key.as_deref() {
                    idempotency_key("Idempotency-Key", key)?;
                }
                RoomAction::Publish {
                    idempotency_key: key,
                    body_len: header("Content-Length").and_then(|v| v.trim().parse().ok()),
                }
            }
            Action::OpenSocket => RoomAction::OpenSocket {
                since: last(pairs, "since")
                    .map(|v| parse_seq("since", v))
                    .transpose()?,
            },
            Action::OpenEvents => RoomAction::OpenEvents {
                cursor: sse_cursor(last(pairs, "since"), header("Last-Event-ID").as_deref())?,
            },
            Action::IssueTicket => RoomAction::IssueTicket,
            Action::Disconnect => RoomAction::Disconnect {
                user: super::backend::DisconnectBody::parse(body.unwrap_or_default())?.user,
            },
            Action::DeleteRoom => RoomAction::DeleteRoom,
        })
    }

    /// Whether the request opens a live connection (counted against the
    /// connection limits) rather than answering once.
    pub fn opens_connection(&self) -> bool {
        matches!(
            self,
            RoomAction::OpenSocket { .. } | RoomAction::OpenEvents { .. }
        )
    }
}

impl RoomRequest {
    /// The description of a caller's request for `room`: who the caller
    /// is (`identity`, until `expires_s`, or the connect `ticket` it
    /// presented), what it asks (`action`) and, from its headers
    /// (`header`), its `Origin` and, for an anonymous caller only (whose
    /// publish budget is per address), its `CF-Connecting-IP`.
    pub fn new(
        room: RoomName,
        action: RoomAction,
        identity: Identity,
        expires_s: Option<u64>,
        ticket: Option<String>,
        header: impl Fn(&str) -> Option<String>,
    ) -> RoomRequest {
        let addr = match identity {
            Identity::Anonymous => header("CF-Connecting-IP"),
            Identity::User { .. } | Identity::Backend => None,
        };
        RoomRequest {
            room,
            action,
            identity,
            addr,
            origin: header("Origin"),
            expires_s,
            ticket,
        }
    }

    /// Whether the Worker may send the room the client's own request in
    /// place of this description: an anonymous caller's poll or publish,
    /// whose description the room reads from the request itself
    /// ([`RoomRequest::as_sent`]), since nothing in it came from a token,
    /// a ticket or a body the Worker read.
    pub fn travels_as_sent(&self) -> bool {
        matches!(
            self.action,
            RoomAction::Poll { .. } | RoomAction::Publish { .. }
        ) && self.identity == Identity::Anonymous
            && self.expires_s.is_none()
            && self.ticket.is_none()
    }

    /// The description of a request that reached the room as the client
    /// sent it (its `head`, read as the Worker reads it): what the Worker
    /// described it as, by the same functions. Anything but a poll or a
    /// publish never comes this way: it is an internal error.
    pub fn as_sent(head: &RequestHead, long_poll_max_secs: u32) -> Result<RoomRequest, HubError> {
        let parts = UrlParts::split(&head.url);
        let Route { room, endpoint } = route(parts.path)?;
        let action = endpoint.action(Method::parse(&head.method))?;
        if !matches!(action, Action::Poll | Action::Publish) {
            return Err(HubError::Internal(
                "a room request without its description".into(),
            ));
        }
        let header = |name: &str| head.header(name).flatten().map(str::to_owned);
        let pairs = parts.pairs();
        let action = RoomAction::describe(
            action,
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            header,
            None,
            long_poll_max_secs,
        )?;
        Ok(RoomRequest::new(
            room,
            action,
            Identity::Anonymous,
            None,
            None,
            header,
        ))
    }

    /// The value of [`ROOM_REQUEST_HEADER`].
    pub fn to_header(&self) -> String {
        let mut out = Vec::with_capacity(256);
        let mut json = serde_json::Serializer::with_formatter(&mut out, PrintableAscii);
        // Serializing plain data cannot fail; the output is ASCII.
        let _ = self.serialize(&mut json);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Reads [`ROOM_REQUEST_HEADER`] back in the room. A value the Worker
    /// could not have written is an internal error, never a guess.
    pub fn from_header(value: Option<&str>) -> Result<RoomRequest, HubError> {
        value
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| HubError::Internal("unreadable room request header".into()))
    }

    /// The connection key of the caller (see `auth::connection_key`).
    pub fn connection_key(&self) -> Option<String> {
        super::auth::connection_key(&self.identity)
    }

    /// The publish budget key of the caller (see `auth::budget_key`).
    pub fn budget_key(&self) -> Option<String> {
        super::auth::budget_key(&self.identity, self.addr.as_deref())
    }
}

/// Compact JSON whose strings hold printable ASCII only: any other
/// character is written as `\u` escapes (two for one outside the BMP), as
/// JSON allows. serde_json already escapes control characters, `"` and `\`.
struct PrintableAscii;

impl serde_json::ser::Formatter for PrintableAscii {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut plain = 0;
        for (at, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[plain..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            plain = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::query::DEFAULT_POLL_LIMIT;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_description_survives_the_header_byte_for_byte() {
        let subs = [
            "alice",
            "alice ",
            " alice",
            "alice\t",
            " ",
            "ålice ✓",
            "a\"b\\c",
            "del\u{7f} nul\u{0} line\nbreak",
            "astral 🦀 \u{10ffff}",
        ];
        for sub in subs {
            let req = RoomRequest {
                room: RoomName::parse("lobby").unwrap(),
                action: RoomAction::Poll {
                    query: PollQuery::parse([("since", "4"), ("wait", "2")], 30).unwrap(),
                    if_none_match: Some("\"e:4\"".into()),
                },
                identity: Identity::User {
                    sub: sub.into(),
                    can_publish: false,
                },
                addr: None,
                origin: Some("https://app.example".into()),
                expires_s: Some(1_800_000_030),
                ticket: None,
            };
            let header = req.to_header();
            assert!(
                header.bytes().all(|b| (b' '..=b'~').contains(&b)),
                "{header}"
            );
            assert_eq!(RoomRequest::from_header(Some(&header)), Ok(req), "{sub:?}");
        }
    }

    #[test]
    fn a_header_the_worker_could_not_have_written_is_internal() {
        for bad in [None, Some("alice"), Some("e30"), Some("!!"), Some("{}")] {
            let err = RoomRequest::from_header(bad).unwrap_err();
            assert_eq!(err.code(), "internal", "{bad:?}");
        }
        // A room name that does not validate is refused too.
        let forged = r#"{"room":"a/b","action":{"do":"read_state"},"identity":"Anonymous","addr":null,"origin":null}"#;
        assert!(RoomRequest::from_header(Some(forged)).is_err());
    }

    #[test]
    fn each_action_reads_what_it_needs() {
        let headers = |name: &str| match name {
            "If-None-Match" => Some("\"x\"".to_owned()),
            "Idempotency-Key" => Some("k-1".to_owned()),
            "Last-Event-ID" => Some("9".to_owned()),
            "Content-Length" => Some("17".to_owned()),
            _ => None,
        };
        let q = [("since", "3"), ("since", "5"), ("token", "t")];
        assert_eq!(
            RoomAction::describe(Action::OpenSocket, q, headers, None, 30),
            Ok(RoomAction::OpenSocket {
                since: Some(Seq(5))
            })
        );
        assert_eq!(
            RoomAction::describe(Action::OpenEvents, q, headers, None, 30),
            Ok(RoomAction::OpenEvents {
                cursor: Cursor::After(Seq(9))
            })
        );
        assert_eq!(
            RoomAction::describe(Action::Publish, [], headers, None, 30),
            Ok(RoomAction::Publish {
                idempotency_key: Some("k-1".into()),
                body_len: Some(17),
            })
        );
        match RoomAction::describe(Action::Poll, [], headers, None, 30) {
            Ok(RoomAction::Poll {
                query,
                if_none_match,
            }) => {
                assert_eq!(query.limit, DEFAULT_POLL_LIMIT);
                assert_eq!(if_none_match.as_deref(), Some("\"x\""));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            RoomAction::describe(Action::ReadState, q, no_headers, None, 30),
            Ok(RoomAction::ReadState)
        );
    }

    #[test]
    fn bad_parameters_are_refused_before_the_room() {
        type Case = (
            Action,
            &'static [(&'static str, &'static str)],
            &'static str,
        );
        let table: &[Case] = &[
            (Action::OpenSocket, &[("since", "x")], "invalid_param"),
            (Action::OpenEvents, &[("since", "-1")], "invalid_param"),
            (Action::Poll, &[("wait", "31")], "invalid_param"),
            (Action::Poll, &[("limit", "0")], "invalid_param"),
        ];
        for (action, pairs, code) in table {
            let err = RoomAction::describe(*action, pairs.iter().copied(), no_headers, None, 30)
                .unwrap_err();
            assert_eq!(err.code(), *code, "{action:?} {pairs:?}");
        }
        let bad_key = |name: &str| (name == "Idempotency-Key").then(|| "has space".to_owned());
        assert_eq!(
            RoomAction::describe(Action::Publish, [], bad_key, None, 30)
                .unwrap_err()
                .code(),
            "invalid_param"
        );
    }

    /// A head as the JavaScript side packs it: `headers` among
    /// `READ_HEADERS`, the rest absent.
    fn head(method: &str, url: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut packed = format!("{method}\n{url}");
        for name in crate::core::request_head::READ_HEADERS.split('\n') {
            match headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, value)) => packed.push_str(&format!("\n+{value}")),
                None => packed.push_str("\n-"),
            }
        }
        RequestHead::parse(&packed).unwrap()
    }

    #[test]
    fn a_request_sent_as_it_came_reads_as_the_worker_described_it() {
        let poll = head(
            "GET",
            "https://hub.example/rooms/lobby%2Ea/messages?since=4&wait=2&limit=7",
            &[
                ("Origin", "https://app.example"),
                ("If-None-Match", "\"e:4\""),
                ("CF-Connecting-IP", "203.0.113.9"),
            ],
        );
        assert_eq!(
            RoomRequest::as_sent(&poll, 30),
            Ok(RoomRequest {
                room: RoomName::parse("lobby.a").unwrap(),
                action: RoomAction::Poll {
                    query: PollQuery::parse([("since", "4"), ("wait", "2"), ("limit", "7")], 30)
                        .unwrap(),
                    if_none_match: Some("\"e:4\"".into()),
                },
                identity: Identity::Anonymous,
                addr: Some("203.0.113.9".into()),
                origin: Some("https://app.example".into()),
                expires_s: None,
                ticket: None,
            })
        );
        let publish = head(
            "POST",
            "https://hub.example/rooms/lobby/messages",
            &[("Idempotency-Key", "k-1"), ("Content-Length", "17")],
        );
        let described = RoomRequest::as_sent(&publish, 30).unwrap();
        assert_eq!(
            described.action,
            RoomAction::Publish {
                idempotency_key: Some("k-1".into()),
                body_len: Some(17),
            }
        );
        assert_eq!((described.addr, described.origin), (None, None));
        // What the room reads, the Worker would have let travel as sent.
        assert!(RoomRequest::as_sent(&poll, 30).unwrap().travels_as_sent());
    }

    #[test]
    fn only_an_anonymous_poll_or_publish_travels_as_sent() {
        let poll =
            RoomRequest::as_sent(&head("GET", "https://h/rooms/a/messages", &[]), 30).unwrap();
        assert!(poll.travels_as_sent());
        let user = Identity::User {
            sub: "alice".into(),
            can_publish: true,
        };
        let not_sent_as_it_came = [
            RoomRequest {
                identity: user,
                ..poll.clone()
            },
            RoomRequest {
                identity: Identity::Backend,
                ..poll.clone()
            },
            RoomRequest {
                expires_s: Some(1),
                ..poll.clone()
            },
            RoomRequest {
                ticket: Some("t".into()),
                ..poll.clone()
            },
            RoomRequest {
                action: RoomAction::ReadState,
                ..poll.clone()
            },
            RoomRequest {
                action: RoomAction::OpenEvents {
                    cursor: Cursor::Latest,
                },
                ..poll.clone()
            },
        ];
        for request in not_sent_as_it_came {
            assert!(!request.travels_as_sent(), "{request:?}");
        }
    }

    #[test]
    fn a_request_without_a_description_is_a_poll_or_a_publish() {
        for (method, path) in [
            ("GET", "/rooms/a"),
            ("GET", "/rooms/a/events"),
            ("GET", "/rooms/a/ws"),
            ("POST", "/rooms/a/ticket"),
            ("DELETE", "/rooms/a"),
        ] {
            let url = format!("https://h{path}");
            let err = RoomRequest::as_sent(&head(method, &url, &[]), 30).unwrap_err();
            assert_eq!(err.code(), "internal", "{method} {path}");
        }
        // A parameter the Worker would have refused is refused alike.
        let bad = head("GET", "https://h/rooms/a/messages?wait=31", &[]);
        assert_eq!(
            RoomRequest::as_sent(&bad, 30).unwrap_err().code(),
            "invalid_param"
        );
    }
}
