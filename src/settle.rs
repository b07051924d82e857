//! Running an export's handling on the spot: the value itself when the
//! handling completes without waiting, a promise of it otherwise.
//!
//! An `async` wasm-bindgen export (what `#[durable_object]` and
//! `#[event(fetch)]` generate) always hands its future to
//! `wasm_bindgen_futures`: a JavaScript promise, a queued microtask to
//! poll the future, and one more promise to resolve, even when nothing in
//! the handling waits (a `304`, a publish with its body already read, a
//! WebSocket frame). The runtime accepts a handler's plain value as well as
//! a promise, so [`settle`] polls the future once, here, and only a future
//! that is still pending becomes a promise (issue 19: this was most of
//! what separated a room's `304` from the hand-written JavaScript floor's).
//!
//! The poll here is one synchronous stretch, so it runs in a
//! `crate::clock` frame: the clock is read at most once in it.
//!
//! Invariant, for every future given to [`settle`]: each of its leaf
//! futures registers the waker of *every* poll, not only the first one.
//! The first poll runs with a no-op waker; the executor that takes a
//! pending future over polls it again with its own. `JsFuture` and
//! `futures_channel` receivers do; `worker::Delay` does not (it keeps its
//! first waker), so the room's timeouts use `durable::timer` instead.

use std::future::Future;
use std::task::{Context, Poll};
use wasm_bindgen::JsValue;
use worker::{js_sys, wasm_bindgen_futures};

/// The handling's value if it completes now, else a promise of it; an
/// error that happened now is returned as a rejected promise, as an
/// `async` export's would be.
pub fn settle<F>(handling: F) -> JsValue
where
    F: Future<Output = Result<JsValue, JsValue>> + 'static,
{
    let mut handling = Box::pin(handling);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    // The poll is one synchronous stretch: the clock is read once in it.
    let polled = {
        let _frame = crate::clock::frame();
        handling.as_mut().poll(&mut cx)
    };
    match polled {
        Poll::Ready(Ok(value)) => value,
        Poll::Ready(Err(error)) => js_sys::Promise::reject(&error).into(),
        Poll::Pending => wasm_bindgen_futures::future_to_promise(handling).into(),
    }
}
