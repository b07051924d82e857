//! Polling and long-polling: `GET /rooms/{room}/messages`.
//!
//! A conditional poll whose `If-None-Match` matches the room's ETag is
//! answered `304` from memory: one string comparison, no storage read, no
//! body. A long poll (`wait=S`) with nothing new is held on a one-shot
//! waiter that the next accepted message fires, whatever transport
//! published it, and released at its deadline at the latest.

use super::RoomObject;
use crate::core::auth::Identity;
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
        identity: &Identity,
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
                self.check_connection_limit(identity)?;
                holding = true;
            }
            self.wait_for_message(identity.user(), Duration::from_millis(deadline_ms - now))
                .await;
        }
    }

    /// Holds until the next accepted message or the timeout, whichever is first.
    async fn wait_for_message(&self, user: Option<&str>, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push(tx);
        self.held_polls.set(self.held_polls.get() + 1);
        if let Some(u) = user {
            *self
                .held_polls_by_user
                .borrow_mut()
                .entry(u.to_owned())
                .or_insert(0) += 1;
        }
        let _ = select(rx, Delay::from(timeout)).await;
        self.held_polls.set(self.held_polls.get() - 1);
        if let Some(u) = user {
            let mut by_user = self.held_polls_by_user.borrow_mut();
            if let Some(n) = by_user.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    by_user.remove(u);
                }
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
