//! WebSocket sessions: per-socket state, client frames, server frames and
//! the decisions a room makes about each frame.
//!
//! Invariants:
//! - [`SocketMeta`] is everything a socket must remember across hibernation;
//!   it is serialized into the socket's attachment (≤ 2 KB) after every
//!   change, so a room that wakes knows every socket's identity and budget.
//! - A frame never crashes a session: bad input yields an `error` frame and
//!   the socket stays open, except a frame over `MAX_MESSAGE_BYTES` (1009)
//!   and persistent abuse (1008).
//! - `from` comes from [`SocketMeta::user`], set by the server at upgrade.
//! - The broadcast frame of a message is built once from the stored
//!   envelope ([`message_frame`]) and sent unchanged to every socket.
//!
//! Pure: no `worker` types, clock or I/O; `durable/sockets.rs` carries the
//! decisions out.

use super::cursor::Seq;
use super::error::HubError;
use super::limits::{TokenBucket, ABUSE_STRIKES};
use super::names::EventName;
use super::protocol::{idempotency_key, Publish, ResetInfo};
use super::settings::Settings;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a socket carries across hibernation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketMeta {
    /// Connection id, unique within the room.
    pub conn: String,
    /// The verified user (`sub`), `None` when anonymous.
    pub user: Option<String>,
    /// Whether the token grants `publish`.
    pub can_publish: bool,
    pub bucket: TokenBucket,
    /// Consecutive publishes refused for rate; reset by an accepted one.
    pub strikes: u32,
}

impl SocketMeta {
    pub fn new(
        conn: String,
        user: Option<String>,
        can_publish: bool,
        settings: &Settings,
        now_ms: u64,
    ) -> Self {
        SocketMeta {
            conn,
            user,
            can_publish,
            bucket: TokenBucket::full(settings.rate_burst, now_ms),
            strikes: 0,
        }
    }

    /// The name this socket has in presence: its user, or `anon:<conn>`
    /// for an anonymous socket, so open rooms still show who is there.
    pub fn presence_name(&self) -> String {
        match &self.user {
            Some(u) => u.clone(),
            None => format!("anon:{}", self.conn),
        }
    }
}

/// A frame from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Publish {
        publish: Publish,
        cid: Option<String>,
    },
    Presence,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawClientMsg {
    Publish {
        event: Option<String>,
        data: Value,
        cid: Option<String>,
    },
    Presence {},
}

impl ClientMsg {
    pub fn parse(text: &str) -> Result<ClientMsg, HubError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| HubError::InvalidJson(e.to_string()))?;
        match value.get("type").and_then(Value::as_str) {
            Some("publish" | "presence") => {}
            Some(other) => {
                return Err(HubError::InvalidBody(format!(
                    "unknown frame type '{}'; expected publish or presence",
                    other.chars().take(32).collect::<String>()
                )))
            }
            None => {
                return Err(HubError::InvalidBody(
                    "a frame needs a string \"type\"".into(),
                ))
            }
        }
        match serde_json::from_value(value)? {
            RawClientMsg::Publish { event, data, cid } => {
                if let Some(cid) = cid.as_deref() {
                    idempotency_key("cid", cid)?;
                }
                Ok(ClientMsg::Publish {
                    publish: Publish {
                        event: EventName::parse(event.as_deref())?,
                        data,
                    },
                    cid,
                })
            }
            RawClientMsg::Presence {} => Ok(ClientMsg::Presence),
        }
    }
}

/// What the room does with one incoming frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Store the message (deduplicated by `cid`), ack the sender, broadcast.
    Publish {
        publish: Publish,
        cid: Option<String>,
    },
    /// Answer the sender with the room's members.
    Presence,
    /// Answer the sender with this frame; the socket stays open.
    Reply(String),
    /// Close the socket with this error's close code.
    Close(HubError),
}

/// Decides what a text frame does. Updates the socket's rate budget and
/// strike count in `meta`; the caller persists `meta` afterwards.
pub fn on_text_frame(meta: &mut SocketMeta, text: &str, settings: &Settings, now_ms: u64) -> Step {
    if text.len() > settings.max_message_bytes {
        return Step::Close(HubError::TooLarge {
            limit: settings.max_message_bytes,
        });
    }
    let msg = match ClientMsg::parse(text) {
        Ok(m) => m,
        Err(e) => return Step::Reply(error_frame(&e)),
    };
    match msg {
        ClientMsg::Presence => Step::Presence,
        ClientMsg::Publish { publish, cid } => {
            if !meta.can_publish {
                return Step::Reply(error_frame(&HubError::Forbidden(
                    "this token does not grant publish",
                )));
            }
            match meta
                .bucket
                .take(settings.rate_per_sec, settings.rate_burst, now_ms)
            {
                Ok(()) => {
                    meta.strikes = 0;
                    Step::Publish { publish, cid }
                }
                Err(retry_after_s) => {
                    meta.strikes += 1;
                    let err = HubError::RateLimited { retry_after_s };
                    if meta.strikes >= ABUSE_STRIKES {
                        Step::Close(err)
                    } else {
                        Step::Reply(error_frame(&err))
                    }
                }
            }
        }
    }
}

/// The answer to a binary frame: the protocol is JSON text only.
pub fn binary_frame_error() -> String {
    error_frame(&HubError::InvalidBody(
        "binary frames are not supported; send JSON text".into(),
    ))
}

/// The `message` frame: the stored envelope with `"type":"message"` first.
pub fn message_frame(envelope: &str) -> String {
    let rest = envelope.strip_prefix('{').unwrap_or(envelope);
    let mut out = String::with_capacity(envelope.len() + 17);
    out.push_str("{\"type\":\"message\",");
    out.push_str(rest);
    out
}

/// The first frame of a socket. `presence` lists the members the room
/// tracks one by one; `presence_count` is how many there are in all (more
/// than listed when the room is above `PRESENCE_MAX_MEMBERS`).
pub fn welcome_frame(
    room: &str,
    last_id: Seq,
    meta: &SocketMeta,
    presence: &[String],
    presence_count: usize,
) -> String {
    json!({
        "type": "welcome",
        "room": room,
        "last_id": last_id.0,
        "you": {"conn": meta.conn, "user": meta.user, "presence_name": meta.presence_name()},
        "presence": presence,
        "presence_count": presence_count,
    })
    .to_string()
}

pub fn ack_frame(cid: Option<&str>, id: Seq) -> String {
    json!({"type": "ack", "cid": cid, "id": id.0}).to_string()
}

pub fn join_frame(user: &str) -> String {
    json!({"type": "join", "user": user}).to_string()
}

pub fn leave_frame(user: &str) -> String {
    json!({"type": "leave", "user": user}).to_string()
}

/// A presence snapshot: the listed members and how many there are in all.
pub fn presence_frame(members: &[String], count: usize) -> String {
    json!({"type": "presence", "members": members, "count": count}).to_string()
}

pub fn reset_frame(reset: ResetInfo) -> String {
    json!({"type": "reset", "reason": reset.reason, "first_id": reset.first_id}).to_string()
}

pub fn error_frame(err: &HubError) -> String {
    json!({"type": "error", "code": err.code(), "message": err.to_string()}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            rate_per_sec: 1,
            rate_burst: 2,
            max_message_bytes: 300,
            ..Settings::default()
        }
    }

    fn meta(can_publish: bool) -> SocketMeta {
        SocketMeta::new(
            "c1".into(),
            Some("alice".into()),
            can_publish,
            &settings(),
            0,
        )
    }

    fn code_of(step: &Step) -> String {
        match step {
            Step::Reply(frame) => {
                let v: Value = serde_json::from_str(frame).unwrap();
                v["code"].as_str().unwrap_or("").to_string()
            }
            Step::Close(e) => format!("close {}", e.close_code()),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn bad_frames_get_error_frames_and_keep_the_socket() {
        let table: &[(&str, &str)] = &[
            ("not json", "invalid_json"),
            ("", "invalid_json"),
            ("[]", "invalid_body"),
            ("{}", "invalid_body"),
            (r#"{"type":"shout"}"#, "invalid_body"),
            (r#"{"type":5}"#, "invalid_body"),
            (r#"{"type":"publish"}"#, "invalid_body"),
            (
                r#"{"type":"publish","data":1,"from":"mallory"}"#,
                "invalid_body",
            ),
            (
                r#"{"type":"publish","data":1,"event":"leave"}"#,
                "reserved_event",
            ),
            (
                r#"{"type":"publish","data":1,"event":"a\nb"}"#,
                "invalid_event",
            ),
            (
                r#"{"type":"publish","data":1,"cid":"has space"}"#,
                "invalid_param",
            ),
        ];
        for (frame, code) in table {
            let mut m = meta(true);
            assert_eq!(
                code_of(&on_text_frame(&mut m, frame, &settings(), 0)),
                *code,
                "{frame}"
            );
        }
    }

    #[test]
    fn valid_frames() {
        let mut m = meta(true);
        let step = on_text_frame(
            &mut m,
            r#"{"type":"publish","data":{"x":1},"cid":"c-1"}"#,
            &settings(),
            0,
        );
        match step {
            Step::Publish { publish, cid } => {
                assert_eq!(publish.event.as_str(), "message");
                assert_eq!(cid.as_deref(), Some("c-1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            on_text_frame(&mut m, r#"{"type":"presence"}"#, &settings(), 0),
            Step::Presence
        );
    }

    #[test]
    fn oversize_frames_close_with_1009() {
        let mut m = meta(true);
        let big = format!(r#"{{"type":"publish","data":"{}"}}"#, "x".repeat(400));
        assert_eq!(
            code_of(&on_text_frame(&mut m, &big, &settings(), 0)),
            "close 1009"
        );
    }

    #[test]
    fn publish_needs_the_capability() {
        let mut m = meta(false);
        let step = on_text_frame(&mut m, r#"{"type":"publish","data":1}"#, &settings(), 0);
        assert_eq!(code_of(&step), "forbidden");
    }

    #[test]
    fn rate_limit_then_close_on_persistent_abuse() {
        let mut m = meta(true);
        let publish = r#"{"type":"publish","data":1}"#;
        let s = settings();
        assert!(matches!(
            on_text_frame(&mut m, publish, &s, 0),
            Step::Publish { .. }
        ));
        assert!(matches!(
            on_text_frame(&mut m, publish, &s, 0),
            Step::Publish { .. }
        ));
        for _ in 1..ABUSE_STRIKES {
            assert_eq!(
                code_of(&on_text_frame(&mut m, publish, &s, 0)),
                "rate_limited"
            );
        }
        assert_eq!(
            code_of(&on_text_frame(&mut m, publish, &s, 0)),
            "close 1008"
        );
        // An accepted publish forgives earlier strikes.
        let mut m = meta(true);
        on_text_frame(&mut m, publish, &s, 0);
        on_text_frame(&mut m, publish, &s, 0);
        on_text_frame(&mut m, publish, &s, 0);
        assert_eq!(m.strikes, 1);
        assert!(matches!(
            on_text_frame(&mut m, publish, &s, 1000),
            Step::Publish { .. }
        ));
        assert_eq!(m.strikes, 0);
    }

    #[test]
    fn message_frame_is_the_envelope_with_a_type() {
        let env = r#"{"id":1,"event":"message","from":null,"ts":5,"data":2}"#;
        let frame = message_frame(env);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["id"], 1);
        assert_eq!(v["data"], 2);
    }

    #[test]
    fn anonymous_sockets_have_distinct_presence_names() {
        let s = settings();
        let a = SocketMeta::new("c1".into(), None, true, &s, 0);
        let b = SocketMeta::new("c2".into(), None, true, &s, 0);
        assert_ne!(a.presence_name(), b.presence_name());
        assert_eq!(meta(true).presence_name(), "alice");
    }

    #[test]
    fn meta_fits_an_attachment() {
        let m = SocketMeta::new(
            "c".repeat(32),
            Some("u".repeat(256)),
            true,
            &settings(),
            u64::MAX / 4,
        );
        assert!(serde_json::to_string(&m).unwrap().len() < 2048);
    }
}
