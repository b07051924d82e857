//! Calling a room's Durable Object from the Worker: the one place a
//! described request ([`RoomRequest`]) crosses to the room.
//!
//! Invariants: the description travels in the internal header, written
//! here over anything a client sent under that name, except on a request
//! sent as it came ([`forward`]: an anonymous poll or publish
//! whose client set no such header; the room reads its description from
//! it); a room gets the client's body only for a publish (the one action
//! whose body the room reads), so every body the room is sent is read to
//! its end there (see `crate::body`).
//!
//! Costs (measured with workerd's V8 profiler, issue 19; see
//! bench/profile.mjs): copying the client's request (`new Request(req)`)
//! copies its `cf` object and every header, and converting it to a
//! `worker::Request` reads all of them back across the boundary; so a room
//! request carries the description, the body when the room needs it, and
//! `Upgrade` for a socket, nothing else. It is made and sent in one call
//! into JavaScript ([`call_room`]: the stub, its `Headers`, the `Request`,
//! the stub's `fetch`, the body and the `then` that follows the answer),
//! where building them from Rust took a boundary crossing per step.
//! (Headers given as a plain object, or `fetch(url, init)`, measured
//! slower in issue 19's second pass and no faster in its fourth: the
//! runtime builds the same request either way.) The namespace binding is
//! looked up once per isolate.

use crate::core::error::HubError;
use crate::core::request::{RoomAction, RoomRequest, ROOM_REQUEST_HEADER};
use crate::js_text::js_text;
use std::cell::RefCell;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::DurableObjectNamespace;
use worker::{js_sys, web_sys, Env, Method};

#[wasm_bindgen(inline_js = r#"
export function call_room(rooms, room, origin, url, method, headerName, described, body, contentType, upgrade, onAnswer, onFailure) {
  const headers = new Headers();
  headers.set(headerName, described);
  if (contentType !== undefined) headers.set('Content-Type', contentType);
  if (upgrade) headers.set('Upgrade', 'websocket');
  const init = { method: method ?? origin.method, headers };
  if (body instanceof Request) init.body = body.body;
  else if (body !== undefined) init.body = body;
  const answer = rooms.getByName(room).fetch(new Request(url ?? origin.url, init));
  return onFailure === undefined ? answer : answer.then(onAnswer, onFailure);
}
export function call_room_as_sent(rooms, room, req, bodyRead, onAnswer, onFailure) {
  if (!bodyRead && req.body !== null) return null;
  return rooms.getByName(room).fetch(req).then(onAnswer, onFailure);
}
"#)]
extern "C" {
    /// Sends room `room` a request: `method` on `url` (when not given, the
    /// method and URL of `origin`, the client's request), the description
    /// in the header `header_name`, and the body (a string, or the body of
    /// a `Request`), its type and `Upgrade` when given. Returns the stub's
    /// promise of the room's `Response`, followed by
    /// `then(on_answer, on_failure)` when `on_failure` is given.
    #[wasm_bindgen(catch)]
    #[allow(clippy::too_many_arguments)]
    fn call_room(
        rooms: &DurableObjectNamespace,
        room: &str,
        origin: &JsValue,
        url: Option<&str>,
        method: Option<&str>,
        header_name: &JsValue,
        described: &str,
        body: &JsValue,
        content_type: Option<&str>,
        upgrade: bool,
        on_answer: &JsValue,
        on_failure: &JsValue,
    ) -> Result<js_sys::Promise, JsValue>;

    /// Sends room `room` the client's request `req` as it came, followed
    /// by `then(on_answer, on_failure)`; or does nothing and returns
    /// `null` when `req` has a body and `body_read` is false (the room
    /// reads a body only where it expects one).
    #[wasm_bindgen(catch)]
    fn call_room_as_sent(
        rooms: &DurableObjectNamespace,
        room: &str,
        req: &web_sys::Request,
        body_read: bool,
        on_answer: &JsValue,
        on_failure: &JsValue,
    ) -> Result<Option<js_sys::Promise>, JsValue>;
}

thread_local! {
    /// The `ROOMS` binding: bindings cannot change while an isolate lives.
    static ROOMS: RefCell<Option<DurableObjectNamespace>> = const { RefCell::new(None) };
}

/// Sends the room the client's request `req`: as it came when
/// `described` travels as sent (`RoomRequest::travels_as_sent`; the room
/// reads it back from the request, `RoomRequest::as_sent`) and the client
/// set no description header of its own (`client_set_description`), else
/// a request made here that carries `described` (its method and URL read
/// from `req` in JavaScript rather than copied back out of the module).
/// Returns the stub's promise of the room's own `Response` (the Worker
/// hands it to the runtime as it is), followed by
/// `then(on_answer, on_failure)`, and how it went.
pub fn forward(
    env: &Env,
    req: &web_sys::Request,
    described: &RoomRequest,
    client_set_description: bool,
    on_answer: &JsValue,
    on_failure: &JsValue,
) -> Result<Forwarded, HubError> {
    if described.travels_as_sent() && !client_set_description {
        // `None` for a poll with a body, which the room would never read:
        // it goes in a request made here, without the body.
        let body_read = matches!(described.action, RoomAction::Publish { .. });
        let sent = call_room_as_sent(
            &rooms(env)?,
            described.room.as_str(),
            req,
            body_read,
            on_answer,
            on_failure,
        )
        .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))?;
        if let Some(promise) = sent {
            return Ok(Forwarded::AsSent { promise, body_read });
        }
    }
    let (body, upgrade): (&JsValue, bool) = match described.action {
        // The room reads the body itself (bounded, to its end).
        RoomAction::Publish { .. } => (req, false),
        // The runtime hands the room's WebSocket back to the client only
        // for a request that asked for an upgrade.
        RoomAction::OpenSocket { .. } => (&JsValue::UNDEFINED, true),
        _ => (&JsValue::UNDEFINED, false),
    };
    let then = Then {
        on_answer,
        on_failure,
    };
    start(
        env,
        Target::ClientRequest(req),
        body,
        None,
        upgrade,
        described,
        then,
    )
    .map(Forwarded::Described)
}

/// How [`forward`] sent a request: the stub's promise of the answer.
pub enum Forwarded {
    /// The client's request as it came; `body_read`: whether the room reads
    /// its body (a publish).
    AsSent {
        promise: js_sys::Promise,
        body_read: bool,
    },
    /// A request made here that carries the description.
    Described(js_sys::Promise),
}

/// Where the room's request goes.
enum Target<'a> {
    /// Where the client's request went: its method and URL are read from
    /// it in JavaScript, not copied back out of the module.
    ClientRequest(&'a web_sys::Request),
    /// `method` on `url`, a request of the Worker's own.
    Own { url: &'a str, method: &'a str },
}

/// What follows the room's answer: `then(on_answer, on_failure)`, or
/// nothing when `on_failure` is `undefined`.
struct Then<'a> {
    on_answer: &'a JsValue,
    on_failure: &'a JsValue,
}

/// Sends the room a request of the Worker's own making (`method`, a JSON
/// `body` or none) with its description.
pub async fn send(
    env: &Env,
    url: &str,
    method: Method,
    body: Option<String>,
    described: &RoomRequest,
) -> Result<web_sys::Response, HubError> {
    let (body, content_type) = match body {
        Some(json) => (JsValue::from(json), Some("application/json")),
        None => (JsValue::UNDEFINED, None),
    };
    let nothing = Then {
        on_answer: &JsValue::UNDEFINED,
        on_failure: &JsValue::UNDEFINED,
    };
    let target = Target::Own {
        url,
        method: method.as_ref(),
    };
    let call = start(env, target, &body, content_type, false, described, nothing)?;
    let answer = JsFuture::from(call)
        .await
        .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))?;
    answer
        .dyn_into::<web_sys::Response>()
        .map_err(|_| HubError::Internal("the room did not answer with a Response".into()))
}

/// The `ROOMS` namespace, read from `env` on first use.
fn rooms(env: &Env) -> Result<DurableObjectNamespace, HubError> {
    if let Some(ns) = ROOMS.with(|r| r.borrow().clone()) {
        return Ok(ns);
    }
    // Checked by its constructor's name, as `worker::Env` does: the class
    // is not a global, so `instanceof` cannot be used.
    let ns = js_sys::Reflect::get(env, &"ROOMS".into())
        .ok()
        .filter(|b| {
            b.is_object()
                && js_sys::Object::from(b.clone()).constructor().name() == "DurableObjectNamespace"
        })
        .map(|b| b.unchecked_into::<DurableObjectNamespace>())
        .ok_or_else(|| HubError::Internal("the ROOMS binding is missing".into()))?;
    ROOMS.with(|r| *r.borrow_mut() = Some(ns.clone()));
    Ok(ns)
}

/// Starts the call: the stub's promise of the room's `Response`
/// (followed by `then`).
fn start(
    env: &Env,
    target: Target<'_>,
    body: &JsValue,
    content_type: Option<&str>,
    upgrade: bool,
    described: &RoomRequest,
    then: Then<'_>,
) -> Result<js_sys::Promise, HubError> {
    let (origin, url, method): (&JsValue, _, _) = match target {
        Target::ClientRequest(req) => (req, None, None),
        Target::Own { url, method } => (&JsValue::UNDEFINED, Some(url), Some(method)),
    };
    call_room(
        &rooms(env)?,
        described.room.as_str(),
        origin,
        url,
        method,
        js_text(ROOM_REQUEST_HEADER),
        &described.to_header(),
        body,
        content_type,
        upgrade,
        then.on_answer,
        then.on_failure,
    )
    .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))
}
