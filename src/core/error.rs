//! The one error type of the hub, and how each error shows on the wire.
//!
//! Every failure a client can cause maps to exactly one [`HubError`] variant,
//! which knows its HTTP status, its stable machine-readable code and its
//! WebSocket close code. The JSON body is always `{"error": code,
//! "message": text}` (docs/PROTOCOL.md, "Errors").
//!
//! Invariant: [`HubError::Internal`] and [`HubError::BadConfig`] carry text
//! for the operator's log only; [`HubError::body`] never sends it.

use serde::Serialize;
use std::fmt;

/// WebSocket close code: the peer broke a policy (auth, origin, persistent abuse).
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code: a frame over `MAX_MESSAGE_BYTES`.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code: the room failed internally; reconnecting may help.
pub const CLOSE_INTERNAL: u16 = 1011;
/// WebSocket close code: a normal close, echoed back to the client.
pub const CLOSE_NORMAL: u16 = 1000;

/// WebSocket close code: the room kept sending to a socket that showed no
/// sign of reading; reconnect with `since` to resume.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// WebSocket close code: the connection's token expired; reconnect with a
/// fresh token and `since`.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// WebSocket close code: the app's backend disconnected this user.
pub const CLOSE_DISCONNECTED: u16 = 4003;
/// WebSocket close code: the app's backend deleted the room.
pub const CLOSE_ROOM_DELETED: u16 = 4004;

/// Everything that can go wrong in a request or a frame.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// Occurs when a room name is empty, longer than 128 characters or has a
    /// character outside `A-Z a-z 0-9 . _ : -`.
    InvalidRoom,
    /// Occurs when an event name is empty, longer than 64 characters or has a
    /// character outside `A-Z a-z 0-9 . _ : -`.
    InvalidEvent,
    /// Occurs when a publisher uses an event name the hub keeps for its own
    /// signals (`reset`, `join`, `leave`, `presence`) or that a browser's
    /// `EventSource` treats as its own (`error`, `open`, `close`).
    ReservedEvent(String),
    /// Occurs when a query parameter or header is not what the route accepts
    /// (`since`, `limit`, `wait`, `Last-Event-ID`).
    InvalidParam { name: &'static str, reason: String },
    /// Occurs when a body or frame is not JSON.
    InvalidJson(String),
    /// Occurs when a body or frame is JSON but not the expected shape.
    InvalidBody(String),
    /// Occurs when a publish is sent with a `Content-Type` other than JSON.
    UnsupportedMediaType,
    /// Occurs when a body, frame or stored envelope exceeds `MAX_MESSAGE_BYTES`.
    TooLarge { limit: usize },
    /// Occurs when no route matches the path.
    NotFound,
    /// Occurs when the route exists but not for this method.
    MethodNotAllowed { allow: &'static str },
    /// Occurs when the WebSocket route is requested without `Upgrade: websocket`.
    UpgradeRequired,
    /// Occurs when a token is missing, malformed, expired, not yet valid or
    /// badly signed. The text says which, never the token itself.
    Unauthorized(&'static str),
    /// Occurs when a valid token does not grant the room or the capability.
    Forbidden(&'static str),
    /// Occurs when a WebSocket upgrade or a CORS request comes from an
    /// `Origin` outside `ALLOWED_ORIGINS`.
    OriginNotAllowed,
    /// Occurs when one user already holds `MAX_CONNECTIONS_PER_USER` live
    /// connections in the room.
    TooManyConnections { limit: u32 },
    /// Occurs when the room already holds `MAX_CONNECTIONS_PER_ROOM` live
    /// connections.
    RoomFull { limit: u32 },
    /// Occurs when a publisher exceeds its publish budget, or a WebSocket
    /// its frame budget.
    RateLimited { retry_after_ms: u64 },
    /// Occurs when a WebSocket shows no sign of reading while the room
    /// keeps sending to it (see `durable/fanout.rs`).
    SlowConsumer,
    /// Occurs when the token a live connection was opened with expires
    /// (`exp` plus `TOKEN_LEEWAY_SECS`): the connection ends.
    TokenExpired,
    /// Occurs when the app's backend ends a user's connections
    /// (`POST /rooms/{room}/disconnect`).
    Disconnected,
    /// Occurs when the app's backend deletes the room (`DELETE /rooms/{room}`).
    RoomDeleted,
    /// Occurs when something the hub needs from outside is not available
    /// right now (an identity provider's keys): retry shortly.
    Unavailable(&'static str),

    /// Occurs when a `[vars]` setting cannot be parsed. Fails the request
    /// loudly rather than running with a silent default.
    BadConfig(String),
    /// Occurs when the runtime or storage fails. Logged, never sent.
    Internal(String),
}

/// The JSON error body (docs/PROTOCOL.md, "Errors"): `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
}

impl HubError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        use HubError::*;
        match self {
            InvalidRoom
            | InvalidEvent
            | ReservedEvent(_)
            | InvalidParam { .. }
            | InvalidJson(_)
            | InvalidBody(_) => 400,
            Unauthorized(_) | TokenExpired => 401,
            Forbidden(_) | OriginNotAllowed | Disconnected => 403,
            RoomDeleted => 410,
            Unavailable(_) => 503,
            NotFound => 404,
            MethodNotAllowed { .. } => 405,
            TooLarge { .. } => 413,
            UnsupportedMediaType => 415,
            UpgradeRequired => 426,
            TooManyConnections { .. } | RoomFull { .. } | RateLimited { .. } => 429,
            SlowConsumer => 409,
            BadConfig(_) | Internal(_) => 500,
        }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        use HubError::*;
        match self {
            InvalidRoom => "invalid_room",
            InvalidEvent => "invalid_event",
            ReservedEvent(_) => "reserved_event",
            InvalidParam { .. } => "invalid_param",
            InvalidJson(_) => "invalid_json",
            InvalidBody(_) => "invalid_body",
            UnsupportedMediaType => "unsupported_media_type",
            TooLarge { .. } => "too_large",
            NotFound => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            UpgradeRequired => "upgrade_required",
            Unauthorized(_) => "unauthorized",
            Forbidden(_) => "forbidden",
            OriginNotAllowed => "origin_not_allowed",
            TooManyConnections { .. } => "too_many_connections",
            RoomFull { .. } => "room_full",
            RateLimited { .. } => "rate_limited",
            SlowConsumer => "slow_consumer",
            TokenExpired => "token_expired",
            Disconnected => "disconnected",
            RoomDeleted => "room_deleted",
            Unavailable(_) => "unavailable",
            BadConfig(_) => "bad_config",
            Internal(_) => "internal",
        }
    }

    /// The close code when this error ends a WebSocket session.
    pub fn close_code(&self) -> u16 {
        use HubError::*;
        match self {
            TooLarge { .. } => CLOSE_TOO_BIG,
            Internal(_) | BadConfig(_) | Unavailable(_) => CLOSE_INTERNAL,
            SlowConsumer => CLOSE_SLOW_CONSUMER,
            TokenExpired => CLOSE_TOKEN_EXPIRED,
            Disconnected => CLOSE_DISCONNECTED,
            RoomDeleted => CLOSE_ROOM_DELETED,
            _ => CLOSE_POLICY,
        }
    }

    /// Milliseconds after which the same request may succeed, where known.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            HubError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            HubError::TooManyConnections { .. } | HubError::RoomFull { .. } => Some(5000),
            HubError::Unavailable(_) => Some(5000),
            _ => None,
        }
    }

    /// Whole seconds for a `Retry-After` header (at least 1), where the
    /// error has one.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_ms().map(|ms| ms.div_ceil(1000).max(1))
    }

    /// The body sent to the client. Internal details stay out.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code(),
            message: self.to_string(),
        }
    }

    /// The close reason: the stable code, which always fits the 123 bytes
    /// a close frame allows (checked for every variant in the tests).
    pub fn close_reason(&self) -> &'static str {
        self.code()
    }
}

impl fmt::Display for HubError {
    /// The text for a person. Never includes internal details.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HubError::*;
        match self {
            InvalidRoom => f.write_str("room names are 1-128 characters of A-Z a-z 0-9 . _ : -"),
            InvalidEvent => f.write_str("event names are 1-64 characters of A-Z a-z 0-9 . _ : -"),
            ReservedEvent(name) => write!(f, "the event name '{name}' is reserved for the hub"),
            InvalidParam { name, reason } => write!(f, "{name}: {reason}"),
            InvalidJson(why) => write!(f, "the body is not valid JSON: {why}"),
            InvalidBody(why) => write!(f, "{why}"),
            UnsupportedMediaType => f.write_str("send the body as Content-Type: application/json"),
            TooLarge { limit } => write!(f, "the message exceeds {limit} bytes"),
            NotFound => f.write_str("no such route; see the README for the API"),
            MethodNotAllowed { allow } => write!(f, "this route accepts {allow}"),
            UpgradeRequired => f.write_str("this route needs a WebSocket upgrade"),
            Unauthorized(why) => write!(f, "authentication failed: {why}"),
            Forbidden(why) => write!(f, "not allowed: {why}"),
            OriginNotAllowed => f.write_str("this Origin is not in ALLOWED_ORIGINS"),
            TooManyConnections { limit } => {
                write!(f, "at most {limit} connections per user in a room")
            }
            RoomFull { limit } => write!(f, "the room holds its maximum of {limit} connections"),
            RateLimited { retry_after_ms } => {
                write!(f, "too many messages; retry in {retry_after_ms} ms")
            }
            SlowConsumer => {
                f.write_str("the connection did not keep up; reconnect with since to resume")
            }
            TokenExpired => {
                f.write_str("the token expired; reconnect with a fresh token to resume")
            }
            Disconnected => f.write_str("the app disconnected this user from the room"),
            RoomDeleted => f.write_str("the room was deleted; it starts again empty"),
            Unavailable(what) => write!(f, "{what}; retry shortly"),
            BadConfig(_) => f.write_str("the hub is misconfigured; see its log"),
            Internal(_) => f.write_str("internal error; see the hub's log"),
        }
    }
}

impl std::error::Error for HubError {}

impl From<serde_json::Error> for HubError {
    fn from(e: serde_json::Error) -> Self {
        if e.is_data() {
            HubError::InvalidBody(e.to_string())
        } else {
            HubError::InvalidJson(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_follow_the_protocol() {
        let table: &[(HubError, u16, &str)] = &[
            (HubError::InvalidRoom, 400, "invalid_room"),
            (
                HubError::ReservedEvent("join".into()),
                400,
                "reserved_event",
            ),
            (
                HubError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (HubError::TooLarge { limit: 10 }, 413, "too_large"),
            (HubError::NotFound, 404, "not_found"),
            (
                HubError::MethodNotAllowed { allow: "GET" },
                405,
                "method_not_allowed",
            ),
            (HubError::UpgradeRequired, 426, "upgrade_required"),
            (HubError::Unauthorized("expired"), 401, "unauthorized"),
            (HubError::Forbidden("room"), 403, "forbidden"),
            (
                HubError::RateLimited { retry_after_ms: 1 },
                429,
                "rate_limited",
            ),
            (HubError::RoomFull { limit: 3 }, 429, "room_full"),
            (
                HubError::TooManyConnections { limit: 5 },
                429,
                "too_many_connections",
            ),
            (HubError::Internal("db".into()), 500, "internal"),
        ];
        for (err, status, code) in table {
            assert_eq!(err.status(), *status, "{err:?}");
            assert_eq!(err.code(), *code, "{err:?}");
            assert_eq!(err.body().error, *code);
        }
    }

    #[test]
    fn internal_details_never_reach_the_body() {
        let err = HubError::Internal("sqlite: disk I/O error at /secret/path".into());
        assert!(!err.body().message.contains("secret"));
        let err = HubError::BadConfig("HUB_SECRET=hunter2".into());
        assert!(!err.body().message.contains("hunter2"));
    }

    #[test]
    fn close_codes() {
        assert_eq!(HubError::TooLarge { limit: 1 }.close_code(), CLOSE_TOO_BIG);
        assert_eq!(HubError::Forbidden("x").close_code(), CLOSE_POLICY);
        assert_eq!(HubError::Internal("x".into()).close_code(), CLOSE_INTERNAL);
        assert_eq!(HubError::SlowConsumer.close_code(), CLOSE_SLOW_CONSUMER);
        assert_eq!(HubError::TokenExpired.close_code(), CLOSE_TOKEN_EXPIRED);
        assert_eq!(HubError::TokenExpired.status(), 401);
        assert_eq!(HubError::Disconnected.close_code(), CLOSE_DISCONNECTED);
        assert_eq!(HubError::RoomDeleted.close_code(), CLOSE_ROOM_DELETED);
    }

    /// A close reason longer than 123 bytes would make the runtime throw
    /// while closing. Every variant, with the longest texts it can carry,
    /// must fit; the reason never carries the variant's free text.
    #[test]
    fn every_close_reason_fits_a_close_frame() {
        let long = "x".repeat(10_000);
        let all = [
            HubError::InvalidRoom,
            HubError::InvalidEvent,
            HubError::ReservedEvent(long.clone()),
            HubError::InvalidParam {
                name: "since",
                reason: long.clone(),
            },
            HubError::InvalidJson(long.clone()),
            HubError::InvalidBody(long.clone()),
            HubError::UnsupportedMediaType,
            HubError::TooLarge { limit: usize::MAX },
            HubError::NotFound,
            HubError::MethodNotAllowed { allow: "GET" },
            HubError::UpgradeRequired,
            HubError::Unauthorized("x"),
            HubError::Forbidden("x"),
            HubError::OriginNotAllowed,
            HubError::TooManyConnections { limit: u32::MAX },
            HubError::RoomFull { limit: u32::MAX },
            HubError::RateLimited {
                retry_after_ms: u64::MAX,
            },
            HubError::SlowConsumer,
            HubError::TokenExpired,
            HubError::Disconnected,
            HubError::RoomDeleted,
            HubError::Unavailable("x"),
            HubError::BadConfig(long.clone()),
            HubError::Internal(long),
        ];
        for err in &all {
            let reason = err.close_reason();
            assert!(reason.len() <= 123, "{err:?}");
            assert!(!reason.contains("xxx"), "{err:?} leaks its text");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let at = |ms| HubError::RateLimited { retry_after_ms: ms }.retry_after_s();
        assert_eq!(at(1), Some(1));
        assert_eq!(at(1000), Some(1));
        assert_eq!(at(1001), Some(2));
        assert_eq!(HubError::NotFound.retry_after_s(), None);
    }
}
