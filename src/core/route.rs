//! Routing: which endpoint a request path and method name.
//!
//! The Worker and the room's Durable Object both route with this module,
//! so they can never disagree about what a path means. Room names are
//! percent-decoded once here and then validated.
//!
//! Pure: takes the path and method as strings.

use super::error::HubError;
use super::names::RoomName;
use percent_encoding::percent_decode_str;

/// A room request: `/rooms/{room}/…`, served by the room's Durable Object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub room: RoomName,
    pub endpoint: Endpoint,
}

/// The endpoints of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /rooms/{room}`.
    State,
    /// `GET|POST /rooms/{room}/messages`.
    Messages,
    /// `GET /rooms/{room}/ws`.
    Socket,
    /// `GET /rooms/{room}/events`.
    Events,
    /// `POST /rooms/{room}/ticket`.
    Ticket,
    /// `POST /rooms/{room}/disconnect` (the backend's key).
    Disconnect,
}

/// The HTTP methods the hub distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Delete,
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// What a room request asks for, once the method is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadState,
    Poll,
    Publish,
    OpenSocket,
    OpenEvents,
    /// A connect ticket for this room, for the token in `Authorization`.
    IssueTicket,
    /// End one user's live connections (the backend's key).
    Disconnect,
    /// Erase the room and end every connection (the backend's key).
    DeleteRoom,
}

impl Action {
    /// Whether only the app's backend (`HUB_API_KEY`) may ask for this.
    pub fn needs_backend(self) -> bool {
        matches!(self, Action::Disconnect | Action::DeleteRoom)
    }
}

impl Endpoint {
    /// The `Allow` header of this endpoint.
    pub fn allow(self) -> &'static str {
        match self {
            Endpoint::State => "GET, DELETE, OPTIONS",
            Endpoint::Messages => "GET, POST, OPTIONS",
            Endpoint::Ticket | Endpoint::Disconnect => "POST, OPTIONS",
            _ => "GET, OPTIONS",
        }
    }

    /// The action for `method`, or 405. `OPTIONS` (CORS preflight) is
    /// answered before this by the Worker.
    pub fn action(self, method: Method) -> Result<Action, HubError> {
        let not_allowed = Err(HubError::MethodNotAllowed {
            allow: self.allow(),
        });
        match (self, method) {
            (Endpoint::State, Method::Get) => Ok(Action::ReadState),
            (Endpoint::Messages, Method::Get) => Ok(Action::Poll),
            (Endpoint::Messages, Method::Post) => Ok(Action::Publish),
            (Endpoint::Socket, Method::Get) => Ok(Action::OpenSocket),
            (Endpoint::Events, Method::Get) => Ok(Action::OpenEvents),
            (Endpoint::Ticket, Method::Post) => Ok(Action::IssueTicket),
            (Endpoint::State, Method::Delete) => Ok(Action::DeleteRoom),
            (Endpoint::Disconnect, Method::Post) => Ok(Action::Disconnect),
            _ => not_allowed,
        }
    }
}

/// Maps a URL path (as sent, still percent-encoded) to a route.
pub fn route(path: &str) -> Result<Route, HubError> {
    let Some(rest) = path.strip_prefix("/rooms/") else {
        return Err(HubError::NotFound);
    };
    let mut parts = rest.splitn(2, '/');
    let raw_room = parts.next().unwrap_or("");
    let endpoint = match parts.next() {
        None | Some("") => Endpoint::State,
        Some("messages") => Endpoint::Messages,
        Some("ws") => Endpoint::Socket,
        Some("events") => Endpoint::Events,
        Some("ticket") => Endpoint::Ticket,
        Some("disconnect") => Endpoint::Disconnect,
        Some(_) => return Err(HubError::NotFound),
    };
    let decoded = percent_decode_str(raw_room)
        .decode_utf8()
        .map_err(|_| HubError::InvalidRoom)?;
    let room = RoomName::parse(&decoded)?;
    Ok(Route { room, endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(path: &str) -> Result<(String, Endpoint), String> {
        match route(path) {
            Ok(Route { room, endpoint }) => Ok((room.to_string(), endpoint)),
            Err(e) => Err(e.code().to_string()),
        }
    }

    #[test]
    fn route_table() {
        use Endpoint::*;
        let ok: &[(&str, &str, Endpoint)] = &[
            ("/rooms/lobby", "lobby", State),
            ("/rooms/lobby/", "lobby", State),
            ("/rooms/lobby/messages", "lobby", Messages),
            ("/rooms/chat:1/ws", "chat:1", Socket),
            ("/rooms/chat%3A1/events", "chat:1", Events),
            ("/rooms/lobby/ticket", "lobby", Ticket),
        ];
        for (path, name, endpoint) in ok {
            assert_eq!(room(path), Ok((name.to_string(), *endpoint)), "{path}");
        }
        let bad: &[(&str, &str)] = &[
            ("/rooms/", "invalid_room"),
            ("/rooms//messages", "invalid_room"),
            ("/rooms/a%20b", "invalid_room"),
            ("/rooms/a%2Fb/messages", "invalid_room"),
            ("/rooms/%FF", "invalid_room"),
            ("/rooms/lobby/nope", "not_found"),
            ("/rooms/lobby/messages/1", "not_found"),
            ("/nope", "not_found"),
            ("/rooms", "not_found"),
        ];
        for (path, code) in bad {
            assert_eq!(room(path), Err(code.to_string()), "{path}");
        }
        assert_eq!(room("/"), Err("not_found".into()));
    }

    #[test]
    fn methods() {
        assert_eq!(Endpoint::Messages.action(Method::Post), Ok(Action::Publish));
        assert_eq!(Endpoint::Messages.action(Method::Get), Ok(Action::Poll));
        assert_eq!(
            Endpoint::State.action(Method::Post),
            Err(HubError::MethodNotAllowed {
                allow: "GET, DELETE, OPTIONS"
            })
        );
        assert_eq!(
            Endpoint::State.action(Method::Delete),
            Ok(Action::DeleteRoom)
        );
        assert_eq!(
            Endpoint::Disconnect.action(Method::Post),
            Ok(Action::Disconnect)
        );
        assert!(Action::Disconnect.needs_backend() && Action::DeleteRoom.needs_backend());
        assert!(!Action::Publish.needs_backend());
        assert!(Endpoint::Socket.action(Method::Other).is_err());
        assert_eq!(
            Endpoint::Ticket.action(Method::Post),
            Ok(Action::IssueTicket)
        );
        assert_eq!(
            Endpoint::Ticket.action(Method::Get),
            Err(HubError::MethodNotAllowed {
                allow: "POST, OPTIONS"
            })
        );
    }
}
