//! Polling and long-polling: `GET /rooms/{room}/messages`.
//!
//! A conditional poll whose `If-None-Match` matches the room's ETag is
//! answered `304` from memory: one string comparison, no storage read, no
//! body. A long poll (`wait=S`) with nothing new is held on a one-shot
//! waiter that the next accepted message fires, whatever transport
//! published it, and released at its deadline at the latest.
//!
//! Invariants: a waiter is in the room's list only while its poll is held
//! (a timed-out poll removes its own), so a quiet room's list never grows;
//! a `200` page holds at most `POLL_PAGE_BYTES` of messages (plus one, so
//! every page makes progress), and a client continues from its last id.

use super::{Caller, RoomObject};
use crate::core::cursor::Cursor;
use crate::core::error::HubError;
use crate::core::etag::if_none_match;
use crate::core::protocol::{poll_body, ResetInfo};
use crate::core::query::PollQuery;
use crate::respond::{self, Cors};
use futures_channel::oneshot;
use futures_util::future::select;
use std::time::Duration;
use worker::{Delay, Request, Response};

/// What a poll should answer right now.
enum Answer {
    /// `304`: the client's ETag is current.
    NotModified(String),
    /// Nothing newer than the client's cursor yet.
    NothingNew,
    /// A `200` is due.
    Messages,
}

impl RoomObject {
    pub(super) async fn on_poll(
        &self,
        req: &Request,
        url: &worker::Url,
        caller: &Caller,
        cors: &Cors,
    ) -> Result<Response, HubError> {
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let max_wait = self.with_room(|r| r.settings.long_poll_max_secs)?;
        let query = PollQuery::parse(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            max_wait,
        )?;
        let validator = req.headers().get("If-None-Match").ok().flatten();

        let deadline_ms = super::now_ms() + u64::from(query.wait_secs) * 1000;
        let mut holding = false;
        loop {
            let answer = self.with_room(|r| {
                if let Some(v) = validator.as_deref() {
                    if if_none_match(v, r.log.etag()) {
                        return Answer::NotModified(r.log.etag().to_owned());
                    }
                }
                match query.cursor {
                    Cursor::After(since) if since == r.log.last_id() => Answer::NothingNew,
                    _ => Answer::Messages,
                }
            })?;
            let now = super::now_ms();
            let waiting = !matches!(answer, Answer::Messages) && now < deadline_ms;
            if !waiting {
                return match answer {
                    Answer::NotModified(etag) => {
                        respond::not_modified(&etag, cors).map_err(respond::internal)
                    }
                    _ => self.messages(&query, cors),
                };
            }
            if !holding {
                // A held poll is a live connection; an immediate one is not.
                self.check_connection_limit(caller)?;
                holding = true;
            }
            self.wait_for_message(
                caller.connection_key(),
                Duration::from_millis(deadline_ms - now),
            )
            .await;
        }
    }

    /// Holds until the next accepted message or the timeout, whichever is
    /// first. The poll counts as a live connection of `key` meanwhile.
    async fn wait_for_message(&self, key: Option<String>, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        self.waiters.borrow_mut().insert(id, tx);
        *self.held_polls.borrow_mut().entry(key.clone()).or_insert(0) += 1;
        let _ = select(rx, Delay::from(timeout)).await;
        // Fired waiters were taken out by `deliver`; a timed-out one is
        // still there and must not outlive its poll.
        self.waiters.borrow_mut().remove(&id);
        let mut held = self.held_polls.borrow_mut();
        if let Some(n) = held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&key);
            }
        }
    }

    /// The `200` answer: messages after the cursor (with `reset` when it is
    /// older than the kept history), or the newest `limit` without one.
    fn messages(&self, query: &PollQuery, cors: &Cors) -> Result<Response, HubError> {
        let (body, etag) = self.with_room(|r| -> Result<(String, String), HubError> {
            let (joined, reset) = match query.cursor {
                Cursor::Latest => (r.store.joined(None, query.limit)?, None),
                Cursor::After(since) => {
                    let resume = r.log.resume(since);
                    let reset = ResetInfo::of(resume);
                    (
                        r.store.joined(Some(resume.replay_after()), query.limit)?,
                        reset,
                    )
                }
            };
            let body = poll_body(&r.name, &joined, r.log.last_id(), reset);
            Ok((body, r.log.etag().to_owned()))
        })??;
        let resp = respond::json_text(200, body, cors).map_err(respond::internal)?;
        resp.headers()
            .set("ETag", &etag)
            .map_err(respond::internal)?;
        Ok(resp)
    }
}
