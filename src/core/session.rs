//! WebSocket sessions: per-socket state, client frames, server frames and
//! the decisions a room makes about each frame.
//!
//! Invariants:
//! - [`SocketMeta`] is everything a socket must remember across hibernation;
//!   it is serialized into the socket's attachment (≤ 2 KB) after every
//!   change, so a room that wakes knows every socket's identity and budget.
//! - A frame never crashes a session: bad input yields an `error` frame and
//!   the socket stays open, except a frame over `MAX_MESSAGE_BYTES` (1009)
//!   and persistent abuse (1008: the socket ran out of strikes, see
//!   `limits.rs`).
//! - Every reply names what it answers: an `error` answering a frame that
//!   carried a `cid` carries that `cid`; a publish gets exactly one `ack`
//!   or one `error`.
//! - `from` comes from [`SocketMeta::user`], set by the server at upgrade.
//! - The frames themselves are typed in `core::frames`.
//!
//! Pure: no `worker` types, clock or I/O; `durable/sockets.rs` carries the
//! decisions out.

use super::auth::{budget_key, connection_key, Identity};
use super::cursor::Seq;
use super::error::HubError;
use super::frames::{ClientMsg, Limits, ServerMsg, You};
use super::limits::{frame_budget, TokenBucket, ABUSE_STRIKES, STRIKES_PER_SEC};
use super::protocol::Publish;
use super::settings::Settings;
use serde::{Deserialize, Serialize};

/// What a socket carries across hibernation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketMeta {
    /// The room's name: a room woken by a socket event has no request path
    /// to read it from, and storage may not exist (see `durable/store.rs`).
    pub room: String,
    /// Connection id, unique within the room.
    pub conn: String,
    /// The verified user (`sub`), `None` when anonymous.
    pub user: Option<String>,
    /// Whether the token grants `publish`.
    pub can_publish: bool,
    /// The frame budget: every client frame takes a token.
    pub frames: TokenBucket,
    /// Strikes left (invalid frames, frames over the frame budget).
    pub strikes: TokenBucket,
    /// The client's address, for anonymous sockets' shared budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Set while the socket catches up: its replay has been sent up to
    /// this id and continues when the client sends `more`. Live messages
    /// are held back from it meanwhile (they reach it through the replay),
    /// so it still sees every id once, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_after: Option<u64>,
    /// When the token the socket was opened with stops being valid (`exp`
    /// plus `TOKEN_LEEWAY_SECS`, in seconds): the socket is closed with
    /// `4001 token_expired` then. `None` without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_s: Option<u64>,
}

impl SocketMeta {
    pub fn new(
        room: String,
        conn: String,
        user: Option<String>,
        can_publish: bool,
        settings: &Settings,
        now_ms: u64,
    ) -> Self {
        let (_, frame_burst) = frame_budget(settings.rate_per_sec, settings.rate_burst);
        SocketMeta {
            room,
            conn,
            user,
            can_publish,
            frames: TokenBucket::full(frame_burst, now_ms),
            strikes: TokenBucket::full(ABUSE_STRIKES, now_ms),
            addr: None,
            replay_after: None,
            expires_s: None,
        }
    }

    /// Counts a strike for `err`: the socket gets the `error` (naming `cid`)
    /// and stays open while it has strikes left, else it is closed.
    fn strike(&mut self, err: HubError, cid: Option<String>, now_ms: u64) -> Step {
        match self.strikes.take(STRIKES_PER_SEC, ABUSE_STRIKES, now_ms) {
            Ok(()) => Step::Reply(ServerMsg::error(&err, cid.as_deref()).to_text()),
            Err(_) => Step::Close { err, cid },
        }
    }

    fn identity(&self) -> Identity {
        match &self.user {
            Some(sub) => Identity::User {
                sub: sub.clone(),
                can_publish: self.can_publish,
            },
            None => Identity::Anonymous,
        }
    }

    /// The key of this socket's publish budget (see [`budget_key`]).
    pub fn budget_key(&self) -> Option<String> {
        budget_key(&self.identity(), self.addr.as_deref())
    }

    /// The key of this socket's connection count (see [`connection_key`]).
    pub fn connection_key(&self) -> Option<String> {
        connection_key(&self.identity())
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

/// What the room does with one incoming frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Check the user's publish budget, then store the message
    /// (deduplicated by `cid`), ack the sender, broadcast.
    Publish {
        publish: Publish,
        cid: Option<String>,
    },
    /// Answer the sender with the room's members.
    Presence,
    /// Send the sender its next replay batch, after `after`.
    More { after: Seq },
    /// Answer the sender with this frame; the socket stays open.
    Reply(String),
    /// Send the error (naming `cid`), then close the socket with its close code.
    Close { err: HubError, cid: Option<String> },
}

/// Decides what a text frame does. Takes the frame's token from the
/// socket's frame budget and counts strikes in `meta`; the caller persists
/// `meta` afterwards. The publish budget is the room's (shared by the
/// user's sockets and HTTP), checked by the caller on `Step::Publish`.
pub fn on_text_frame(meta: &mut SocketMeta, text: &str, settings: &Settings, now_ms: u64) -> Step {
    if let Err(err) = take_frame_token(meta, text.len(), settings, now_ms) {
        return refuse(meta, err, || ClientMsg::loose_cid(text), now_ms);
    }
    let msg = match ClientMsg::parse(text) {
        Ok(m) => m,
        Err(e) => return meta.strike(e, ClientMsg::loose_cid(text), now_ms),
    };
    match msg {
        ClientMsg::Presence => Step::Presence,
        ClientMsg::More => match meta.replay_after {
            Some(after) => Step::More { after: Seq(after) },
            None => {
                let err =
                    HubError::InvalidBody("nothing more to send: the replay is complete".into());
                meta.strike(err, None, now_ms)
            }
        },
        ClientMsg::Publish { publish, cid } => {
            if !meta.can_publish {
                let err = HubError::Forbidden("this token does not grant publish");
                return meta.strike(err, cid, now_ms);
            }
            Step::Publish { publish, cid }
        }
    }
}

/// Checks a frame of `len` bytes against `MAX_MESSAGE_BYTES` (`TooLarge`)
/// and takes its token from the frame budget (`RateLimited`).
fn take_frame_token(
    meta: &mut SocketMeta,
    len: usize,
    settings: &Settings,
    now_ms: u64,
) -> Result<(), HubError> {
    if len > settings.max_message_bytes {
        return Err(HubError::TooLarge {
            limit: settings.max_message_bytes,
        });
    }
    let (frame_rate, frame_burst) = frame_budget(settings.rate_per_sec, settings.rate_burst);
    meta.frames
        .take(frame_rate, frame_burst, now_ms)
        .map_err(|retry_after_ms| HubError::RateLimited { retry_after_ms })
}

/// The step for a frame [`take_frame_token`] refused: a frame too large
/// closes the socket (1009) at once, unread, so its error names no `cid`;
/// one over the budget is a strike, and its error names the frame's `cid`
/// (looked for only then: parsing costs).
fn refuse(
    meta: &mut SocketMeta,
    err: HubError,
    cid: impl FnOnce() -> Option<String>,
    now_ms: u64,
) -> Step {
    match err {
        HubError::TooLarge { .. } => Step::Close { err, cid: None },
        _ => meta.strike(err, cid(), now_ms),
    }
}

/// Decides what a binary frame does: the protocol is JSON text only, so it
/// is refused, and like any invalid frame it costs a token and a strike.
pub fn on_binary_frame(
    meta: &mut SocketMeta,
    len: usize,
    settings: &Settings,
    now_ms: u64,
) -> Step {
    if let Err(err) = take_frame_token(meta, len, settings, now_ms) {
        return refuse(meta, err, || None, now_ms);
    }
    let err = HubError::InvalidBody("binary frames are not supported; send JSON text".into());
    meta.strike(err, None, now_ms)
}

impl SocketMeta {
    /// This socket's `welcome`: who it is, the room's members and limits.
    pub fn welcome<'a>(
        &'a self,
        room: &'a str,
        last_id: Seq,
        presence: &'a [String],
        presence_count: usize,
        settings: &Settings,
    ) -> ServerMsg<'a> {
        ServerMsg::Welcome {
            room,
            last_id: last_id.0,
            you: You {
                conn: &self.conn,
                user: self.user.as_deref(),
                presence_name: self.presence_name(),
            },
            presence,
            presence_count,
            limits: Limits {
                max_message_bytes: settings.max_message_bytes,
                rate_per_sec: settings.rate_per_sec,
                rate_burst: settings.rate_burst,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
            "room".into(),
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
            Step::Close { err, .. } => format!("close {}", err.close_code()),
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
    fn more_continues_a_replay_and_is_a_strike_when_there_is_none() {
        let mut m = meta(true);
        m.replay_after = Some(7);
        assert_eq!(
            on_text_frame(&mut m, r#"{"type":"more"}"#, &settings(), 0),
            Step::More { after: Seq(7) }
        );
        m.replay_after = None;
        let strikes_before = m.strikes.clone();
        let step = on_text_frame(&mut m, r#"{"type":"more"}"#, &settings(), 0);
        assert_eq!(code_of(&step), "invalid_body");
        assert_ne!(m.strikes, strikes_before, "an unasked-for more is a strike");
        // The cursor survives hibernation in the attachment.
        m.replay_after = Some(42);
        let back: SocketMeta = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.replay_after, Some(42));
    }

    #[test]
    fn oversize_frames_close_with_1009() {
        let mut m = meta(true);
        let big = format!(
            r#"{{"type":"publish","data":"{}","cid":"big"}}"#,
            "x".repeat(400)
        );
        let step = on_text_frame(&mut m, &big, &settings(), 0);
        assert_eq!(code_of(&step), "close 1009");
        // Not read, so not named: the docs say so.
        assert!(matches!(step, Step::Close { cid: None, .. }), "{step:?}");
    }

    #[test]
    fn publish_needs_the_capability() {
        let mut m = meta(false);
        let step = on_text_frame(&mut m, r#"{"type":"publish","data":1}"#, &settings(), 0);
        assert_eq!(code_of(&step), "forbidden");
    }

    fn frame_of(step: &Step) -> Value {
        match step {
            Step::Reply(frame) => serde_json::from_str(frame).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_frame_they_answer() {
        let s = settings();
        let mut m = meta(true);
        let table: &[(&str, Option<&str>)] = &[
            (r#"{"type":"publish","cid":"c-1"}"#, Some("c-1")),
            (
                r#"{"type":"publish","data":1,"event":"open","cid":"c-2"}"#,
                Some("c-2"),
            ),
            (r#"{"type":"shout","cid":"c-3"}"#, Some("c-3")),
            (r#"{"type":"publish","cid":7}"#, None),
            (r#"{"type":"publish","cid":"has space"}"#, None),
            ("not json", None),
        ];
        for (frame, cid) in table {
            let reply = frame_of(&on_text_frame(&mut m, frame, &s, 0));
            assert_eq!(reply["type"], "error", "{frame}");
            assert_eq!(reply["cid"].as_str(), *cid, "{frame}");
        }
        let mut m = meta(false);
        let reply = frame_of(&on_text_frame(
            &mut m,
            r#"{"type":"publish","data":1,"cid":"c-9"}"#,
            &s,
            0,
        ));
        assert_eq!(
            (reply["code"].as_str(), reply["cid"].as_str()),
            (Some("forbidden"), Some("c-9"))
        );
    }

    #[test]
    fn every_frame_costs_frame_budget_and_a_flood_closes_with_1008() {
        let s = settings();
        let (_, burst) = frame_budget(s.rate_per_sec, s.rate_burst);
        let mut m = meta(true);
        for i in 0..burst {
            let step = on_text_frame(&mut m, r#"{"type":"presence"}"#, &s, 0);
            assert_eq!(step, Step::Presence, "frame {i}");
        }
        // Over the frame budget: refused with retry_after_ms, a strike each.
        let refused = frame_of(&on_text_frame(
            &mut m,
            r#"{"type":"publish","data":1,"cid":"late"}"#,
            &s,
            0,
        ));
        assert_eq!(refused["code"], "rate_limited");
        assert_eq!(refused["cid"], "late");
        assert!(refused["retry_after_ms"].as_u64().unwrap() > 0);
        for _ in 1..ABUSE_STRIKES {
            assert_eq!(
                code_of(&on_text_frame(&mut m, r#"{"type":"presence"}"#, &s, 0)),
                "rate_limited"
            );
        }
        assert_eq!(
            code_of(&on_text_frame(&mut m, r#"{"type":"presence"}"#, &s, 0)),
            "close 1008"
        );
    }

    #[test]
    fn invalid_frames_are_strikes_that_come_back_with_time() {
        let s = settings();
        let mut m = meta(true);
        for _ in 0..ABUSE_STRIKES {
            assert_eq!(
                code_of(&on_text_frame(&mut m, "nope", &s, 0)),
                "invalid_json"
            );
        }
        // Strikes come back at STRIKES_PER_SEC: a buggy client survives.
        assert_eq!(
            code_of(&on_text_frame(&mut m, "nope", &s, 1000)),
            "invalid_json"
        );
        assert_eq!(
            code_of(&on_text_frame(&mut m, "nope", &s, 1000)),
            "close 1008"
        );
    }

    #[test]
    fn with_rate_limits_off_frames_are_free() {
        let s = Settings {
            rate_per_sec: 0,
            ..settings()
        };
        let mut m = SocketMeta::new("r".into(), "c".into(), None, true, &s, 0);
        for _ in 0..10_000 {
            assert_eq!(
                on_text_frame(&mut m, r#"{"type":"presence"}"#, &s, 0),
                Step::Presence
            );
        }
    }

    #[test]
    fn welcome_carries_the_limits() {
        let s = settings();
        let w: Value =
            serde_json::from_str(&meta(true).welcome("r", Seq(3), &[], 0, &s).to_text()).unwrap();
        assert_eq!(w["limits"]["max_message_bytes"], 300);
        assert_eq!(w["limits"]["rate_per_sec"], 1);
        assert_eq!(w["limits"]["rate_burst"], 2);
    }

    #[test]
    fn anonymous_sockets_have_distinct_presence_names() {
        let s = settings();
        let a = SocketMeta::new("r".into(), "c1".into(), None, true, &s, 0);
        let b = SocketMeta::new("r".into(), "c2".into(), None, true, &s, 0);
        assert_ne!(a.presence_name(), b.presence_name());
        assert_eq!(meta(true).presence_name(), "alice");
    }

    #[test]
    fn meta_fits_an_attachment() {
        let mut m = SocketMeta::new(
            "r".repeat(128),
            "c".repeat(32),
            Some("u".repeat(256)),
            true,
            &settings(),
            u64::MAX / 4,
        );
        m.addr = Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into());
        assert!(serde_json::to_string(&m).unwrap().len() < 2048);
    }
}
