//! Server-Sent Events streams: `GET /rooms/{room}/events`.
//!
//! Each stream is a pull-based body over a bounded [`SseBuffer`]: the room
//! pushes frames in, the runtime pulls them out as the client reads.
//!
//! The runtime never tells the room that an SSE client left
//! (docs/PROTOCOL.md, "Runtime notes"),
//! so while any stream is open a heartbeat loop runs every
//! `HEARTBEAT_SECS`: it queues a comment on every stream and drops every
//! stream that still holds a frame from `STALL_TICKS` heartbeats ago (the
//! runtime stopped pulling: the client is gone or not reading). A stream
//! whose buffer would exceed its byte bound is dropped at once. So a dead
//! or stalled stream is forgotten within `STALL_TICKS + 1` heartbeats and
//! the room's memory per stream stays bounded; the client, if alive,
//! reconnects with `Last-Event-ID` and loses nothing.
//!
//! Coalescing: the runtime's cost is per write (one chunk through the
//! stream and onto the socket, ~45 µs each), not per byte, so a room with
//! many streams queues each message on every stream and wakes the streams
//! once per *flush*, a little later: every frame queued by then (a burst,
//! or a stream still behind) leaves in one chunk, one write. The flush is
//! deferred by about what one flush costs ([`COALESCE_US_PER_STREAM`] per
//! stream, at most [`MAX_COALESCE_MS`]), so under load the room keeps time
//! to accept publishes between flushes and each flush carries more events;
//! a room with few streams (a window under 1 ms) wakes them at once. Events
//! in one chunk are still complete SSE events, so this needs no protocol
//! change.
//!
//! Invariants: a stream's frames are queued in id order and drained in
//! that order, several to a chunk; the replay of a new stream and its
//! registration for live messages happen in one synchronous stretch, so
//! nothing falls between them; a queued frame is woken for within
//! [`MAX_COALESCE_MS`].

use super::RoomObject;
use crate::core::cursor::Cursor;
use crate::core::error::HubError;
use crate::core::protocol::ResetInfo;
use crate::core::request::RoomRequest;
use crate::core::sse::{
    encode_close, encode_event, encode_reset, retry_frame, SseBuffer, HEARTBEAT_FRAME,
};
use crate::core::transport::{Ending, Handed, StoredMessage, Transport, TransportKind};
use crate::respond::Cors;
use futures_util::Stream;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use worker::{wasm_bindgen_futures, web_sys, Delay, Headers, Response};

/// How long a browser waits before reconnecting a dropped stream.
const RETRY_MS: u32 = 1000;

/// The flush window per open stream: about the runtime's cost of one
/// stream write, so a flush is deferred by about what it will cost.
const COALESCE_US_PER_STREAM: u64 = 25;

/// The longest a queued frame waits for its flush.
const MAX_COALESCE_MS: u64 = 50;

/// How long the next flush waits for more frames, with `streams` open;
/// zero (wake at once) while that is under a millisecond.
fn coalesce_window(streams: usize) -> Duration {
    let us = (streams as u64).saturating_mul(COALESCE_US_PER_STREAM);
    if us < 1000 {
        Duration::ZERO
    } else {
        Duration::from_micros(us).min(Duration::from_millis(MAX_COALESCE_MS))
    }
}

/// The smallest per-stream buffer bound; larger when messages may be larger.
const MIN_STREAM_BUFFER_BYTES: usize = 1 << 20;

/// The byte bound of one stream's buffer.
pub fn stream_buffer_bytes(max_message_bytes: usize) -> usize {
    MIN_STREAM_BUFFER_BYTES.max(4 * max_message_bytes)
}

/// One open stream, shared by the room (which pushes) and the response
/// body (which the runtime pulls).
struct Subscriber {
    /// The caller's connection key, for `MAX_CONNECTIONS_PER_USER`.
    key: Option<String>,
    /// The token's deadline (seconds): the stream ends with `event: close`
    /// `token_expired` then.
    expires_s: Option<u64>,
    buffer: SseBuffer,
    waker: Option<Waker>,
    /// No more frames: the body ends once the buffer is drained.
    closed: bool,
}

type Shared = Rc<RefCell<Subscriber>>;

impl Subscriber {
    /// Drops the stream: its queued frames are discarded (the client
    /// resumes from its Last-Event-ID) and the body ends at the next pull.
    /// The runtime may never pull a dead stream again and so keep the body
    /// alive; emptying the buffer here keeps that from holding its frames.
    fn drop_stream(&mut self) {
        self.closed = true;
        self.buffer.clear();
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The room's SSE streams: shared with the heartbeat loop, which runs
/// while any stream is open.
#[derive(Default)]
pub struct StreamHub {
    streams: Rc<RefCell<Streams>>,
}

impl Transport for StreamHub {
    fn kind(&self) -> TransportKind {
        TransportKind::Sse
    }

    fn connections(&self) -> usize {
        self.streams.borrow().count()
    }

    fn connections_of(&self, key: &str) -> usize {
        self.streams.borrow().count_of(key)
    }

    fn deliver(&self, message: &StoredMessage) -> Handed {
        let (handed, window) = {
            let mut streams = self.streams.borrow_mut();
            let Some(handed) = streams.queue(message) else {
                return Handed::default();
            };
            let window = coalesce_window(streams.count());
            if window.is_zero() {
                streams.flush();
                return handed;
            }
            if streams.flush_scheduled {
                return handed;
            }
            streams.flush_scheduled = true;
            (handed, window)
        };
        let streams = self.streams.clone();
        wasm_bindgen_futures::spawn_local(async move {
            Delay::from(window).await;
            streams.borrow_mut().flush();
        });
        handed
    }

    fn next_expiry(&self) -> Option<u64> {
        let streams = self.streams.borrow();
        streams
            .subscribers
            .iter()
            .filter_map(|s| s.borrow().expires_s)
            .min()
    }

    /// Queues `event: close` `{"code": <why>}` on every stream `which`
    /// names; each ends once the client read it.
    fn end(&self, which: &Ending<'_>) -> usize {
        let frame = encode_close(which.reason().code());
        let tick = self.tick();
        let mut ended = 0;
        self.streams.borrow_mut().subscribers.retain(|sub| {
            let mut s = sub.borrow_mut();
            if !which.ends(s.key.as_deref(), s.expires_s) {
                return true;
            }
            if s.buffer.push(frame.clone(), tick).is_err() {
                s.buffer.clear();
            }
            s.closed = true;
            s.wake();
            ended += 1;
            false
        });
        ended
    }
}

/// Every open stream of the room and the heartbeat clock.
#[derive(Default)]
struct Streams {
    subscribers: Vec<Shared>,
    /// Heartbeats since the room started.
    tick: u64,
    heartbeat_running: bool,
    /// A flush is due (see the module docs, "Coalescing").
    flush_scheduled: bool,
}

impl Streams {
    fn count(&self) -> usize {
        self.subscribers.len()
    }

    /// Open streams of one connection key.
    fn count_of(&self, key: &str) -> usize {
        self.subscribers
            .iter()
            .filter(|s| s.borrow().key.as_deref() == Some(key))
            .count()
    }

    /// Queues a message on every stream, without waking them (the caller
    /// flushes); drops the streams it would overflow. Returns on how many
    /// streams it was queued, `None` when nothing was.
    fn queue(&mut self, message: &StoredMessage) -> Option<Handed> {
        if self.subscribers.is_empty() {
            return None;
        }
        let Some(frame) = encode_event(message.id, &message.event, &message.envelope) else {
            worker::console_error!("message {} cannot be framed for SSE", message.id);
            return None;
        };
        Some(Handed {
            count: self.push_all(&frame, false),
            bytes: frame.len(),
        })
    }

    /// Wakes every stream with queued frames: each drains them all as one
    /// chunk at its next pull.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        for sub in &self.subscribers {
            let mut s = sub.borrow_mut();
            if s.buffer.buffered_bytes() > 0 {
                s.wake();
            }
        }
    }

    /// Queues `frame` on every open stream, waking each at once if `wake`;
    /// drops the streams it would overflow. Returns on how many.
    fn push_all(&mut self, frame: &str, wake: bool) -> usize {
        let tick = self.tick;
        self.subscribers.retain(|sub| {
            let mut s = sub.borrow_mut();
            if s.closed {
                return false;
            }
            match s.buffer.push(frame.to_owned(), tick) {
                Ok(()) => {
                    if wake {
                        s.wake();
                    }
                    true
                }
                Err(_) => {
                    s.drop_stream();
                    false
                }
            }
        });
        self.subscribers.len()
    }

    /// One heartbeat: drop stalled streams, queue a comment on the rest.
    /// Returns whether any stream is left.
    fn heartbeat(&mut self) -> bool {
        self.tick += 1;
        let tick = self.tick;
        self.subscribers.retain(|sub| {
            let mut s = sub.borrow_mut();
            if s.buffer.stalled(tick) {
                s.drop_stream();
                return false;
            }
            !s.closed
        });
        self.push_all(HEARTBEAT_FRAME, true) > 0
    }
}

/// The response body of one stream.
struct SseBody {
    sub: Shared,
}

impl Stream for SseBody {
    type Item = Result<Vec<u8>, worker::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.sub.borrow_mut();
        if let Some(chunk) = s.buffer.drain() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SseBody {
    /// The runtime cancelled the body: forget the stream at the next push.
    fn drop(&mut self) {
        if let Ok(mut s) = self.sub.try_borrow_mut() {
            s.closed = true;
        }
    }
}

impl StreamHub {
    /// Heartbeats since the room started (the age stamp of queued frames).
    fn tick(&self) -> u64 {
        self.streams.borrow().tick
    }

    /// Registers a stream for live messages and makes sure the heartbeat
    /// runs; it stops by itself when the last stream is gone.
    fn add(&self, sub: Shared, heartbeat_secs: u32) {
        let streams = self.streams.clone();
        {
            let mut h = streams.borrow_mut();
            h.subscribers.push(sub);
            if h.heartbeat_running {
                return;
            }
            h.heartbeat_running = true;
        }
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                Delay::from(Duration::from_secs(u64::from(heartbeat_secs))).await;
                let mut h = streams.borrow_mut();
                if !h.heartbeat() {
                    h.heartbeat_running = false;
                    break;
                }
            }
        });
    }
}

impl RoomObject {
    /// Opens a stream: `retry`, then `reset` if the cursor is older than the
    /// kept history, then the replay, then live messages and heartbeats.
    /// The caller was admitted (connection limits) before.
    pub(super) fn on_open_events(
        &self,
        request: &RoomRequest,
        cursor: Cursor,
        cors: &Cors,
    ) -> Result<web_sys::Response, HubError> {
        let settings = self.settings()?;
        let mut buffer = SseBuffer::new(stream_buffer_bytes(settings.max_message_bytes));
        let tick = self.streams.tick();
        let _ = buffer.push(retry_frame(RETRY_MS), tick);
        let complete = self.replay_into(&mut buffer, cursor, tick)?;
        let sub = Rc::new(RefCell::new(Subscriber {
            key: request.connection_key(),
            expires_s: request.expires_s,
            buffer,
            waker: None,
            // A replay that did not fit ends the stream after it; the client
            // reconnects from its Last-Event-ID and gets the rest.
            closed: !complete,
        }));
        if complete {
            self.streams.add(sub.clone(), settings.heartbeat_secs);
        }

        let headers = Headers::new();
        headers.set("Content-Type", "text/event-stream; charset=utf-8")?;
        headers.set("Cache-Control", "no-cache")?;
        // Ask proxies (nginx and the like) not to buffer the stream.
        headers.set("X-Accel-Buffering", "no")?;
        let resp = Response::from_stream(SseBody { sub })?.with_headers(headers);
        cors.apply_to(resp.headers())?;
        Ok(resp.into())
    }

    /// Queues the reset signal and the replay for `cursor`. Returns `false`
    /// when the replay did not fit the stream's buffer.
    fn replay_into(
        &self,
        buffer: &mut SseBuffer,
        cursor: Cursor,
        tick: u64,
    ) -> Result<bool, HubError> {
        let Cursor::After(since) = cursor else {
            return Ok(true);
        };
        let (mut count, mut bytes) = (0, 0);
        let complete = self.with_log(|l| {
            let resume = l.position.resume(since);
            if let Some(reset) = ResetInfo::of(resume) {
                let _ = buffer.push(encode_reset(reset), tick);
            }
            l.replay(resume.replay_after(), |message| {
                // Stored envelopes always frame; `None` would be a corrupt row.
                let Some(frame) = encode_event(message.id, &message.event, &message.envelope)
                else {
                    return true;
                };
                let len = frame.len() as u64;
                let fits = buffer.push(frame, tick).is_ok();
                if fits {
                    count += 1;
                    bytes += len;
                }
                fits
            })
        })??;
        self.meter
            .borrow_mut()
            .delivered(TransportKind::Sse, count, bytes);
        Ok(complete)
    }
}
