//! Request bodies: read within a byte budget, and never left half-read.
//!
//! A room request's body reaches the room's Durable Object as a stream that
//! the Worker pumps from its own request. If the room answers without
//! reading it to the end, the Worker sends the room's answer while that
//! pump still waits to read; once the response is out the runtime forbids
//! reading the request (`Can't read from request stream after response has
//! been sent`), the pump fails as an uncaught error, and `wrangler dev`'s
//! proxy turns the next request into `503 Your worker restarted
//! mid-request`. Cancelling the body does not help; reading it to its end
//! does. So the room reads to the end every body it was sent:
//! [`read_within`] drains what comes past its budget, and [`discard`]
//! drains what no handler read.
//!
//! The Worker itself needs neither: a body it never forwards and never
//! touches is dropped by the runtime without complaint.
//!
//! Invariant: past the budget nothing is kept or copied into WebAssembly,
//! so a body of any length (chunked, without `Content-Length`) costs the
//! module's memory at most the budget.

use crate::core::error::HubError;
use worker::js_sys::{Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys;

/// The body, or `TooLarge` once more than `max` bytes arrived. Either way
/// the body is read to its end: past `max` the rest is drained in
/// JavaScript, chunk by chunk, and never copied into WebAssembly.
///
/// `declared`: the body's `Content-Length` as the Worker checked it. A
/// body declared within `max` is read in one piece (`arrayBuffer()`: one
/// await, one copy; the runtime holds a body to its declared length),
/// which costs a publish far less than a read per chunk.
pub async fn read_within(
    req: &web_sys::Request,
    max: usize,
    declared: Option<u64>,
) -> Result<Vec<u8>, HubError> {
    if reads_in_one_piece(declared, max) {
        let failed = |e| HubError::Internal(format!("body: {e:?}"));
        let buffer = JsFuture::from(req.array_buffer().map_err(failed)?)
            .await
            .map_err(failed)?;
        return read_ahead(&buffer, max);
    }
    let Some(stream) = req.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let failed = |e| HubError::Internal(format!("body: {e:?}"));
    let mut body = Vec::new();
    loop {
        let step = JsFuture::from(reader.read()).await.map_err(failed)?;
        if Reflect::get(&step, &"done".into())
            .map_err(failed)?
            .is_truthy()
        {
            return Ok(body);
        }
        let chunk: Uint8Array = Reflect::get(&step, &"value".into())
            .map_err(failed)?
            .unchecked_into();
        let start = body.len();
        if start + chunk.length() as usize > max {
            reader.release_lock();
            drain(&stream).await;
            return Err(HubError::TooLarge { limit: max });
        }
        body.resize(start + chunk.length() as usize, 0);
        chunk.copy_to(&mut body[start..]);
    }
}

/// Whether a body whose length the Worker checked (`declared`) is read in
/// one piece (`arrayBuffer()`): it is within `max`, and the runtime holds a
/// body to its declared length. Any other body is read as it streams in,
/// bounded.
pub fn reads_in_one_piece(declared: Option<u64>, max: usize) -> bool {
    declared.is_some_and(|n| n <= max as u64)
}

/// The bytes of a body read in one piece (`arrayBuffer()`, by
/// [`read_within`] or ahead of the handling by `durable::binding`), or
/// `TooLarge` past `max`. Anything but an `ArrayBuffer` means the read
/// failed: an internal error.
pub fn read_ahead(buffer: &JsValue, max: usize) -> Result<Vec<u8>, HubError> {
    if let Some(bytes) = bytes_within(buffer, max as f64) {
        return Ok(bytes);
    }
    if buffer_length(buffer) < 0.0 {
        return Err(HubError::Internal("body: reading it failed".into()));
    }
    Err(HubError::TooLarge { limit: max })
}

#[wasm_bindgen(inline_js = r#"
export function buffer_length(value) {
  return value instanceof ArrayBuffer ? value.byteLength : -1;
}
export function bytes_within(value, max) {
  return value instanceof ArrayBuffer && value.byteLength <= max ? new Uint8Array(value) : undefined;
}
"#)]
extern "C" {
    /// The length of `value` if it is an `ArrayBuffer`, else -1.
    fn buffer_length(value: &JsValue) -> f64;
    /// A copy of the bytes of `value` if it is an `ArrayBuffer` of at
    /// most `max` bytes, in one crossing (a `Uint8Array` view, its length
    /// and its copy are three).
    fn bytes_within(value: &JsValue, max: f64) -> Option<Vec<u8>>;
}

/// Reads the body of `req` to its end and drops it, if it has one that
/// nobody read or took. Never fails: a body that cannot be read is left.
pub async fn discard(req: &web_sys::Request) {
    if req.body_used() {
        return;
    }
    if let Some(body) = req.body() {
        drain(&body).await;
    }
}

/// Reads `stream` to its end into a sink that drops every chunk: the bytes
/// stay in JavaScript. A locked stream (another reader has it) is left.
async fn drain(stream: &web_sys::ReadableStream) {
    if stream.locked() {
        return;
    }
    let drained = web_sys::WritableStream::new().map(|sink| stream.pipe_to(&sink));
    let result = match drained {
        Ok(promise) => JsFuture::from(promise).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        worker::console_warn!("could not drain an unread request body: {:?}", e);
    }
}
