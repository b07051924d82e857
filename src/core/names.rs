//! Room and event names: validated once, then carried as newtypes.
//!
//! Both use the alphabet `A-Z a-z 0-9 . _ : -`, which needs no escaping in a
//! URL path, an SSE `event:` line, a SQLite text column or a log line, so a
//! valid name can never inject anything anywhere it is written.
//!
//! Pure: no I/O.

use super::error::HubError;
use std::fmt;

/// The longest room name accepted.
pub const MAX_ROOM_NAME_CHARS: usize = 128;
/// The longest event name accepted.
pub const MAX_EVENT_NAME_CHARS: usize = 64;
/// The event name of a publish that names none.
pub const DEFAULT_EVENT: &str = "message";
/// Event names the hub uses for its own signals; publishers may not use them.
pub const RESERVED_EVENTS: &[&str] = &[
    "reset", "join", "leave", "presence", "error", "open", "close",
];

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-')
}

fn is_valid_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(is_name_char)
}

/// A valid room name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomName(String);

impl RoomName {
    /// Validates a room name exactly as written (already percent-decoded).
    pub fn parse(s: &str) -> Result<Self, HubError> {
        if is_valid_name(s, MAX_ROOM_NAME_CHARS) {
            Ok(RoomName(s.to_owned()))
        } else {
            Err(HubError::InvalidRoom)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A name read back is validated again: only valid names exist.
impl<'de> serde::Deserialize<'de> for RoomName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoomName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid, non-reserved event name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    /// Validates an event name a publisher asked for; `None` gives `message`.
    pub fn parse(s: Option<&str>) -> Result<Self, HubError> {
        let Some(s) = s else {
            return Ok(EventName(DEFAULT_EVENT.to_owned()));
        };
        if !is_valid_name(s, MAX_EVENT_NAME_CHARS) {
            return Err(HubError::InvalidEvent);
        }
        if RESERVED_EVENTS.contains(&s) {
            return Err(HubError::ReservedEvent(s.to_owned()));
        }
        Ok(EventName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        let table: &[(&str, bool)] = &[
            ("lobby", true),
            ("chat:general", true),
            ("A-Z_0.9:x", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("a b", false),
            ("a/b", false),
            ("a%3Ab", false),
            ("é", false),
            ("a\nb", false),
            ("..", true),
        ];
        for (name, ok) in table {
            assert_eq!(RoomName::parse(name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn event_names() {
        assert_eq!(EventName::parse(None).unwrap().as_str(), "message");
        assert_eq!(
            EventName::parse(Some("score.update")).unwrap().as_str(),
            "score.update"
        );
        assert_eq!(EventName::parse(Some("")), Err(HubError::InvalidEvent));
        assert_eq!(
            EventName::parse(Some(&"e".repeat(65))),
            Err(HubError::InvalidEvent)
        );
        assert_eq!(
            EventName::parse(Some("x\ndata: 1")),
            Err(HubError::InvalidEvent)
        );
        for reserved in RESERVED_EVENTS {
            assert_eq!(
                EventName::parse(Some(reserved)),
                Err(HubError::ReservedEvent(reserved.to_string()))
            );
        }
    }
}
