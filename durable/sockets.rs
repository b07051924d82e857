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
//! - What one socket can make the room send is bounded: its own requests
//!   cost its frame budget, and `fanout` drops a socket that shows no sign
//!   of reading (4008). Its replay goes out in batches of at most
//!   `REPLAY_BATCH_BYTES` (and always one message): a batch that leaves
//!   history behind ends with `more`, and the next is sent when the client
//!   asks for it, so a socket that does not read holds one batch, not the
//!   whole history. While a socket catches up (`SocketMeta::replay_after`)
//!   live messages are held back from it: they reach it through its replay,
//!   in order. The first batch is read before the socket is accepted, so a
//!   failed replay refuses the upgrade and leaves no ghost member.

use super::fanout;
use super::room::Origin;
use super::{now_ms, query_param, random_u32, Caller, RoomObject};
use crate::core::cursor::parse_seq;
use crate::core::cursor::Seq;
use crate::core::error::{HubError, CLOSE_NORMAL};
use crate::core::limits::{BatchBudget, REPLAY_BATCH_BYTES};
use crate::core::names::RoomName;
use crate::core::presence::{Announce, Presence};
use crate::core::protocol::ResetInfo;
use crate::core::session::{
    ack_frame, error_frame, join_frame, leave_frame, message_frame, more_frame, on_binary_frame,
    on_text_frame, presence_frame, reset_frame, welcome_frame, SocketMeta, Step,
};
use crate::respond;
use std::collections::{BTreeSet, HashMap};
use worker::{Response, WebSocket, WebSocketIncomingMessage, WebSocketPair};

/// The room's WebSockets as the room counts them: presence, the
/// connections of each connection key (for `MAX_CONNECTIONS_PER_USER`), and
/// the sockets still catching up. Adding and removing are idempotent per
/// connection id.
pub struct SocketIndex {
    pub presence: Presence,
    conns_by_key: HashMap<String, BTreeSet<String>>,
    catching_up: BTreeSet<String>,
}

impl SocketIndex {
    fn new(presence_limit: u32) -> Self {
        SocketIndex {
            presence: Presence::new(presence_limit),
            conns_by_key: HashMap::new(),
            catching_up: BTreeSet::new(),
        }
    }

    fn add(&mut self, meta: &SocketMeta) -> Announce {
        if meta.replay_after.is_some() {
            self.catching_up.insert(meta.conn.clone());
        }
        if let Some(key) = meta.connection_key() {
            self.conns_by_key
                .entry(key)
                .or_default()
                .insert(meta.conn.clone());
        }
        self.presence.add(&meta.presence_name(), &meta.conn)
    }

    fn remove(&mut self, meta: &SocketMeta) -> Announce {
        self.catching_up.remove(&meta.conn);
        if let Some(key) = meta.connection_key() {
            if let Some(conns) = self.conns_by_key.get_mut(&key) {
                conns.remove(&meta.conn);
                if conns.is_empty() {
                    self.conns_by_key.remove(&key);
                }
            }
        }
        self.presence.remove(&meta.presence_name(), &meta.conn)
    }

    /// Open sockets of one connection key.
    pub fn connections_of(&self, key: &str) -> usize {
        self.conns_by_key.get(key).map_or(0, BTreeSet::len)
    }

    /// Open sockets in the room.
    pub fn connections(&self) -> usize {
        self.presence.connections()
    }

    /// Whether some socket is still catching up (live messages must then
    /// skip it).
    pub fn anyone_catching_up(&self) -> bool {
        !self.catching_up.is_empty()
    }
}

/// One bounded stretch of a socket's replay.
struct ReplayBatch {
    /// The signal for a cursor older than the kept history (or ahead of it).
    reset: Option<ResetInfo>,
    /// `message` frames, in id order, at most `REPLAY_BATCH_BYTES` (or one).
    frames: Vec<String>,
    /// When history remains after the batch: the last id it holds.
    more_after: Option<Seq>,
}

impl RoomObject {
    /// Runs `f` on the room's socket index, rebuilding it from the sockets'
    /// attachments first if this instance has not yet (after a wake).
    pub(super) fn with_sockets<T>(
        &self,
        f: impl FnOnce(&mut SocketIndex) -> T,
    ) -> Result<T, HubError> {
        let mut guard = self.sockets.borrow_mut();
        let index = match guard.take() {
            Some(index) => index,
            None => {
                let limit = crate::config::settings(&self.env)?.presence_max_members;
                let mut index = SocketIndex::new(limit);
                for ws in self.state.get_websockets() {
                    if let Ok(Some(meta)) = ws.deserialize_attachment::<SocketMeta>() {
                        index.add(&meta);
                    }
                }
                index
            }
        };
        Ok(f(guard.insert(index)))
    }

    /// `GET /rooms/{room}/ws` with an upgrade: accept, welcome, replay.
    pub(super) fn on_open_socket(
        &self,
        url: &worker::Url,
        caller: &Caller,
    ) -> Result<Response, HubError> {
        let since = query_param(url, "since")
            .map(|v| parse_seq("since", &v))
            .transpose()?;
        self.check_connection_limit(caller)?;
        // One look at the room: everything this upgrade needs from it.
        let (settings, name, last_id) =
            self.with_room(|r| (r.settings.clone(), r.name.clone(), r.log.last_id()))?;
        let mut meta = SocketMeta::new(
            name.as_str().to_owned(),
            format!("{:08x}", random_u32()),
            caller.identity.user().map(str::to_owned),
            caller.identity.can_publish(),
            &settings,
            now_ms(),
        );
        meta.addr = caller.addr.clone();

        // The first replay batch is read before the socket is accepted: a
        // storage failure then refuses the upgrade instead of leaving an
        // accepted socket in presence (a ghost member).
        let replay = since.map(|s| self.replay_batch(s)).transpose()?;
        meta.replay_after = replay.as_ref().and_then(|b| b.more_after).map(|s| s.0);

        // Presence must be built before the new socket is accepted, or a
        // rebuild would count it and its join would never be announced.
        self.with_sockets(|_| ())?;
        let pair = WebSocketPair::new().map_err(respond::internal)?;
        let server = pair.server;
        self.state.accept_websocket_with_tags(&server, &[]);
        if let Err(e) = server.serialize_attachment(&meta) {
            close(&server, &HubError::Internal(String::new()));
            return Err(respond::internal(e));
        }

        let member = meta.presence_name();
        let (announce, listed, count) = self.with_sockets(|s| {
            let announce = s.add(&meta);
            (announce, s.presence.listed(), s.presence.member_count())
        })?;
        self.send(
            &server,
            &welcome_frame(name.as_str(), last_id, &meta, &listed, count, &settings),
        );
        if let Some(batch) = &replay {
            self.send_batch(&server, batch);
        }
        // The new socket learnt presence from its welcome.
        self.announce(announce, &member, &meta.conn);
        Response::from_websocket(pair.client).map_err(respond::internal)
    }

    /// A frame from a client.
    pub(super) fn on_socket_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        let Ok(Some(mut meta)) = ws.deserialize_attachment::<SocketMeta>() else {
            close(ws, &HubError::Internal("socket without attachment".into()));
            return;
        };
        if let Err(e) = RoomName::parse(&meta.room).and_then(|name| self.load(name, None)) {
            close(ws, &e);
            return;
        }
        fanout::seen(ws);
        let step = match self.with_room(|r| match &message {
            WebSocketIncomingMessage::String(text) => {
                on_text_frame(&mut meta, text, &r.settings, now_ms())
            }
            WebSocketIncomingMessage::Binary(bytes) => {
                on_binary_frame(&mut meta, bytes.len(), &r.settings, now_ms())
            }
        }) {
            Ok(step) => step,
            Err(e) => {
                close(ws, &e);
                return;
            }
        };
        // The budgets changed; keep them across hibernation.
        if let Err(e) = ws.serialize_attachment(&meta) {
            worker::console_error!("attachment: {}", e);
        }
        match step {
            Step::Reply(frame) => self.send(ws, &frame),
            Step::Close { err, cid } => {
                self.send(ws, &error_frame(&err, cid.as_deref()));
                close(ws, &err);
                self.on_socket_gone(ws);
            }
            Step::Presence => {
                match self.with_sockets(|s| (s.presence.listed(), s.presence.member_count())) {
                    Ok((listed, count)) => self.send(ws, &presence_frame(&listed, count)),
                    Err(e) => self.send(ws, &error_frame(&e, None)),
                }
            }
            Step::More { after } => self.continue_replay(ws, &mut meta, after),
            Step::Publish { publish, cid } => {
                let origin = Origin {
                    from: meta.user.as_deref(),
                    key: cid.as_deref(),
                };
                let accepted = self
                    .with_room(|r| r.settings.clone())
                    .and_then(|settings| {
                        self.take_publish_token(meta.budget_key().as_deref(), &settings)
                    })
                    .and_then(|()| self.with_room(|r| r.accept(&publish, &origin, now_ms())))
                    .and_then(|r| r);
                match accepted {
                    Ok(accepted) => {
                        self.send(ws, &ack_frame(cid.as_deref(), accepted.id));
                        if let Some(message) = &accepted.stored {
                            self.deliver(message);
                        }
                    }
                    Err(e) => self.send(ws, &error_frame(&e, cid.as_deref())),
                }
            }
        }
    }

    /// Reads the replay batch that follows `since`: the reset signal the
    /// cursor calls for, then messages until `REPLAY_BATCH_BYTES`.
    /// Synchronous, so no message can be published in between.
    fn replay_batch(&self, since: Seq) -> Result<ReplayBatch, HubError> {
        let resume = self.with_room(|r| r.log.resume(since))?;
        let mut frames = Vec::new();
        let mut budget = BatchBudget::new(REPLAY_BATCH_BYTES);
        let mut last = resume.replay_after();
        let complete = self.replay(resume.replay_after(), |message| {
            let frame = message_frame(&message.envelope);
            if !budget.admit(frame.len()) {
                return false;
            }
            frames.push(frame);
            last = message.id;
            true
        })?;
        Ok(ReplayBatch {
            reset: ResetInfo::of(resume),
            frames,
            more_after: (!complete).then_some(last),
        })
    }

    /// Sends a replay batch, ended by `more` when history remains.
    fn send_batch(&self, ws: &WebSocket, batch: &ReplayBatch) {
        if let Some(reset) = batch.reset {
            self.send(ws, &reset_frame(reset));
        }
        for frame in &batch.frames {
            self.send(ws, frame);
        }
        if let Some(after) = batch.more_after {
            self.send(ws, &more_frame(after));
        }
    }

    /// The client read a batch and sent `more`: the next batch, and when
    /// it reaches the newest message the socket takes live messages again,
    /// in the same synchronous stretch, so none falls between.
    fn continue_replay(&self, ws: &WebSocket, meta: &mut SocketMeta, after: Seq) {
        let batch = match self.replay_batch(after) {
            Ok(batch) => batch,
            Err(e) => return self.send(ws, &error_frame(&e, None)),
        };
        meta.replay_after = batch.more_after.map(|s| s.0);
        if let Err(e) = ws.serialize_attachment(&*meta) {
            worker::console_error!("attachment: {}", e);
        }
        if meta.replay_after.is_none() {
            let _ = self.with_sockets(|s| s.catching_up.remove(&meta.conn));
        }
        self.send_batch(ws, &batch);
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
        if let Ok(announce) = self.with_sockets(|s| s.remove(&meta)) {
            self.announce(announce, &meta.presence_name(), &meta.conn);
        }
    }

    /// Tells every socket but `conn`'s what presence decided (see
    /// `core::presence`): a join, a leave, a snapshot, or nothing.
    fn announce(&self, announce: Announce, member: &str, conn: &str) {
        let frame = match announce {
            Announce::Nothing => return,
            Announce::Join => join_frame(member),
            Announce::Leave => leave_frame(member),
            Announce::Snapshot => {
                match self.with_sockets(|s| (s.presence.listed(), s.presence.member_count())) {
                    Ok((listed, count)) => presence_frame(&listed, count),
                    Err(_) => return,
                }
            }
        };
        self.broadcast(&frame, Some(conn), false);
    }

    /// Sends one frame to one socket (counted toward its slow-consumer bound).
    fn send(&self, ws: &WebSocket, frame: &str) {
        fanout::send(&self.state, ws, frame);
    }

    /// Sends a `message` frame to every socket that is not catching up
    /// (those get it through their replay).
    pub(super) fn broadcast_message(&self, frame: &str) {
        let skip_catching_up = self
            .with_sockets(|s| s.anyone_catching_up())
            .unwrap_or(false);
        self.broadcast(frame, None, skip_catching_up);
    }

    /// Sends one frame to every socket but `except_conn`'s (and those
    /// catching up, when told); the sockets dropped as slow consumers leave
    /// presence.
    fn broadcast(&self, frame: &str, except_conn: Option<&str>, skip_catching_up: bool) {
        let max_message_bytes = crate::config::settings(&self.env)
            .map(|s| s.max_message_bytes)
            .unwrap_or_default();
        let dropped = fanout::broadcast(
            &self.state,
            frame,
            except_conn,
            skip_catching_up,
            max_message_bytes,
        );
        for ws in dropped {
            self.on_socket_gone(&ws);
        }
    }
}

pub(super) fn close(ws: &WebSocket, err: &HubError) {
    let _ = ws.close(Some(err.close_code()), Some(err.close_reason()));
}
