//! WebSocket sessions with the Hibernation API: the [`SocketHub`], and the
//! room's handlers for socket events.
//!
//! Each socket is accepted by the room's state (not by this instance), so
//! the room can hibernate while sockets stay open. Everything a socket must
//! remember lives in its attachment ([`SocketMeta`]); the hub's index
//! (presence, connections per key, who is catching up) lives in memory and
//! is rebuilt from the attachments after a wake. What goes out on a socket
//! is one of `core::frames::ServerMsg`.
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
use super::log::Origin;
use super::{now_ms, random_u32, RoomObject};
use crate::core::cursor::Seq;
use crate::core::error::{HubError, CLOSE_NORMAL};
use crate::core::frames::ServerMsg;
use crate::core::limits::{BatchBudget, REPLAY_BATCH_BYTES};
use crate::core::presence::{Announce, Presence};
use crate::core::protocol::ResetInfo;
use crate::core::request::RoomRequest;
use crate::core::session::{on_binary_frame, on_text_frame, SocketMeta, Step};
use crate::core::settings::Settings;
use crate::core::transport::{Ending, Handed, StoredMessage, Transport, TransportKind};
use crate::core::webhooks::EventType;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::DurableObjectState;
use worker::{web_sys, Response, State, WebSocket, WebSocketIncomingMessage, WebSocketPair};

/// The room's WebSockets as the room counts them: presence, the
/// connections of each connection key (for `MAX_CONNECTIONS_PER_USER`), and
/// the sockets still catching up. Adding and removing are idempotent per
/// connection id.
pub struct SocketIndex {
    pub presence: Presence,
    conns_by_key: HashMap<String, BTreeSet<String>>,
    catching_up: BTreeSet<String>,
    /// `(token deadline, conn)` of the sockets opened with a token.
    expiries: BTreeSet<(u64, String)>,
}

impl SocketIndex {
    fn new(presence_limit: u32) -> Self {
        SocketIndex {
            presence: Presence::new(presence_limit),
            conns_by_key: HashMap::new(),
            catching_up: BTreeSet::new(),
            expiries: BTreeSet::new(),
        }
    }

    fn add(&mut self, meta: &SocketMeta) -> Announce {
        if meta.replay_after.is_some() {
            self.catching_up.insert(meta.conn.clone());
        }
        if let Some(deadline) = meta.expires_s {
            self.expiries.insert((deadline, meta.conn.clone()));
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
        if let Some(deadline) = meta.expires_s {
            self.expiries.remove(&(deadline, meta.conn.clone()));
        }
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

/// The room's WebSockets.
pub struct SocketHub {
    /// The room's state: it holds the sockets (Hibernation API).
    state: State,
    /// Built on first use after a start or wake (see [`SocketHub::with_index`]).
    index: RefCell<Option<SocketIndex>>,
    /// Sockets found without a readable attachment when the index was
    /// built (none unless an attachment was written by another version):
    /// they are not in the index but still get broadcasts.
    unindexed: Cell<usize>,
    presence_limit: u32,
    max_message_bytes: usize,
    /// Members who came or went since the room last looked, with the room
    /// they are in (for `member.joined` / `member.left` webhooks); only
    /// kept when webhooks are on.
    member_changes: RefCell<Vec<MemberChange>>,
    track_members: bool,
}

/// A member's first socket opened or last closed, in a room.
pub struct MemberChange {
    pub kind: EventType,
    pub member: String,
    pub room: String,
}

impl SocketHub {
    pub fn new(state: &State, settings: &Settings, track_members: bool) -> Self {
        SocketHub {
            // A second handle on the same runtime object (not a copy).
            state: State::from(
                JsValue::from(state.as_raw()).unchecked_into::<DurableObjectState>(),
            ),
            index: RefCell::new(None),
            unindexed: Cell::new(0),
            presence_limit: settings.presence_max_members,
            max_message_bytes: settings.max_message_bytes,
            member_changes: RefCell::new(Vec::new()),
            track_members,
        }
    }

    /// Runs `f` on the index, rebuilding it from the sockets' attachments
    /// first if this instance has not yet (after a wake).
    fn with_index<T>(&self, f: impl FnOnce(&mut SocketIndex) -> T) -> T {
        let mut guard = self.index.borrow_mut();
        let index = guard.get_or_insert_with(|| {
            let mut index = SocketIndex::new(self.presence_limit);
            let mut unindexed = 0;
            for ws in self.state.get_websockets() {
                match ws.deserialize_attachment::<SocketMeta>() {
                    Ok(Some(meta)) => {
                        index.add(&meta);
                    }
                    _ => unindexed += 1,
                }
            }
            self.unindexed.set(unindexed);
            index
        });
        f(index)
    }

    /// Every member, sorted (not cut at `PRESENCE_MAX_MEMBERS`).
    pub fn members(&self) -> Vec<String> {
        self.with_index(|s| s.presence.members())
    }

    /// Accepts a new socket carrying `meta` and adds it to the index;
    /// returns the client end, the server end, and what to announce.
    fn accept(&self, meta: &SocketMeta) -> Result<(WebSocket, WebSocket, Announce), HubError> {
        // The index must be built before the new socket is accepted, or a
        // rebuild would count it and its join would never be announced.
        self.with_index(|_| ());
        let pair = WebSocketPair::new()?;
        self.state.accept_websocket_with_tags(&pair.server, &[]);
        if let Err(e) = pair.server.serialize_attachment(meta) {
            close(&pair.server, &HubError::Internal(String::new()));
            return Err(e.into());
        }
        let member = meta.presence_name();
        let (announce, joined) = self.with_index(|s| {
            let had = s.presence.has(&member);
            (s.add(meta), !had)
        });
        if joined {
            self.member_changed(EventType::MemberJoined, member, &meta.room);
        }
        Ok((pair.client, pair.server, announce))
    }

    /// Forgets a socket that closed or failed; announces what presence
    /// decides (a `leave` when it was its member's last, below the limit).
    fn gone(&self, ws: &WebSocket) {
        let Ok(Some(meta)) = ws.deserialize_attachment::<SocketMeta>() else {
            return;
        };
        let member = meta.presence_name();
        let (announce, left) = self.with_index(|s| {
            let had = s.presence.has(&member);
            let announce = s.remove(&meta);
            (announce, had && !s.presence.has(&member))
        });
        if left {
            self.member_changed(EventType::MemberLeft, member.clone(), &meta.room);
        }
        self.announce(announce, &member, &meta.conn);
    }

    fn member_changed(&self, kind: EventType, member: String, room: &str) {
        if self.track_members {
            self.member_changes.borrow_mut().push(MemberChange {
                kind,
                member,
                room: room.to_owned(),
            });
        }
    }

    /// The member changes since the last call.
    pub fn take_member_changes(&self) -> Vec<MemberChange> {
        std::mem::take(&mut *self.member_changes.borrow_mut())
    }

    /// The socket finished its replay: live messages reach it again.
    fn caught_up(&self, conn: &str) {
        self.with_index(|s| s.catching_up.remove(conn));
    }

    /// Tells every socket but `conn`'s what presence decided (see
    /// `core::presence`): a join, a leave, a snapshot, or nothing.
    fn announce(&self, announce: Announce, member: &str, conn: &str) {
        let text = match announce {
            Announce::Nothing => return,
            Announce::Join => ServerMsg::Join { user: member }.to_text(),
            Announce::Leave => ServerMsg::Leave { user: member }.to_text(),
            Announce::Snapshot => self.presence().to_text(),
        };
        self.broadcast(&text, Some(conn), false);
    }

    /// The members as a `presence` frame's text.
    fn presence(&self) -> PresenceSnapshot {
        self.with_index(|s| PresenceSnapshot {
            listed: s.presence.listed(),
            count: s.presence.member_count(),
        })
    }

    /// Sends one frame to one socket (counted toward its slow-consumer bound).
    fn send(&self, ws: &WebSocket, msg: &ServerMsg<'_>) {
        fanout::send(&self.state, ws, &msg.to_text());
    }

    /// Sends one frame unless the socket is over its slow-consumer bound:
    /// then it is closed (`4008`), leaves presence, and this returns false.
    fn send_bounded(&self, ws: &WebSocket, text: &str) -> bool {
        if fanout::send_within(&self.state, ws, text, self.max_message_bytes) {
            return true;
        }
        self.gone(ws);
        false
    }

    /// Sends one frame to every socket but `except_conn`'s (and those
    /// catching up, when told); the sockets dropped as slow consumers leave
    /// presence. Returns how many sockets it sent to.
    fn broadcast(&self, text: &str, except_conn: Option<&str>, skip_catching_up: bool) -> usize {
        let (dropped, sent) = fanout::broadcast(
            &self.state,
            text,
            except_conn,
            skip_catching_up,
            self.max_message_bytes,
        );
        for ws in dropped {
            self.gone(&ws);
        }
        sent
    }
}

/// Presence as listed in `welcome` and `presence` frames.
struct PresenceSnapshot {
    listed: Vec<String>,
    count: usize,
}

impl PresenceSnapshot {
    fn to_text(&self) -> String {
        ServerMsg::Presence {
            members: &self.listed,
            count: self.count,
        }
        .to_text()
    }
}

impl Transport for SocketHub {
    fn kind(&self) -> TransportKind {
        TransportKind::WebSocket
    }

    fn connections(&self) -> usize {
        self.with_index(|s| s.connections())
    }

    fn connections_of(&self, key: &str) -> usize {
        self.with_index(|s| s.connections_of(key))
    }

    /// One `message` frame, built once, to every socket not catching up
    /// (those get it through their replay).
    fn deliver(&self, message: &StoredMessage) -> Handed {
        let (nobody, skip_catching_up) =
            self.with_index(|s| (s.connections() == 0, s.anyone_catching_up()));
        if nobody && self.unindexed.get() == 0 {
            // No frame to build and no call into the runtime: every other
            // socket the room holds is in the index (see `accept`).
            return Handed { count: 0, bytes: 0 };
        }
        let text = ServerMsg::Message {
            envelope: &message.envelope,
        }
        .to_text();
        Handed {
            count: self.broadcast(&text, None, skip_catching_up),
            bytes: text.len(),
        }
    }

    fn next_expiry(&self) -> Option<u64> {
        self.with_index(|s| s.expiries.first().map(|(deadline, _)| *deadline))
    }

    /// The `error` frame, then the close code of `which`'s reason (4001,
    /// 4003, 4004), to every socket it names; they leave presence.
    fn end(&self, which: &Ending<'_>) -> usize {
        if let Ending::Expired { now_s } = which {
            // The index knows the deadlines: most alarms end nothing here.
            let due = self.with_index(|s| s.expiries.first().is_some_and(|(d, _)| d <= now_s));
            if !due {
                return 0;
            }
        }
        let err = which.reason();
        let mut ended = 0;
        for ws in self.state.get_websockets() {
            let Ok(Some(meta)) = ws.deserialize_attachment::<SocketMeta>() else {
                continue;
            };
            if which.ends(meta.connection_key().as_deref(), meta.expires_s) {
                self.send(&ws, &ServerMsg::error(&err, None));
                close(&ws, &err);
                self.gone(&ws);
                ended += 1;
            }
        }
        ended
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
    /// `GET /rooms/{room}/ws` with an upgrade: accept, welcome, replay. The
    /// caller was admitted (connection limits) before.
    pub(super) fn on_open_socket(
        &self,
        request: &RoomRequest,
        since: Option<Seq>,
    ) -> Result<web_sys::Response, HubError> {
        let settings = self.settings()?;
        let mut meta = SocketMeta::new(
            request.room.as_str().to_owned(),
            format!("{:08x}", random_u32()),
            request.identity.user().map(str::to_owned),
            request.identity.can_publish(),
            &settings,
            now_ms(),
        );
        meta.addr = request.addr.clone();
        meta.expires_s = request.expires_s;
        // The first replay batch is read before the socket is accepted: a
        // storage failure then refuses the upgrade instead of leaving an
        // accepted socket in presence (a ghost member).
        let replay = since.map(|s| self.replay_batch(s)).transpose()?;
        meta.replay_after = replay.as_ref().and_then(|b| b.more_after).map(|s| s.0);
        let last_id = self.with_log(|l| l.position.last_id())?;

        let (client, server, announce) = self.sockets.accept(&meta)?;
        let presence = self.sockets.presence();
        let welcome = meta.welcome(
            request.room.as_str(),
            last_id,
            &presence.listed,
            presence.count,
            &settings,
        );
        self.sockets.send(&server, &welcome);
        if let Some(batch) = &replay {
            self.send_batch(&server, batch);
        }
        // The new socket learnt presence from its welcome.
        self.sockets
            .announce(announce, &meta.presence_name(), &meta.conn);
        Ok(Response::from_websocket(client)?.into())
    }

    /// A frame from a client.
    pub(super) fn on_socket_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        let Ok(Some(mut meta)) = ws.deserialize_attachment::<SocketMeta>() else {
            close(ws, &HubError::Internal("socket without attachment".into()));
            return;
        };
        let settings = match self.settings().and_then(|s| {
            self.load_named(&meta.room)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                close(ws, &e);
                return;
            }
        };
        // The alarm ends expired sockets; a frame that comes first (a late
        // or lost alarm) must not act on an expired token either.
        if meta
            .expires_s
            .is_some_and(|deadline| deadline <= now_ms() / 1000)
        {
            let err = HubError::TokenExpired;
            self.sockets.send(ws, &ServerMsg::error(&err, None));
            close(ws, &err);
            self.sockets.gone(ws);
            return;
        }
        let step = match &message {
            WebSocketIncomingMessage::String(text) => {
                on_text_frame(&mut meta, text, &settings, now_ms())
            }
            WebSocketIncomingMessage::Binary(bytes) => {
                on_binary_frame(&mut meta, bytes.len(), &settings, now_ms())
            }
        };
        // Any frame is a sign of life, except `more`: asking for the next
        // batch does not show the last one was read (only a `ping` the
        // runtime answered does), so replay stays within the slow-consumer
        // bound however fast a client asks.
        if !matches!(step, Step::More { .. }) {
            fanout::seen(ws);
        }
        // The budgets changed; keep them across hibernation.
        if let Err(e) = ws.serialize_attachment(&meta) {
            worker::console_error!("attachment: {}", e);
        }
        match step {
            Step::Reply(text) => fanout::send(&self.state, ws, &text),
            Step::Close { err, cid } => {
                self.sockets
                    .send(ws, &ServerMsg::error(&err, cid.as_deref()));
                close(ws, &err);
                self.sockets.gone(ws);
            }
            Step::Presence => {
                let text = self.sockets.presence().to_text();
                fanout::send(&self.state, ws, &text);
            }
            Step::More { after } => self.continue_replay(ws, &mut meta, after),
            Step::Publish { publish, cid } => {
                let origin = Origin {
                    from: meta.user.as_deref(),
                    scope: meta.user.as_deref().unwrap_or(""),
                    key: cid.as_deref(),
                };
                let accepted = self
                    .budgets
                    .take(meta.budget_key().as_deref(), &settings, now_ms())
                    .and_then(|()| self.accept(&publish, &origin, settings.max_message_bytes));
                match accepted {
                    Ok(accepted) => {
                        self.sockets
                            .send(ws, &ServerMsg::ack(cid.as_deref(), accepted.id));
                        if let Some(message) = &accepted.stored {
                            self.published(message);
                        }
                    }
                    Err(e) => self.sockets.send(ws, &ServerMsg::error(&e, cid.as_deref())),
                }
            }
        }
    }

    /// Reads the replay batch that follows `since`: the reset signal the
    /// cursor calls for, then messages until `REPLAY_BATCH_BYTES`.
    /// Synchronous, so no message can be published in between.
    fn replay_batch(&self, since: Seq) -> Result<ReplayBatch, HubError> {
        self.with_log(|l| {
            let resume = l.position.resume(since);
            let mut frames = Vec::new();
            let mut budget = BatchBudget::new(REPLAY_BATCH_BYTES);
            let mut last = resume.replay_after();
            let complete = l.replay(resume.replay_after(), |message| {
                let frame = ServerMsg::Message {
                    envelope: &message.envelope,
                }
                .to_text();
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
        })?
    }

    /// Sends a replay batch, ended by `more` when history remains.
    /// The history frames count toward the socket's slow-consumer bound: a
    /// socket that asks for batches without reading them is dropped
    /// (`4008`) like one that stops reading live messages.
    fn send_batch(&self, ws: &WebSocket, batch: &ReplayBatch) {
        if let Some(reset) = batch.reset {
            self.sockets.send(ws, &ServerMsg::reset(reset));
        }
        let mut bytes = 0;
        let mut sent = 0;
        for frame in &batch.frames {
            if !self.sockets.send_bounded(ws, frame) {
                break;
            }
            bytes += frame.len() as u64;
            sent += 1;
        }
        self.meter
            .borrow_mut()
            .delivered(TransportKind::WebSocket, sent, bytes);
        if sent < batch.frames.len() {
            return;
        }
        if let Some(after) = batch.more_after {
            self.sockets.send(ws, &ServerMsg::more(after));
        }
    }

    /// The client read a batch and sent `more`: the next batch, and when
    /// it reaches the newest message the socket takes live messages again,
    /// in the same synchronous stretch, so none falls between.
    fn continue_replay(&self, ws: &WebSocket, meta: &mut SocketMeta, after: Seq) {
        let batch = match self.replay_batch(after) {
            Ok(batch) => batch,
            Err(e) => {
                // Without its next batch the socket would wait forever:
                // close it (1011) and let the client resume with `since`.
                self.sockets.send(ws, &ServerMsg::error(&e, None));
                close(ws, &e);
                self.sockets.gone(ws);
                return;
            }
        };
        meta.replay_after = batch.more_after.map(|s| s.0);
        if let Err(e) = ws.serialize_attachment(&*meta) {
            worker::console_error!("attachment: {}", e);
        }
        if meta.replay_after.is_none() {
            self.sockets.caught_up(&meta.conn);
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
        self.sockets.gone(ws);
    }

    /// A socket failed: forget it.
    pub(super) fn on_socket_error(&self, ws: &WebSocket) {
        self.sockets.gone(ws);
    }
}

pub(super) fn close(ws: &WebSocket, err: &HubError) {
    let _ = ws.close(Some(err.close_code()), Some(err.close_reason()));
}
