//! Polling and long-polling: `GET /rooms/{room}/messages`, and the hub of
//! held long polls.
//!
//! A conditional poll whose `If-None-Match` matches the room's ETag is
//! answered `304` from memory: one string comparison, no storage read, no
//! body. A long poll (`wait=S`) with nothing new is held on a one-shot
//! waiter in the [`PollHub`], which the next accepted message fires,
//! whatever transport published it; it is released at its deadline at the
//! latest.
//!
//! A `200` page is answered from the room's memory of the pages it built
//! since its last message (`core::page_cache`) when it can: pollers of one
//! room mostly ask for the same page.
//!
//! Invariants: a waiter is in the hub only while its poll is held (a
//! timed-out poll removes its own), so a quiet room's hub never grows; a
//! held poll counts as a live connection of its caller, an immediate one
//! does not; a `200` page holds at most `POLL_PAGE_BYTES` of messages (plus
//! one, so every page makes progress), and a client continues from its
//! last id.

use super::timer::Timeout;
use super::{now_ms, RoomObject};
use crate::core::cursor::Cursor;
use crate::core::error::HubError;
use crate::core::etag::if_none_match;
use crate::core::page_cache::{CachedPage, PageCache};
use crate::core::protocol::poll_body;
use crate::core::query::PollQuery;
use crate::core::request::RoomRequest;
use crate::core::transport::{Ending, Handed, StoredMessage, Transport, TransportKind};
use crate::respond::{self, Cors};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use worker::web_sys;

/// One held long poll: whose it is, until when its token holds, and how
/// to wake it.
struct Waiter {
    key: Option<String>,
    expires_s: Option<u64>,
    wake: oneshot::Sender<Wake>,
}

/// A registered held poll (see [`PollHub::hold`]).
struct Held {
    id: u64,
    woken: oneshot::Receiver<Wake>,
}

/// Why a held poll was woken.
enum Wake {
    /// A message was delivered: answer with what is new.
    Message,
    /// The poll was ended (its token expired, its user was disconnected,
    /// the room deleted): answer with this error.
    Ended(HubError),
}

/// The room's held long polls, by waiter id, and the pages answered
/// since the last message.
#[derive(Default)]
pub struct PollHub {
    waiters: RefCell<HashMap<u64, Waiter>>,
    next_id: Cell<u64>,
    pages: RefCell<PageCache>,
}

impl PollHub {
    /// Registers a held poll: from now on it counts as a live connection of
    /// its caller and is woken by the next delivered message.
    fn hold(&self, request: &RoomRequest) -> Held {
        let (wake, woken) = oneshot::channel();
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let waiter = Waiter {
            key: request.connection_key(),
            expires_s: request.expires_s,
            wake,
        };
        self.waiters.borrow_mut().insert(id, waiter);
        Held { id, woken }
    }

    /// Forgets the remembered pages (the room's storage is gone).
    pub fn forget_pages(&self) {
        *self.pages.borrow_mut() = PageCache::default();
    }

    /// Waits until the held poll is woken or the timeout, whichever is
    /// first. Refuses with `token_expired` when the caller's token expired
    /// first.
    async fn wait(&self, held: Held, timeout: Duration) -> Result<(), HubError> {
        let Held { id, woken } = held;
        let outcome = select(woken, Timeout::after(timeout)).await;
        // Fired waiters were taken out by `deliver`; a timed-out one is
        // still there and must not outlive its poll.
        self.waiters.borrow_mut().remove(&id);
        match outcome {
            Either::Left((Ok(Wake::Ended(err)), _)) => Err(err),
            _ => Ok(()),
        }
    }
}

impl Transport for PollHub {
    fn kind(&self) -> TransportKind {
        TransportKind::Poll
    }

    fn connections(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn connections_of(&self, key: &str) -> usize {
        self.waiters
            .borrow()
            .values()
            .filter(|w| w.key.as_deref() == Some(key))
            .count()
    }

    /// Wakes every held poll; each answers with what is new (and counts
    /// what it sends then).
    fn deliver(&self, _message: &StoredMessage) -> Handed {
        for (_, waiter) in self.waiters.borrow_mut().drain() {
            let _ = waiter.wake.send(Wake::Message);
        }
        Handed::default()
    }

    fn next_expiry(&self) -> Option<u64> {
        self.waiters
            .borrow()
            .values()
            .filter_map(|w| w.expires_s)
            .min()
    }

    /// Answers every held poll `which` names with its reason's error
    /// (`401 token_expired`, `403 disconnected`, `410 room_deleted`).
    fn end(&self, which: &Ending<'_>) -> usize {
        let mut waiters = self.waiters.borrow_mut();
        let due: Vec<u64> = waiters
            .iter()
            .filter(|(_, w)| which.ends(w.key.as_deref(), w.expires_s))
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            if let Some(waiter) = waiters.remove(id) {
                let _ = waiter.wake.send(Wake::Ended(which.reason()));
            }
        }
        due.len()
    }
}

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
        request: &RoomRequest,
        query: &PollQuery,
        validator: Option<&str>,
        cors: &Cors,
    ) -> Result<web_sys::Response, HubError> {
        let deadline_ms = now_ms() + u64::from(query.wait_secs) * 1000;
        let mut holding = false;
        loop {
            // A held poll may wake in a room deleted meanwhile.
            self.load(&request.room)?;
            let answer = self.with_log(|l| {
                let position = &l.position;
                if validator.is_some_and(|v| if_none_match(v, position.etag())) {
                    return Answer::NotModified(position.etag().to_owned());
                }
                match query.cursor {
                    Cursor::After(since) if since == position.last_id() => Answer::NothingNew,
                    _ => Answer::Messages,
                }
            })?;
            let now = now_ms();
            let waiting = !matches!(answer, Answer::Messages) && now < deadline_ms;
            if !waiting {
                return match answer {
                    Answer::NotModified(etag) => Ok(respond::not_modified(&etag, cors)),
                    _ => self.messages(query, cors),
                };
            }
            if !holding {
                // A held poll is a live connection; an immediate one is not.
                self.admit(request)?;
                holding = true;
            }
            let held = self.polls.hold(request);
            if request.expires_s.is_some() {
                // Its token may expire while it is held: the alarm must be
                // set now, not when the poll is answered.
                self.deadlines_seen.set(true);
                self.arm_alarm().await;
            }
            self.polls
                .wait(held, Duration::from_millis(deadline_ms - now))
                .await?;
        }
    }

    /// The `200` answer: messages after the cursor (with `reset` when it is
    /// older than the kept history), or the newest `limit` without one.
    fn messages(&self, query: &PollQuery, cors: &Cors) -> Result<web_sys::Response, HubError> {
        let key = (query.cursor, query.limit);
        let (body, etag, count) = self.with_log(|l| -> Result<_, HubError> {
            let etag = l.position.etag();
            if let Some(page) = self.polls.pages.borrow().get(etag, key) {
                return Ok((page.to_string(), etag.to_owned(), page.messages));
            }
            let page = l.page(query.cursor, query.limit)?;
            let body = poll_body(&l.name, &page.joined, l.position.last_id(), page.reset);
            self.polls.pages.borrow_mut().put(
                etag,
                key,
                CachedPage {
                    body: Rc::from(body.as_str()),
                    messages: page.count,
                },
            );
            Ok((body, etag.to_owned(), page.count))
        })??;
        self.meter
            .borrow_mut()
            .delivered(TransportKind::Poll, count as usize, body.len() as u64);
        Ok(respond::json_text_with(
            200,
            &body,
            &[("ETag", &etag)],
            cors,
        ))
    }
}
