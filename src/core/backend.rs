//! The app's backend: its key (`HUB_API_KEY`) and the requests only it may
//! make (docs/PROTOCOL.md, "The backend's key").
//!
//! Invariants:
//! - A key is a server credential: it is recognised only in
//!   `Authorization: Bearer`, compared in constant time, and a key found in
//!   `?token=` is refused outright (it has leaked into a URL).
//! - The key-only requests (`POST /publish`, `POST /rooms/{room}/disconnect`,
//!   `DELETE /rooms/{room}`) need the key in every mode, open mode included:
//!   `403` when no key is configured or another credential is presented,
//!   `401` without credentials ([`admit_backend`]). The key alone does not
//!   close the hub.
//! - Only the backend may set `from` on a publish; a user's `from` is
//!   ignored (the room decides, see [`author`]).
//! - A backend publish is idempotent under its own scope, which no user's
//!   `sub` can equal (a `sub` has no control characters).
//!
//! Pure: takes the configured keys and the request's parts.

use super::auth::Identity;
use super::error::HubError;
use super::names::RoomName;
use serde::Deserialize;
use serde_json::Value;

/// Rooms one `POST /publish` may name.
pub const MAX_PUBLISH_ROOMS: usize = 100;
/// The longest `from` the backend may set.
pub const MAX_FROM_CHARS: usize = 128;
/// The idempotency scope of backend publishes: not a possible `sub`.
pub const BACKEND_SCOPE: &str = "\u{1}backend";

/// Whether `presented` is one of `keys`, compared in constant time per
/// key (the length of a key is not a secret).
pub fn is_api_key(presented: &str, keys: &[String]) -> bool {
    keys.iter().fold(false, |found, key| {
        let same = key.len() == presented.len()
            && key
                .bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        found | same
    })
}

/// Parses `HUB_API_KEY`: keys separated by commas (several during a
/// rotation); blanks are ignored.
pub fn parse_api_keys(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a key-only request may go on: `presented_key` when it carries
/// one of the configured keys, `other_credential` when it carries
/// something else (a user token, a ticket, a wrong key). `403` when no key
/// is configured or another credential is presented, `401` without any.
pub fn admit_backend(
    presented_key: bool,
    keys_configured: bool,
    other_credential: bool,
) -> Result<(), HubError> {
    if !keys_configured {
        return Err(HubError::Forbidden(
            "no HUB_API_KEY is configured: this endpoint is disabled",
        ));
    }
    if presented_key {
        return Ok(());
    }
    if other_credential {
        return Err(HubError::Forbidden("this endpoint needs the backend key"));
    }
    Err(HubError::Unauthorized(
        "this endpoint needs the backend key",
    ))
}

/// Who a message is from: the user's `sub`; for the backend, the `from` its
/// body sets (or none); for anyone else, none. A user's own `from` is
/// ignored.
pub fn author<'a>(identity: &'a Identity, body_from: Option<&'a str>) -> Option<&'a str> {
    match identity {
        Identity::User { sub, .. } => Some(sub),
        Identity::Backend => body_from,
        Identity::Anonymous => None,
    }
}

/// Checks a `from` the backend sets: 1–128 characters, no control
/// characters (it is shown to users and logged).
pub fn check_from(from: &str) -> Result<(), HubError> {
    let chars = from.chars().count();
    if chars == 0 || chars > MAX_FROM_CHARS || from.chars().any(char::is_control) {
        return Err(HubError::InvalidBody(format!(
            "from must be 1-{MAX_FROM_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// The body of `POST /publish`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishMany {
    pub rooms: Vec<String>,
    #[serde(default)]
    pub event: Option<String>,
    pub data: Value,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl PublishMany {
    /// Parses and checks the request as a whole (a room name that is not
    /// valid is that room's own error, see [`PublishMany::targets`]).
    pub fn parse(body: &str) -> Result<PublishMany, HubError> {
        let many: PublishMany = serde_json::from_str(body)?;
        if many.rooms.is_empty() || many.rooms.len() > MAX_PUBLISH_ROOMS {
            return Err(HubError::InvalidBody(format!(
                "rooms must name 1-{MAX_PUBLISH_ROOMS} rooms"
            )));
        }
        if let Some(key) = many.idempotency_key.as_deref() {
            super::protocol::idempotency_key("idempotency_key", key)?;
        }
        if let Some(from) = many.from.as_deref() {
            check_from(from)?;
        }
        Ok(many)
    }

    /// Each named room, in request order, or why it cannot be published to.
    pub fn targets(&self) -> Vec<(String, Result<RoomName, HubError>)> {
        self.rooms
            .iter()
            .map(|name| (name.clone(), RoomName::parse(name)))
            .collect()
    }

    /// The body each room receives: the message and the backend's `from`.
    pub fn room_body(&self) -> String {
        let mut body = serde_json::json!({ "data": self.data });
        if let Some(event) = &self.event {
            body["event"] = Value::from(event.as_str());
        }
        if let Some(from) = &self.from {
            body["from"] = Value::from(from.as_str());
        }
        body.to_string()
    }
}

/// The body of `POST /rooms/{room}/disconnect`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    pub user: String,
}

impl DisconnectBody {
    pub fn parse(body: &str) -> Result<DisconnectBody, HubError> {
        let parsed: DisconnectBody = serde_json::from_str(body)?;
        if parsed.user.is_empty() || parsed.user.len() > 256 {
            return Err(HubError::InvalidBody("user must be a token's sub".into()));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        parse_api_keys(" key-new-0123456789 , ,key-old-0123456789")
    }

    #[test]
    fn keys_rotate_and_compare_exactly() {
        assert_eq!(keys().len(), 2);
        assert!(is_api_key("key-new-0123456789", &keys()));
        assert!(is_api_key("key-old-0123456789", &keys()));
        for wrong in [
            "",
            "key-new-012345678",
            "key-new-01234567890",
            "KEY-NEW-0123456789",
        ] {
            assert!(!is_api_key(wrong, &keys()), "{wrong}");
        }
        assert!(!is_api_key("anything", &[]));
    }

    #[test]
    fn key_only_requests_need_the_key_in_every_mode() {
        assert_eq!(admit_backend(true, true, false), Ok(()));
        let status =
            |key, configured, other| admit_backend(key, configured, other).unwrap_err().status();
        assert_eq!(
            status(false, true, true),
            403,
            "a user token or a wrong key"
        );
        assert_eq!(status(false, true, false), 401, "no credentials");
        for other in [false, true] {
            assert_eq!(status(false, false, other), 403, "no key configured");
        }
    }

    #[test]
    fn only_the_backend_sets_from() {
        let user = Identity::User {
            sub: "alice".into(),
            can_publish: true,
        };
        assert_eq!(author(&user, Some("admin")), Some("alice"));
        assert_eq!(author(&Identity::Backend, Some("system")), Some("system"));
        assert_eq!(author(&Identity::Backend, None), None);
        assert_eq!(author(&Identity::Anonymous, Some("admin")), None);
        assert!(check_from("system").is_ok());
        assert!(check_from("").is_err());
        assert!(check_from(&"x".repeat(129)).is_err());
        assert!(check_from("a\nb").is_err());
        // The backend's scope is no user's.
        assert!(BACKEND_SCOPE.chars().any(char::is_control));
    }

    #[test]
    fn publish_many_bodies() {
        let ok = PublishMany::parse(
            r#"{"rooms":["a","b c"],"event":"news","data":{"x":1},"from":"system","idempotency_key":"k-1"}"#,
        )
        .unwrap();
        let targets = ok.targets();
        assert!(targets[0].1.is_ok());
        assert_eq!(targets[1].1.as_ref().unwrap_err().code(), "invalid_room");
        let body: Value = serde_json::from_str(&ok.room_body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"data": {"x": 1}, "event": "news", "from": "system"})
        );
        let too_many = format!(
            r#"{{"rooms":{},"data":1}}"#,
            serde_json::to_string(&vec!["r"; 101]).unwrap()
        );
        let refused = [
            (r#"{"rooms":[],"data":1}"#, "invalid_body"),
            (too_many.as_str(), "invalid_body"),
            (r#"{"rooms":["a"]}"#, "invalid_body"),
            (r#"{"rooms":["a"],"data":1,"extra":2}"#, "invalid_body"),
            (
                r#"{"rooms":["a"],"data":1,"idempotency_key":"has space"}"#,
                "invalid_param",
            ),
            (r#"{"rooms":["a"],"data":1,"from":""}"#, "invalid_body"),
            ("nope", "invalid_json"),
        ];
        for (body, code) in refused {
            assert_eq!(PublishMany::parse(body).unwrap_err().code(), code, "{body}");
        }
        assert_eq!(
            DisconnectBody::parse(r#"{"user":"bob"}"#).unwrap().user,
            "bob"
        );
        assert!(DisconnectBody::parse(r#"{"user":""}"#).is_err());
        assert!(DisconnectBody::parse(r#"{}"#).is_err());
    }
}
