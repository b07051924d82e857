//! WebSocket sessions with the Hibernation API.
//!
//! Each socket is accepted by the room's state (not by this instance), so
//! the room can hibernate while sockets stay open. Everything a socket must
//! remember lives in its attachment ([`SocketMeta`]); presence lives in
//! memory and is rebuilt from the attachments after a wake.
//!
//! Invariants:
//! - A socket's first frame is `welcome`, then `reset` if its cursor is
//!   older than the kept history, then the replay, then live messages;
//!   nothing can interleave because all of it is sent without an `.await`.
//! - Every close from a client is answered with a close frame, so clients
//!   never hang in CLOSING.
//! - `join` goes out when a member's first socket opens and `leave` when
//!   their last one closes, once each (presence is keyed by connection),
//!   while the room has at most `PRESENCE_MAX_MEMBERS` members; crossing
//!   that limit sends a `presence` snapshot instead (`core::presence`).

use super::fanout;
use super::room::Origin;
use super::{now_ms, query_param, random_u32, RoomObject};
use crate::core::auth::Identity;
use crate::core::cursor::parse_seq;
use crate::core::error::{HubError, CLOSE_NORMAL};
use crate::core::presence::{Announce, Presence};
use crate::core::protocol::ResetInfo;
use crate::core::session::{
    ack_frame, binary_frame_error, error_frame, join_frame, leave_frame, message_frame,
    on_text_frame, presence_frame, reset_frame, welcome_frame, SocketMeta, Step,
};
use crate::respond;
use worker::{Response, WebSocket, WebSocketIncomingMessage, WebSocketPair};

impl RoomObject {
    /// Runs `f` on the room's presence, rebuilding it from the sockets'
    /// attachments first if this instance has not yet (after a wake).
    pub(super) fn with_presence<T>(
        &self,
        f: impl FnOnce(&mut Presence) -> T,
    ) -> Result<T, HubError> {
        let mut guard = self.presence.borrow_mut();
        let presence = match guard.take() {
            Some(p) => p,
            None => {
                let limit = crate::config::settings(&self.env)?.presence_max_members;
                let mut p = Presence::new(limit);
                for ws in self.state.get_websockets() {
                    if let Ok(Some(meta)) = ws.deserialize_attachment::<SocketMeta>() {
                        p.add(&meta.presence_name(), &meta.conn);
                    }
                }
                p
            }
        };
        Ok(f(guard.insert(presence)))
    }

    /// `GET /rooms/{room}/ws` with an upgrade: accept, welcome, replay.
    pub(super) fn on_open_socket(
        &self,
        url: &worker::Url,
        identity: &Identity,
    ) -> Result<Response, HubError> {
        let since = query_param(url, "since")
            .map(|v| parse_seq("since", &v))
            .transpose()?;
        self.check_connection_limit(identity)?;
        let settings = self.with_room(|r| r.settings.clone())?;
        let meta = SocketMeta::new(
            format!("{:08x}", random_u32()),
            identity.user().map(str::to_owned),
            identity.can_publish(),
            &settings,
            now_ms(),
        );

        // Presence must be built before the new socket is accepted, or a
        // rebuild would count it and its join would never be announced.
        self.with_presence(|_| ())?;
        let pair = WebSocketPair::new().map_err(respond::internal)?;
        let server = pair.server;
        self.state.accept_websocket_with_tags(&server, &[]);
        server
            .serialize_attachment(&meta)
            .map_err(respond::internal)?;

        let member = meta.presence_name();
        let (announce, listed, count) =
            self.with_presence(|p| (p.add(&member, &meta.conn), p.listed(), p.member_count()))?;
        let (welcome, replay_from, reset) = self.with_room(|r| {
            let welcome = welcome_frame(r.name.as_str(), r.log.last_id(), &meta, &listed, count);
            match since.map(|s| r.log.resume(s)) {
                None => (welcome, None, None),
                Some(resume) => (welcome, Some(resume.replay_after()), ResetInfo::of(resume)),
            }
        })?;
        send(&server, &welcome);
        if let Some(reset) = reset {
            send(&server, &reset_frame(reset));
        }
        if let Some(after) = replay_from {
            self.replay(after, |message| {
                send(&server, &message_frame(&message.envelope));
                true
            })?;
        }
        // The new socket learnt presence from its welcome.
        self.announce(announce, &member, &meta.conn);
        Response::from_websocket(pair.client).map_err(respond::internal)
    }

    /// A frame from a client.
    pub(super) fn on_socket_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        if let Err(e) = self.load(None, None) {
            close(ws, &e);
            return;
        }
        let Ok(Some(mut meta)) = ws.deserialize_attachment::<SocketMeta>() else {
            close(ws, &HubError::Internal("socket without attachment".into()));
            return;
        };
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(_) => {
                send(ws, &binary_frame_error());
                return;
            }
        };
        let step = match self.with_room(|r| on_text_frame(&mut meta, &text, &r.settings, now_ms()))
        {
            Ok(step) => step,
            Err(e) => {
                close(ws, &e);
                return;
            }
        };
        // The rate budget changed; keep it across hibernation.
        if let Err(e) = ws.serialize_attachment(&meta) {
            worker::console_error!("attachment: {}", e);
        }
        match step {
            Step::Reply(frame) => send(ws, &frame),
            Step::Close(err) => {
                send(ws, &error_frame(&err));
                close(ws, &err);
                self.on_socket_gone(ws);
            }
            Step::Presence => match self.with_presence(|p| (p.listed(), p.member_count())) {
                Ok((listed, count)) => send(ws, &presence_frame(&listed, count)),
                Err(e) => send(ws, &error_frame(&e)),
            },
            Step::Publish { publish, cid } => {
                let origin = Origin {
                    from: meta.user.as_deref(),
                    key: cid.as_deref(),
                };
                match self
                    .with_room(|r| r.accept(&publish, &origin, now_ms()))
                    .and_then(|r| r)
                {
                    Ok(accepted) => {
                        send(ws, &ack_frame(cid.as_deref(), accepted.id));
                        if let Some(message) = &accepted.stored {
                            self.deliver(message);
                        }
                    }
                    Err(e) => send(ws, &error_frame(&e)),
                }
            }
        }
    }

    /// The client closed: answer its close frame, then forget the socket.
    pub(super) fn on_socket_close(&self, ws: &WebSocket, code: usize, reason: &str) {
        // 1005 (no code), 1006 (abnormal) and 1015 (TLS) may not be sent.
        let code = match code {
            1000 | 1001 | 1002 | 1003 | 1007..=1014 | 3000..=4999 => code as u16,
            _ => CLOSE_NORMAL,
        };
        let _ = ws.close(Some(code), Some(reason));
        self.on_socket_gone(ws);
    }

    /// Forgets a socket that closed or failed; announces what presence
    /// decides (a `leave` when it was its member's last, below the limit).
    pub(super) fn on_socket_gone(&self, ws: &WebSocket) {
        let Ok(Some(meta)) = ws.deserialize_attachment::<SocketMeta>() else {
            return;
        };
        let member = meta.presence_name();
        if let Ok(announce) = self.with_presence(|p| p.remove(&member, &meta.conn)) {
            self.announce(announce, &member, &meta.conn);
        }
    }

    /// Tells every socket but `conn`'s what presence decided (see
    /// `core::presence`): a join, a leave, a snapshot, or nothing.
    fn announce(&self, announce: Announce, member: &str, conn: &str) {
        let frame = match announce {
            Announce::Nothing => return,
            Announce::Join => join_frame(member),
            Announce::Leave => leave_frame(member),
            Announce::Snapshot => match self.with_presence(|p| (p.listed(), p.member_count())) {
                Ok((listed, count)) => presence_frame(&listed, count),
                Err(_) => return,
            },
        };
        fanout::broadcast(&self.state, &frame, Some(conn));
    }
}

fn send(ws: &WebSocket, frame: &str) {
    // A send fails only on a socket that is already closing.
    let _ = ws.send_with_str(frame);
}

fn close(ws: &WebSocket, err: &HubError) {
    let _ = ws.close(Some(err.close_code()), Some(err.close_reason()));
}
