//! Request bodies that the room answers without reading.
//!
//! A room request's body reaches the room's Durable Object as a stream that
//! the runtime pumps, on the Worker's behalf, from the Worker's own request.
//! Once the Worker's response has gone out, the runtime forbids reading that
//! request (it is neutered: `Can't read from request stream after response
//! has been sent`). So if the room answers before the body is read, the
//! Worker passes the answer on while the pump still waits to read, and the
//! pump fails as an uncaught error. Under `wrangler dev` the dev proxy's next
//! request to the Worker then fails as well, which the proxy reports as
//! `503 Your worker restarted mid-request` (or, for a GET, holds until the
//! next reload).
//!
//! The room therefore reads every body it did not use to the end before it
//! answers ([`discard`]); then the pump has finished before the response
//! leaves. Cancelling the body instead is not enough: the pump still fails.
//! A body the Worker never hands on (an error the Worker answers itself) is
//! never read by anyone, and the runtime drops it without complaint; the
//! Worker also refuses what it can before forwarding (415, and 413 by
//! `Content-Length`), so refused bodies do not travel at all.

use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys;

/// Reads the body of `req` to its end and drops it, if it has one that
/// nobody read or took. Never fails: a body that cannot be read is left.
/// The bytes go to a sink in JavaScript, never into WebAssembly memory.
pub async fn discard(req: &web_sys::Request) {
    if req.body_used() {
        return;
    }
    let Some(body) = req.body() else {
        return;
    };
    if body.locked() {
        return;
    }
    let drained = web_sys::WritableStream::new().map(|sink| body.pipe_to(&sink));
    let result = match drained {
        Ok(promise) => JsFuture::from(promise).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        worker::console_warn!("could not drain an unread request body: {:?}", e);
    }
}
