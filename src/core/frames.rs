//! WebSocket frames, typed: [`ServerMsg`] is everything the room sends on a
//! socket, [`ClientMsg`] everything it accepts (docs/PROTOCOL.md,
//! "WebSocket").
//!
//! Invariants:
//! - Every server frame is one JSON object whose first field is `type`.
//! - A `message` frame is the stored envelope with `"type":"message"`
//!   spliced in front ([`ServerMsg::Message`]): built once per message from
//!   the stored text, never parsed and re-serialized, so every transport
//!   carries the same bytes.
//! - Replies name what they answer: `ack` and `error` carry the `cid` of the
//!   client frame they answer (when it had a valid one).
//! - A client frame is accepted only in one of the shapes of [`ClientMsg`]:
//!   unknown types and unknown fields are refused.
//!
//! Pure: serde only.

use super::cursor::Seq;
use super::error::HubError;
use super::names::EventName;
use super::protocol::{idempotency_key, Publish, ResetInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame the room sends on a WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// Always the first frame of a socket. `presence` lists the members
    /// tracked one by one; `presence_count` is how many there are in all
    /// (more than listed above `PRESENCE_MAX_MEMBERS`). `limits` lets a
    /// client refuse an oversized publish and pace itself.
    Welcome {
        room: &'a str,
        last_id: u64,
        you: You<'a>,
        presence: &'a [String],
        presence_count: usize,
        limits: Limits,
    },
    /// A message of the log: `envelope` is the stored envelope (see the
    /// module invariants; [`ServerMsg::to_text`] splices it).
    #[serde(skip_serializing)]
    Message { envelope: &'a str },
    /// This socket's publish is stored; `cid` is the publish's, if any.
    Ack { cid: Option<&'a str>, id: u64 },
    /// A client frame was refused.
    Error {
        code: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cid: Option<&'a str>,
        /// When a `rate_limited` frame may be sent again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A member's first connection opened.
    Join { user: &'a str },
    /// A member's last connection closed.
    Leave { user: &'a str },
    /// The members: the answer to a `presence` request, or a snapshot when
    /// the room crosses `PRESENCE_MAX_MEMBERS`.
    Presence { members: &'a [String], count: usize },
    /// The client missed messages; the replay starts at `first_id`.
    Reset { reason: &'static str, first_id: u64 },
    /// A replay batch ended and history remains after `after`: the client
    /// sends `{"type":"more"}` for the next batch.
    More { after: u64 },
}

/// Who a socket is, in its `welcome`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct You<'a> {
    pub conn: &'a str,
    pub user: Option<&'a str>,
    pub presence_name: String,
}

/// The limits a client paces itself by, in its `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
}

impl<'a> ServerMsg<'a> {
    /// The `error` frame for `err`, naming the client frame's `cid`.
    pub fn error(err: &HubError, cid: Option<&'a str>) -> Self {
        ServerMsg::Error {
            code: err.code(),
            message: err.to_string(),
            cid,
            retry_after_ms: match err {
                HubError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }

    pub fn reset(reset: ResetInfo) -> Self {
        ServerMsg::Reset {
            reason: reset.reason,
            first_id: reset.first_id,
        }
    }

    pub fn ack(cid: Option<&'a str>, id: Seq) -> Self {
        ServerMsg::Ack { cid, id: id.0 }
    }

    pub fn more(after: Seq) -> Self {
        ServerMsg::More { after: after.0 }
    }

    /// The frame's text.
    pub fn to_text(&self) -> String {
        match self {
            ServerMsg::Message { envelope } => {
                let rest = envelope.strip_prefix('{').unwrap_or(envelope);
                let mut out = String::with_capacity(envelope.len() + 17);
                out.push_str("{\"type\":\"message\",");
                out.push_str(rest);
                out
            }
            // Plain data with string keys: serializing cannot fail.
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

/// A frame from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// Publish a message; `cid` is its idempotency key.
    Publish {
        publish: Publish,
        cid: Option<String>,
    },
    /// Ask for the members.
    Presence,
    /// The client read a replay batch and asks for the next one.
    More,
}

/// The wire shapes of [`ClientMsg`], before validation.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawClientMsg {
    Publish {
        event: Option<String>,
        data: Value,
        cid: Option<String>,
    },
    Presence {},
    More {},
}

impl ClientMsg {
    pub fn parse(text: &str) -> Result<ClientMsg, HubError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| HubError::InvalidJson(e.to_string()))?;
        match value.get("type").and_then(Value::as_str) {
            Some("publish" | "presence" | "more") => {}
            Some(other) => {
                return Err(HubError::InvalidBody(format!(
                    "unknown frame type '{}'; expected publish, presence or more",
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
                        from: None,
                    },
                    cid,
                })
            }
            RawClientMsg::Presence {} => Ok(ClientMsg::Presence),
            RawClientMsg::More {} => Ok(ClientMsg::More),
        }
    }

    /// The `cid` of a frame that is JSON with a valid string `cid`, whatever
    /// else it holds: an error about that frame then names it.
    pub fn loose_cid(text: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct CidOnly {
            cid: Option<Value>,
        }
        let frame: CidOnly = serde_json::from_str(text).ok()?;
        match frame.cid? {
            Value::String(cid) if idempotency_key("cid", &cid).is_ok() => Some(cid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(msg: &ServerMsg<'_>) -> Value {
        serde_json::from_str(&msg.to_text()).unwrap()
    }

    #[test]
    fn every_server_frame_starts_with_its_type() {
        let members = vec!["alice".to_owned()];
        let frames = [
            ServerMsg::Welcome {
                room: "r",
                last_id: 3,
                you: You {
                    conn: "c",
                    user: None,
                    presence_name: "anon:c".into(),
                },
                presence: &members,
                presence_count: 1,
                limits: Limits {
                    max_message_bytes: 300,
                    rate_per_sec: 1,
                    rate_burst: 2,
                },
            },
            ServerMsg::Message {
                envelope: r#"{"id":1,"event":"message","from":null,"ts":5,"data":2}"#,
            },
            ServerMsg::ack(Some("c-1"), Seq(4)),
            ServerMsg::error(&HubError::RateLimited { retry_after_ms: 50 }, Some("c-2")),
            ServerMsg::Join { user: "alice" },
            ServerMsg::Leave { user: "alice" },
            ServerMsg::Presence {
                members: &members,
                count: 1,
            },
            ServerMsg::Reset {
                reason: "history_exceeded",
                first_id: 8,
            },
            ServerMsg::more(Seq(42)),
        ];
        let types = [
            "welcome", "message", "ack", "error", "join", "leave", "presence", "reset", "more",
        ];
        for (frame, ty) in frames.iter().zip(types) {
            let text = frame.to_text();
            assert!(text.starts_with(&format!("{{\"type\":\"{ty}\"")), "{text}");
        }
    }

    #[test]
    fn replies_name_what_they_answer() {
        let e = json(&ServerMsg::error(
            &HubError::RateLimited { retry_after_ms: 50 },
            Some("c-2"),
        ));
        assert_eq!(e["code"], "rate_limited");
        assert_eq!(e["cid"], "c-2");
        assert_eq!(e["retry_after_ms"], 50);
        // Only what applies: no cid, no retry_after_ms.
        let e = json(&ServerMsg::error(&HubError::InvalidJson("x".into()), None));
        assert!(
            e.get("cid").is_none() && e.get("retry_after_ms").is_none(),
            "{e}"
        );
        // An ack always has its cid field, null when the publish had none.
        assert_eq!(json(&ServerMsg::ack(None, Seq(1)))["cid"], Value::Null);
        assert_eq!(
            ServerMsg::more(Seq(42)).to_text(),
            r#"{"type":"more","after":42}"#
        );
    }

    #[test]
    fn a_message_frame_is_the_stored_envelope_with_a_type() {
        let env = r#"{"id":1,"event":"message","from":null,"ts":5,"data":2}"#;
        let text = ServerMsg::Message { envelope: env }.to_text();
        assert_eq!(
            text,
            r#"{"type":"message","id":1,"event":"message","from":null,"ts":5,"data":2}"#
        );
    }

    #[test]
    fn client_frames_in_their_shapes_only() {
        assert_eq!(
            ClientMsg::parse(r#"{"type":"presence"}"#),
            Ok(ClientMsg::Presence)
        );
        assert_eq!(ClientMsg::parse(r#"{"type":"more"}"#), Ok(ClientMsg::More));
        let refused = [
            (r#"{"type":"more","since":3}"#, "invalid_body"),
            (r#"{"type":"subscribe"}"#, "invalid_body"),
            (r#"{"data":1}"#, "invalid_body"),
            ("nope", "invalid_json"),
        ];
        for (text, code) in refused {
            assert_eq!(ClientMsg::parse(text).unwrap_err().code(), code, "{text}");
        }
        assert_eq!(
            ClientMsg::loose_cid(r#"{"type":"nope","cid":"c-9"}"#).as_deref(),
            Some("c-9")
        );
        assert_eq!(ClientMsg::loose_cid(r#"{"cid":"has space"}"#), None);
    }
}
