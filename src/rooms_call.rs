//! Calling a room's Durable Object from the Worker: the one place a
//! described request ([`RoomRequest`]) crosses to the room.
//!
//! Invariant: the description always travels in the internal header,
//! written here over anything a client sent under that name.

use crate::core::error::HubError;
use crate::core::request::{RoomRequest, ROOM_REQUEST_HEADER};
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Env, Headers, Method, Request, RequestInit};

/// Sends `req` (the client's request, body untouched) to the room, with
/// its description; returns the room's own `Response`.
pub async fn forward(
    env: &Env,
    req: &Request,
    described: &RoomRequest,
) -> Result<web_sys::Response, HubError> {
    let mut forwarded = req.clone_mut()?;
    forwarded
        .headers_mut()?
        .set(ROOM_REQUEST_HEADER, &described.to_header())?;
    call(env, &forwarded, described).await
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
    let headers = Headers::new();
    headers.set(ROOM_REQUEST_HEADER, &described.to_header())?;
    if body.is_some() {
        headers.set("Content-Type", "application/json")?;
    }
    let mut init = RequestInit::new();
    init.with_method(method)
        .with_headers(headers)
        .with_body(body.map(Into::into));
    let req = Request::new_with_init(url, &init)?;
    call(env, &req, described).await
}

async fn call(
    env: &Env,
    req: &Request,
    described: &RoomRequest,
) -> Result<web_sys::Response, HubError> {
    let namespace = env.durable_object("ROOMS")?;
    let stub = namespace
        .id_from_name(described.room.as_str())?
        .get_stub()?;
    let object: worker::worker_sys::DurableObject = stub.into_rpc();
    let promise = object
        .fetch_with_request(req.inner())
        .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))?;
    let answer = JsFuture::from(promise)
        .await
        .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))?;
    answer
        .dyn_into::<web_sys::Response>()
        .map_err(|_| HubError::Internal("the room did not answer with a Response".into()))
}
