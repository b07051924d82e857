//! Webhooks: what a room tells the app's backend, signed per the Standard
//! Webhooks specification (docs/PROTOCOL.md, "Webhooks").
//!
//! Invariants:
//! - An event is written to the room's storage (its outbox) in the same
//!   synchronous stretch as what caused it (the message, the presence
//!   change), so it is never lost, and delivered one at a time, in the
//!   order written: a later event never overtakes an earlier one.
//! - Every attempt of one event carries the same `webhook-id`; the
//!   signature covers `id.timestamp.body` with the secret's key.
//! - A failed attempt is retried after [`backoff_ms`]; after
//!   `WEBHOOK_MAX_ATTEMPTS` attempts the event is dropped and counted. The
//!   outbox holds at most [`MAX_OUTBOX_EVENTS`]; past that new events are
//!   dropped and counted, never written.
//!
//! Pure: the caller passes the time and does the I/O.

use super::error::HubError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Events an outbox holds at most; past that they are dropped and counted.
pub const MAX_OUTBOX_EVENTS: u64 = 10_000;
/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT_MS: u64 = 10_000;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: u64 = 600_000;

/// A room's outbox counters, in `GET /rooms/{room}`: events waiting, and
/// since the room's storage was created, delivered, given up on after
/// `WEBHOOK_MAX_ATTEMPTS`, and dropped because the outbox was full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

/// What happened in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A message was stored (data: its envelope).
    MessagePublished,
    /// The room's first live connection opened, on any transport.
    RoomOccupied,
    /// The room's last live connection ended.
    RoomVacated,
    /// A member's first WebSocket opened (data: `{"user"}`).
    MemberJoined,
    /// A member's last WebSocket closed (data: `{"user"}`).
    MemberLeft,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessagePublished => "message.published",
            EventType::RoomOccupied => "room.occupied",
            EventType::RoomVacated => "room.vacated",
            EventType::MemberJoined => "member.joined",
            EventType::MemberLeft => "member.left",
        }
    }
}

/// The body of one event: `{"type", "room", "timestamp", "data"}`, with
/// `data_json` (already JSON, e.g. a stored envelope) spliced in as is.
pub fn event_body(kind: EventType, room: &str, timestamp_ms: u64, data_json: &str) -> String {
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        room: &'a str,
        timestamp: u64,
    }
    let head = serde_json::to_string(&Head {
        kind: kind.as_str(),
        room,
        timestamp: timestamp_ms,
    })
    .unwrap_or_default();
    // `{"type":…,"timestamp":N}` + `,"data":…}`
    let mut out = String::with_capacity(head.len() + data_json.len() + 9);
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"data\":");
    out.push_str(data_json);
    out.push('}');
    out
}

/// The `data` of a member event.
pub fn member_data(user: &str) -> String {
    serde_json::json!({ "user": user }).to_string()
}

/// The signing key of a `WEBHOOK_SECRET` (`whsec_` and base64, as Standard
/// Webhooks libraries make them; the prefix is optional).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, HubError> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| HubError::BadConfig("WEBHOOK_SECRET: not whsec_<base64>".into()))?;
    if key.len() < 24 {
        return Err(HubError::BadConfig(
            "WEBHOOK_SECRET: the key must be at least 24 bytes".into(),
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn signature(key: &[u8], id: &str, timestamp_s: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(format!("{id}.{timestamp_s}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-id` of the outbox's event `seq` in the room's `epoch`:
/// stable across attempts, and unique across a room's deletions.
pub fn event_id(epoch: &str, seq: u64) -> String {
    format!("evt_{epoch}_{seq}")
}

/// How long to wait after `attempts` failed attempts: 1 s, doubling, at
/// most 10 minutes.
pub fn backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(20);
    (1000u64 << doublings).min(MAX_BACKOFF_MS)
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// Delivered: take the next event.
    Delivered,
    /// Try again at this time (ms); later events wait.
    RetryAt(u64),
    /// Out of attempts: drop it, count it, take the next event.
    GiveUp,
}

/// Decides after attempt number `attempts` (1 for the first) answered
/// `status` (`None`: no answer within the timeout).
pub fn after_attempt(
    status: Option<u16>,
    attempts: u32,
    max_attempts: u32,
    now_ms: u64,
) -> AfterAttempt {
    match status {
        Some(200..=299) => AfterAttempt::Delivered,
        _ if attempts >= max_attempts => AfterAttempt::GiveUp,
        _ => AfterAttempt::RetryAt(now_ms + backoff_ms(attempts)),
    }
}

/// The occupancy event for a change from `before` to `after` live
/// connections, if it is a transition.
pub fn occupancy(before: usize, after: usize) -> Option<EventType> {
    match (before, after) {
        (0, 1..) => Some(EventType::RoomOccupied),
        (1.., 0) => Some(EventType::RoomVacated),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_splice_their_data() {
        let body = event_body(
            EventType::MessagePublished,
            "lobby",
            1_700_000_000_123,
            r#"{"id":1,"event":"message","from":null,"ts":5,"data":"hi"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "message.published");
        assert_eq!(v["room"], "lobby");
        assert_eq!(v["timestamp"], 1_700_000_000_123u64);
        assert_eq!(v["data"]["id"], 1);
        let joined = event_body(EventType::MemberJoined, "r", 1, &member_data("al\"ice"));
        let v: serde_json::Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(v["data"]["user"], "al\"ice");
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(signing_key("whsec_!!").is_err());
        assert!(signing_key("whsec_c2hvcnQ=").is_err(), "too short a key");
    }

    #[test]
    fn retries_back_off_and_give_up() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(30), 600_000);
        assert_eq!(after_attempt(Some(204), 1, 3, 0), AfterAttempt::Delivered);
        assert_eq!(
            after_attempt(Some(500), 1, 3, 10),
            AfterAttempt::RetryAt(1010)
        );
        assert_eq!(after_attempt(None, 2, 3, 10), AfterAttempt::RetryAt(2010));
        assert_eq!(after_attempt(Some(302), 3, 3, 0), AfterAttempt::GiveUp);
    }

    #[test]
    fn occupancy_fires_on_transitions_only() {
        assert_eq!(occupancy(0, 1), Some(EventType::RoomOccupied));
        assert_eq!(occupancy(0, 3), Some(EventType::RoomOccupied));
        assert_eq!(occupancy(1, 0), Some(EventType::RoomVacated));
        assert_eq!(occupancy(2, 1), None);
        assert_eq!(occupancy(0, 0), None);
        assert_eq!(event_id("0a1b2c3d", 7), "evt_0a1b2c3d_7");
    }
}
