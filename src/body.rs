//! Request bodies: read within a byte budget, or let go of them unread.
//!
//! A body is read as a stream, chunk by chunk, and reading stops the moment
//! it passes its budget: a body without `Content-Length` (chunked) can
//! never make the isolate hold more than the budget plus one chunk. An
//! answer sent without reading the body cancels it first: under `wrangler
//! dev` an unread body that is still being sent when the answer goes out
//! fails the request stream and restarts the Worker.
//!
//! Both the Worker and the room use this; nothing else reads a body.

use crate::core::error::HubError;
use futures_util::StreamExt;
use worker::Request;

/// The body, or `TooLarge` as soon as more than `max` bytes arrived (the
/// rest is cancelled, never read).
pub async fn read_within(req: &mut Request, max: usize) -> Result<Vec<u8>, HubError> {
    if req.inner().body().is_none() {
        return Ok(Vec::new());
    }
    let mut stream = req
        .stream()
        .map_err(|e| HubError::Internal(format!("body: {e}")))?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| HubError::Internal(format!("body: {e}")))?;
        if body.len() + chunk.len() > max {
            // Dropping the stream cancels what is left of the body.
            return Err(HubError::TooLarge { limit: max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Cancels an unread body, if the request has one that nobody read or
/// forwarded (a forwarded body is locked to its new reader).
pub fn discard(req: &mut Request) {
    if let Some(body) = req.inner().body() {
        if !body.locked() {
            // Cancelling an unlocked stream cannot fail; nothing to await.
            let _ = body.cancel();
        }
    }
}
