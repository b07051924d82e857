//! Wire types: the envelope every transport carries, publish bodies, and
//! the JSON bodies of the HTTP routes.
//!
//! Invariants:
//! - An envelope is serialized once, when its message is accepted; that
//!   exact text is stored, replayed and broadcast on every transport, so
//!   every subscriber sees byte-identical messages.
//! - Serialized envelopes are compact JSON and never contain a raw newline
//!   (JSON escapes newlines inside strings), so one fits on one SSE `data:` line.
//! - `from` is whatever the caller passes: the glue passes the verified
//!   identity, never anything from the body.
//!
//! Pure: no I/O.

use super::cursor::Seq;
use super::error::{ErrorBody, HubError};
use super::log::{ResetReason, Resume};
use super::names::{EventName, RoomName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A publish as sent over HTTP: `{"event"?: string, "data": any, "from"?:
/// string}` (`from` counts only from the backend, see `core::backend`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    event: Option<String>,
    data: Value,
    #[serde(default)]
    from: Option<String>,
}

/// A publish, validated, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub event: EventName,
    pub data: Value,
    /// The `from` an HTTP body sets: used for the backend's publishes only.
    pub from: Option<String>,
}

impl Publish {
    /// Parses and validates an HTTP publish body.
    pub fn from_http_body(body: &str, max_bytes: usize) -> Result<Self, HubError> {
        if body.len() > max_bytes {
            return Err(HubError::TooLarge { limit: max_bytes });
        }
        let parsed: PublishBody = serde_json::from_str(body)?;
        Ok(Publish {
            event: EventName::parse(parsed.event.as_deref())?,
            data: parsed.data,
            from: parsed.from,
        })
    }

    /// Serializes the envelope of this message as it will be stored and sent.
    /// Fails with `TooLarge` when the envelope exceeds `max_bytes`.
    pub fn envelope(
        &self,
        id: Seq,
        from: Option<&str>,
        ts_ms: u64,
        max_bytes: usize,
    ) -> Result<String, HubError> {
        let json = serde_json::to_string(&Envelope {
            id: id.0,
            event: self.event.as_str(),
            from,
            ts: ts_ms,
            data: &self.data,
        })
        .map_err(|e| HubError::Internal(format!("serialize envelope: {e}")))?;
        if json.len() > max_bytes {
            return Err(HubError::TooLarge { limit: max_bytes });
        }
        Ok(json)
    }
}

/// The longest `Idempotency-Key` or WebSocket `cid`.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// Validates an `Idempotency-Key` header or a WebSocket `cid`: 1–128
/// visible ASCII characters, so it can be stored and logged verbatim.
pub fn idempotency_key<'a>(name: &'static str, raw: &'a str) -> Result<&'a str, HubError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_IDEMPOTENCY_KEY_CHARS
        && raw.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(raw)
    } else {
        Err(HubError::InvalidParam {
            name,
            reason: format!("expected 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"),
        })
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or any
/// `application/*+json`, with or without parameters.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The envelope (docs/PROTOCOL.md, "The envelope"): the same on every transport.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    id: u64,
    event: &'a str,
    from: Option<&'a str>,
    ts: u64,
    data: &'a Value,
}

/// `201` body of a publish.
#[derive(Debug, Serialize)]
pub struct Published {
    pub id: u64,
    pub ts: u64,
}

/// The `reset` signal: the client missed messages; replay starts at `first_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResetInfo {
    pub reason: &'static str,
    pub first_id: u64,
}

impl ResetInfo {
    pub fn new(reason: ResetReason, first_id: Seq) -> Self {
        ResetInfo {
            reason: reason.as_str(),
            first_id: first_id.0,
        }
    }

    /// The signal a resume calls for, if any.
    pub fn of(resume: Resume) -> Option<Self> {
        match resume {
            Resume::Reset { reason, first_id } => Some(ResetInfo::new(reason, first_id)),
            Resume::Replay { .. } => None,
        }
    }
}

/// The body of a `200` poll: `{"room", "messages", "last_id"}` plus `reset`
/// when the cursor was older than the kept history. `joined_envelopes` is
/// the stored envelopes joined with commas (storage joins them in one
/// query): they are spliced in as stored, not parsed and re-serialized.
pub fn poll_body(
    room: &RoomName,
    joined_envelopes: &str,
    last_id: Seq,
    reset: Option<ResetInfo>,
) -> String {
    let room_json = serde_json::to_string(room.as_str()).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(joined_envelopes.len() + 96);
    out.push_str("{\"room\":");
    out.push_str(&room_json);
    out.push_str(",\"messages\":[");
    out.push_str(joined_envelopes);
    out.push_str("],\"last_id\":");
    out.push_str(&last_id.0.to_string());
    if let Some(reset) = reset {
        out.push_str(",\"reset\":");
        out.push_str(&serde_json::to_string(&reset).unwrap_or_default());
    }
    out.push('}');
    out
}

/// Live connections of a room by transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionCounts {
    pub ws: u32,
    pub sse: u32,
    pub poll: u32,
}

/// The body of `GET /rooms/{room}`.
#[derive(Debug, Serialize)]
pub struct RoomState<'a> {
    pub room: &'a str,
    pub last_id: u64,
    pub first_id: u64,
    pub connections: ConnectionCounts,
    pub presence: Vec<String>,
    /// `true` when `HUB_SECRET` is unset and the room is open to anyone.
    pub open: bool,
    /// How many times the room's Durable Object loaded it: once per start
    /// or wake from hibernation. Operators see wakes; tests prove them.
    pub loads: u64,
    /// Long polls the room is waiting to wake (held ones only: a timed-out
    /// poll leaves nothing behind).
    pub poll_waiters: u32,
    /// `null` when the caller could open one more live connection now;
    /// otherwise the error its upgrade or stream would get (`room_full`,
    /// `too_many_connections`). A browser cannot read why a WebSocket
    /// upgrade was refused, so the client asks here.
    pub connect_refused: Option<ErrorBody>,
    /// The webhook outbox's counters, when webhooks are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<super::webhooks::WebhookCounts>,
    /// What the room did since its storage was created (`core::meter`).
    pub stats: Option<&'a super::meter::Stats>,
    /// What the platform bills the room for, since the same time.
    pub usage: Option<&'a super::meter::Usage>,
}

/// What a publish must pass before its body is read: a JSON `Content-Type`
/// (else 415) and no declared `Content-Length` over `max_bytes` (else 413).
/// The Worker checks this before it forwards the body to the room, so a
/// refused body never travels; the room bounds what it reads.
pub fn check_publish_headers(
    content_type: Option<&str>,
    content_length: Option<&str>,
    max_bytes: usize,
) -> Result<(), HubError> {
    if !is_json_media_type(content_type.unwrap_or_default()) {
        return Err(HubError::UnsupportedMediaType);
    }
    if content_length
        .and_then(|n| n.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(HubError::TooLarge { limit: max_bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_publish_bodies() {
        let max = 1024;
        let p = Publish::from_http_body(r#"{"data":{"text":"hi"}}"#, max).unwrap();
        assert_eq!(p.event.as_str(), "message");
        let p = Publish::from_http_body(r#"{"event":"score","data":3}"#, max).unwrap();
        assert_eq!(p.event.as_str(), "score");
        let p = Publish::from_http_body(r#"{"data":null}"#, max).unwrap();
        assert_eq!(p.data, Value::Null);
        // `from` is carried as sent; only the backend's counts (core::backend).
        let p = Publish::from_http_body(r#"{"data":1,"from":"system"}"#, max).unwrap();
        assert_eq!(p.from.as_deref(), Some("system"));

        let table: &[(&str, &str)] = &[
            ("", "invalid_json"),
            ("not json", "invalid_json"),
            ("{\"data\":", "invalid_json"),
            ("{}", "invalid_body"),
            ("[1,2]", "invalid_body"),
            (r#"{"event":"join","data":1}"#, "reserved_event"),
            (r#"{"event":"a b","data":1}"#, "invalid_event"),
            (r#"{"event":5,"data":1}"#, "invalid_body"),
        ];
        for (body, code) in table {
            let err = Publish::from_http_body(body, max).unwrap_err();
            assert_eq!(err.code(), *code, "{body:?}: {err:?}");
        }
        let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(2000));
        assert_eq!(
            Publish::from_http_body(&big, max).unwrap_err().code(),
            "too_large"
        );
    }

    #[test]
    fn envelope_is_compact_one_line_json() {
        let p = Publish::from_http_body("{\n \"data\": {\"t\": \"a\\nb\"}\n}", 1024).unwrap();
        let env = p.envelope(Seq(3), Some("alice"), 1700, 1024).unwrap();
        assert_eq!(
            env,
            r#"{"id":3,"event":"message","from":"alice","ts":1700,"data":{"t":"a\nb"}}"#
        );
        assert!(!env.contains('\n') && !env.contains('\r'));
        let anon = p.envelope(Seq(1), None, 0, 1024).unwrap();
        assert!(anon.contains(r#""from":null"#));
    }

    #[test]
    fn data_keeps_its_key_order() {
        let p = Publish::from_http_body(r#"{"data":{"p":1,"n":2,"a":3}}"#, 1024).unwrap();
        let env = p.envelope(Seq(1), None, 0, 1024).unwrap();
        assert!(env.ends_with(r#""data":{"p":1,"n":2,"a":3}}"#), "{env}");
    }

    #[test]
    fn envelope_over_the_limit_is_refused() {
        let p =
            Publish::from_http_body(&format!(r#"{{"data":"{}"}}"#, "x".repeat(200)), 1024).unwrap();
        assert_eq!(
            p.envelope(Seq(1), None, 0, 220),
            Err(HubError::TooLarge { limit: 220 })
        );
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/jsonp",
            "text/json+x",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn publish_headers() {
        let json = Some("application/json");
        assert_eq!(check_publish_headers(json, None, 10), Ok(()));
        assert_eq!(check_publish_headers(json, Some("10"), 10), Ok(()));
        // An unparsable length is the runtime's to refuse, not a 413.
        assert_eq!(check_publish_headers(json, Some("x"), 10), Ok(()));
        assert_eq!(
            check_publish_headers(json, Some("11"), 10),
            Err(HubError::TooLarge { limit: 10 })
        );
        // The media type is checked first, as it is whatever the length.
        for ct in [None, Some("text/plain")] {
            assert_eq!(
                check_publish_headers(ct, Some("11"), 10),
                Err(HubError::UnsupportedMediaType)
            );
        }
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(idempotency_key("cid", "c-17"), Ok("c-17"));
        assert!(idempotency_key("cid", &"k".repeat(128)).is_ok());
        for bad in ["", " ", "a b", "é", "a\nb", &"k".repeat(129)] {
            assert!(idempotency_key("cid", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn poll_body_splices_envelopes() {
        let room = RoomName::parse("lobby").unwrap();
        let body = poll_body(&room, "{\"id\":1},{\"id\":2}", Seq(2), None);
        assert_eq!(
            body,
            r#"{"room":"lobby","messages":[{"id":1},{"id":2}],"last_id":2}"#
        );
        let v: Value = serde_json::from_str(&poll_body(
            &room,
            "",
            Seq(9),
            Some(ResetInfo::new(ResetReason::HistoryExceeded, Seq(5))),
        ))
        .unwrap();
        assert_eq!(v["reset"]["reason"], "history_exceeded");
        assert_eq!(v["reset"]["first_id"], 5);
    }
}
