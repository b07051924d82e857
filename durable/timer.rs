//! A timeout for futures that [`crate::settle::settle`] runs: one whose
//! waker is registered on every poll.
//!
//! `worker::Delay` keeps the waker of its first poll only. A room's
//! handling is first polled on the spot with a no-op waker, and a held
//! long poll would then never learn that its time was up. [`Timeout`]
//! fires a one-shot channel from the runtime's `setTimeout` instead; the
//! channel's receiver takes each poll's waker.
//!
//! Invariant: a dropped `Timeout` clears its runtime timer first, so its
//! callback is never called after the closure is gone.

use futures_channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use worker::{js_sys, web_sys};

/// Completes once `duration` has passed (or at once if the runtime would
/// not set the timer: a wait that cannot be timed must not hang).
pub struct Timeout {
    fired: oneshot::Receiver<()>,
    /// The runtime's timer id, cleared on drop.
    id: Option<i32>,
    _callback: Closure<dyn FnMut()>,
}

impl Timeout {
    pub fn after(duration: Duration) -> Timeout {
        let (fire, fired) = oneshot::channel();
        let mut fire = Some(fire);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(fire) = fire.take() {
                let _ = fire.send(());
            }
        });
        let ms = i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
        let id = global()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok();
        Timeout {
            fired,
            id,
            _callback: callback,
        }
    }
}

impl Future for Timeout {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.id.is_none() {
            return Poll::Ready(());
        }
        // A cancelled sender (the callback dropped unfired) cannot happen
        // while `self` lives; either way the wait is over.
        Pin::new(&mut self.fired).poll(cx).map(|_| ())
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            global().clear_timeout_with_handle(id);
        }
    }
}

fn global() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
}
