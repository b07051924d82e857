//! Server-Sent Events: frame encoding and the bounded per-stream buffer.
//!
//! Encoding invariants: every frame is a complete event ending in a blank
//! line; `data:` carries one line of compact JSON (an envelope, which never
//! holds a raw newline); `event:` carries a validated event name; `id:`
//! carries a number. So nothing a client or publisher sends can start a
//! new line in the stream. [`encode_event`] checks this rather than trust it.
//!
//! Buffer invariants: a stream's buffer never holds more than its byte
//! bound. The runtime does not tell a room when an SSE client goes away,
//! so a stream whose client stopped reading shows up as a buffer that
//! does not drain: [`SseBuffer::stalled`] reports a stream holding a frame
//! queued `STALL_TICKS` heartbeats ago, and the room drops it. A dropped
//! client resumes with `Last-Event-ID`, so nothing is lost.
//!
//! Pure: ticks are heartbeat counts passed in by the caller.

use super::cursor::Seq;
use super::protocol::ResetInfo;
use std::collections::VecDeque;

/// A stream still holding a frame this many heartbeats after it was
/// queued is dead or not reading, so a dead stream leaves within
/// `STALL_TICKS + 1` heartbeats (docs/PROTOCOL.md, "Server-Sent Events").
pub const STALL_TICKS: u64 = 3;

/// The first bytes of every stream: the client's reconnect delay.
pub fn retry_frame(retry_ms: u32) -> String {
    format!("retry: {retry_ms}\n\n")
}

/// A heartbeat: a comment line, ignored by clients, that keeps proxies
/// from timing the stream out and lets the room see whether it drains.
pub const HEARTBEAT_FRAME: &str = ":\n\n";

/// One message as an SSE event. Returns `None` if any part would break the
/// framing (cannot happen for validated names and stored envelopes).
pub fn encode_event(id: Seq, event: &str, envelope: &str) -> Option<String> {
    let breaks = |s: &str| s.bytes().any(|b| b == b'\n' || b == b'\r');
    if breaks(event) || breaks(envelope) {
        return None;
    }
    Some(format!("id: {id}\nevent: {event}\ndata: {envelope}\n\n"))
}

/// The `reset` signal. It carries no `id:` line, so the client's
/// Last-Event-ID stays on the last message it really received.
pub fn encode_reset(reset: ResetInfo) -> String {
    let data = serde_json::to_string(&reset).unwrap_or_default();
    format!("event: reset\ndata: {data}\n\n")
}

/// The hub's end-of-stream signal: `event: close` with the error code that
/// ends the stream (e.g. `token_expired`), and no `id:` line. A browser's
/// `EventSource` reconnects after the body ends; a client that listens
/// for `close` knows why and what to fix first.
pub fn encode_close(code: &str) -> String {
    let data = serde_json::json!({ "code": code }).to_string();
    format!("event: close\ndata: {data}\n\n")
}

/// Why a stream must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Pushing would exceed the stream's byte bound.
    TooManyBytes,
}

/// The frames queued for one SSE stream, bounded in bytes.
#[derive(Debug)]
pub struct SseBuffer {
    frames: VecDeque<(u64, String)>,
    bytes: usize,
    max_bytes: usize,
}

impl SseBuffer {
    pub fn new(max_bytes: usize) -> Self {
        SseBuffer {
            frames: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Queues a frame at heartbeat `tick`, or refuses when the bound would
    /// be exceeded (the caller then drops the stream).
    pub fn push(&mut self, frame: String, tick: u64) -> Result<(), Overflow> {
        if self.bytes + frame.len() > self.max_bytes {
            return Err(Overflow::TooManyBytes);
        }
        self.bytes += frame.len();
        self.frames.push_back((tick, frame));
        Ok(())
    }

    /// Takes every queued frame as one chunk, oldest first.
    pub fn drain(&mut self) -> Option<Vec<u8>> {
        if self.frames.is_empty() {
            return None;
        }
        let mut chunk = Vec::with_capacity(self.bytes);
        for (_, frame) in self.frames.drain(..) {
            chunk.extend_from_slice(frame.as_bytes());
        }
        self.bytes = 0;
        Some(chunk)
    }

    /// Discards every queued frame.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.frames.shrink_to_fit();
        self.bytes = 0;
    }

    /// Whether a frame has waited since `STALL_TICKS` heartbeats before `now_tick`.
    pub fn stalled(&self, now_tick: u64) -> bool {
        self.frames
            .front()
            .is_some_and(|(tick, _)| now_tick >= tick + STALL_TICKS)
    }

    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::ResetReason;

    #[test]
    fn the_close_signal_names_its_code_and_no_id() {
        assert_eq!(
            encode_close("token_expired"),
            "event: close\ndata: {\"code\":\"token_expired\"}\n\n"
        );
    }

    #[test]
    fn event_framing() {
        let env = r#"{"id":7,"event":"score","from":null,"ts":1,"data":"a\nb"}"#;
        assert_eq!(
            encode_event(Seq(7), "score", env).unwrap(),
            format!("id: 7\nevent: score\ndata: {env}\n\n")
        );
        assert_eq!(encode_event(Seq(1), "a\ndata: x", "{}"), None);
        assert_eq!(encode_event(Seq(1), "m", "{\"a\":\n1}"), None);
        assert_eq!(encode_event(Seq(1), "m", "{}\r"), None);
    }

    #[test]
    fn reset_has_no_id_line() {
        let frame = encode_reset(ResetInfo::new(ResetReason::HistoryExceeded, Seq(8)));
        assert_eq!(
            frame,
            "event: reset\ndata: {\"reason\":\"history_exceeded\",\"first_id\":8}\n\n"
        );
        assert!(!frame.contains("id: "));
    }

    #[test]
    fn buffer_is_bounded_in_bytes() {
        let mut b = SseBuffer::new(10);
        assert_eq!(b.push("12345".into(), 0), Ok(()));
        assert_eq!(b.push("12345".into(), 0), Ok(()));
        assert_eq!(b.push("1".into(), 0), Err(Overflow::TooManyBytes));
        assert_eq!(b.buffered_bytes(), 10);
        assert_eq!(b.drain().unwrap(), b"1234512345");
        assert_eq!(b.buffered_bytes(), 0);
        assert_eq!(b.drain(), None);
    }

    #[test]
    fn a_buffer_that_does_not_drain_is_stalled() {
        let mut b = SseBuffer::new(1000);
        assert!(!b.stalled(100), "an empty buffer is never stalled");
        b.push(HEARTBEAT_FRAME.into(), 5).unwrap();
        assert!(!b.stalled(5 + STALL_TICKS - 1));
        assert!(b.stalled(5 + STALL_TICKS));
        b.drain();
        assert!(!b.stalled(100));
        b.push("x".into(), 1).unwrap();
        b.clear();
        assert_eq!((b.buffered_bytes(), b.drain()), (0, None));
    }
}
