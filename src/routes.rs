//! The Worker entry: routes each request and forwards room requests to the
//! room's Durable Object (binding `ROOMS`, one object per room name).
//!
//! The Worker answers on its own what needs no room: unknown routes (404),
//! wrong methods (405), CORS preflights, cross-site requests from origins
//! outside `ALLOWED_ORIGINS` (403), WebSocket routes without an upgrade
//! (426), bad settings (500) and authentication: with `HUB_SECRET` set,
//! every room request needs a token that grants the room and the action's
//! capability (401/403), bad query parameters (400), and publishes whose
//! `Content-Type` or declared `Content-Length` the room would refuse
//! (415/413). What is left is described once for the room
//! (`core::request::RoomRequest`: room, action and its parameters,
//! identity) in an internal header that the Worker overwrites, so a client
//! can never set it; an anonymous poll or publish whose client set no such
//! header goes as it came, and the room reads the same description from it
//! (`RoomRequest::travels_as_sent`). Everything else is the room's, except, with
//! `POLL_CACHE_MS` on, a repeat conditional poll the isolate can answer
//! `304` from its memory of the room's ETag (`core::poll_cache`; after
//! authentication, with the headers the room would send). A request sent
//! as it came, decided by its packed head alone, is remembered by the entry
//! module, which sends its repeats the same way without entering the
//! module (`crate::memo`).
//!
//! A request answered here is never forwarded, and its body never touched:
//! the runtime drops such a body without complaint (see `crate::body`).

use crate::clock::now_ms;
use crate::core::auth::{self, Identity};
use crate::core::backend;
use crate::core::error::HubError;
use crate::core::poll_cache::{self, PollCache};
use crate::core::request::{RoomAction, RoomRequest, ROOM_REQUEST_HEADER};
use crate::core::request_head::RequestHead;
use crate::core::route::{route, Action, Method, Route};
use crate::core::settings::Settings;
use crate::core::tickets::looks_like_ticket;
use crate::core::url::UrlParts;
use crate::memo::Forwards;
use crate::respond::{self, Cors};
use crate::rooms_call::Forwarded;
use std::cell::{Cell, RefCell};
use wasm_bindgen::prelude::{wasm_bindgen, Closure, JsValue};
use wasm_bindgen::JsCast;
use worker::{event, web_sys, Env};

thread_local! {
    /// Whether this isolate already said that the hub runs open.
    static OPEN_MODE_ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The Worker's `fetch` export (in place of `#[event(fetch)]`): takes and
/// returns the runtime's own `Request` and `Promise<Response>`.
///
/// Costs it avoids (measured with workerd's V8 profiler and `perf`, issue
/// 19): the request is read once ([`Incoming`]), never converted into a
/// `worker::Request` (which reads the method, URL, headers and `cf` across
/// the boundary whether used or not); a room's answer goes back to the
/// client as the object that the room produced, not re-wrapped (which would
/// pipe every body, SSE streams included, through one more JS stream); and
/// the request's handling runs on the spot ([`crate::settle`]): what
/// completes without waiting (everything but JWKS keys and read bodies)
/// costs no Rust future driven by JavaScript promises, and a room request
/// returns the stub's own promise (see [`finish`]).
///
/// `head`: the request's packed head (`crate::head`); `forwards`: the
/// isolate's memo of requests sent to their room as they came, which a
/// repeat of such a request never gets past (`crate::memo`).
#[wasm_bindgen(js_name = fetch)]
pub fn fetch(
    req: web_sys::Request,
    env: Env,
    _ctx: JsValue,
    head: String,
    forwards: Forwards,
) -> JsValue {
    let settings = match crate::config::settings(&env) {
        Ok(s) => s,
        Err(e) => return answered(respond::error(&e, &Cors::None)),
    };
    let incoming = Incoming::read(req, head);
    let origin = incoming.header("Origin");
    let cors = Cors::for_origin(&settings.allowed_origins, origin.as_deref());
    // A promise resolved with the room's promise follows it, so a pending
    // handling needs no wait of its own for the room's answer.
    crate::settle::settle(async move {
        let outcome = handle(&incoming, &env, &settings, origin.as_deref(), &cors).await;
        Ok(finish(
            outcome, &incoming, &env, &settings, &cors, &forwards,
        ))
    })
}

/// The JSON `500` for a room call that the runtime rejected, sent on from
/// the entry module's memo (`crate::memo`): the answer [`finish`] gives.
#[wasm_bindgen(js_name = roomFailure)]
pub fn room_failure_for(error: JsValue, head: String, env: Env) -> web_sys::Response {
    let origin =
        RequestHead::parse(&head).and_then(|h| h.header("Origin").flatten().map(str::to_owned));
    let cors = match crate::config::settings(&env) {
        Ok(settings) => Cors::for_origin(&settings.allowed_origins, origin.as_deref()),
        Err(_) => Cors::None,
    };
    room_failure(&error, &cors)
}

/// What a request comes to: an answer made here, or a described request
/// for the room.
enum Outcome {
    Answer(web_sys::Response),
    Room(RoomRequest),
}

/// An answer made here: the response itself (the runtime takes a value as
/// well as a promise).
fn answered(resp: web_sys::Response) -> JsValue {
    resp.into()
}

/// The response: an answer or error at once; for a room
/// request, the answer from this isolate's poll cache, else the stub's
/// own promise, followed only where something must see the answer (the
/// poll cache) and caught so that a failed call is a JSON `500`.
fn finish(
    outcome: Result<Outcome, HubError>,
    req: &Incoming,
    env: &Env,
    settings: &Settings,
    cors: &Cors,
    forwards: &Forwards,
) -> JsValue {
    let described = match outcome {
        Ok(Outcome::Answer(resp)) => return answered(resp),
        Ok(Outcome::Room(described)) => described,
        Err(e) => return answered(respond::error(&e, cors)),
    };
    if let Some(etag) = cached_etag(settings, &described) {
        return answered(respond::not_modified(&etag, cors));
    }
    let on_answer = match (settings.poll_cache_ms, &described.action) {
        (0, _) => JsValue::UNDEFINED,
        (_, RoomAction::Poll { .. } | RoomAction::Publish { .. } | RoomAction::DeleteRoom) => {
            // Read only here: without the cache the Worker needs no clock.
            let sent_at_ms = now_ms();
            let ttl = settings.poll_cache_ms;
            let room = described.room.as_str().to_owned();
            let is_poll = matches!(described.action, RoomAction::Poll { .. });
            Closure::once_into_js(move |resp: JsValue| -> JsValue {
                note_room_answer(ttl, &room, is_poll, resp.dyn_ref(), sent_at_ms);
                resp
            })
        }
        _ => JsValue::UNDEFINED,
    };
    let on_failure = room_failure_handler(cors);
    // A client that set the description's header itself (or whose head
    // could not say) gets it overwritten: its request is never sent as it
    // came.
    let client_set_description = req.head.header(ROOM_REQUEST_HEADER) != Some(None);
    match crate::rooms_call::forward(
        env,
        &req.req,
        &described,
        client_set_description,
        &on_answer,
        &on_failure,
    ) {
        Ok(Forwarded::AsSent { promise, body_read }) => {
            // Nothing but the head decided it (`travels_as_sent`, and
            // no header read from outside it), and without the poll
            // cache nothing must see the answer: a repeat goes the same
            // way without the module (`crate::memo`).
            if settings.poll_cache_ms == 0 && !req.read_beyond_head.get() {
                forwards.remember_forward(&req.packed, described.room.as_str(), body_read);
            }
            promise.into()
        }
        Ok(Forwarded::Described(promise)) => promise.into(),
        Err(e) => answered(respond::error(&e, cors)),
    }
}

thread_local! {
    /// The handler of a failed room call without CORS headers, made once.
    static ROOM_FAILURE: JsValue = Closure::<dyn Fn(JsValue) -> JsValue>::new(|e: JsValue| {
        JsValue::from(room_failure(&e, &Cors::None))
    })
    .into_js_value();
}

/// The JSON `500` for a room call that failed (the runtime rejected it).
fn room_failure(e: &JsValue, cors: &Cors) -> web_sys::Response {
    respond::error(&HubError::Internal(format!("room fetch: {e:?}")), cors)
}

/// The rejection handler for a room call: shared when the answer carries
/// no CORS headers, else one that carries this request's.
fn room_failure_handler(cors: &Cors) -> JsValue {
    match cors {
        Cors::None => ROOM_FAILURE.with(Clone::clone),
        _ => {
            let cors = cors.clone();
            Closure::once_into_js(move |e: JsValue| -> JsValue {
                JsValue::from(room_failure(&e, &cors))
            })
        }
    }
}

/// The client's request, read once: its method, URL and the headers the
/// Worker uses, packed by the entry module (`crate::head`), the query
/// decoded once, in Rust.
pub(crate) struct Incoming {
    pub req: web_sys::Request,
    pub head: RequestHead,
    /// The head as packed: the key of the entry module's memo.
    packed: String,
    pairs: Vec<(String, String)>,
    /// Whether a header outside the packed head was read: then the
    /// handling did not depend on the head alone, and is not remembered.
    read_beyond_head: Cell<bool>,
}

impl Incoming {
    fn read(req: web_sys::Request, packed: String) -> Incoming {
        // A head that does not parse cannot happen (see
        // `core::request_head`); then every header is asked of the runtime.
        let head = RequestHead::parse(&packed)
            .unwrap_or_else(|| RequestHead::without_headers(req.method(), req.url()));
        let pairs = UrlParts::split(&head.url).pairs();
        Incoming {
            req,
            head,
            packed,
            pairs,
            read_beyond_head: Cell::new(false),
        }
    }

    pub fn parts(&self) -> UrlParts<'_> {
        UrlParts::split(&self.head.url)
    }

    /// A request header's value, if present and readable.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.head.header(name) {
            Some(value) => value.map(str::to_owned),
            None => {
                self.read_beyond_head.set(true);
                self.req.headers().get(name).ok().flatten()
            }
        }
    }

    /// The first value of a query parameter, decoded.
    fn query(&self, name: &str) -> Option<&str> {
        crate::core::url::first(&self.pairs, name)
    }
}

async fn handle(
    req: &Incoming,
    env: &Env,
    settings: &Settings,
    origin: Option<&str>,
    cors: &Cors,
) -> Result<Outcome, HubError> {
    let path = req.parts().path;
    let method = Method::parse(&req.head.method);
    if let Some(asset) = crate::assets::asset(path) {
        return serve_asset(method, asset).map(Outcome::Answer);
    }
    if path == "/publish" {
        return publish_many(req, env, settings, origin, cors, method)
            .await
            .map(Outcome::Answer);
    }
    let Route { room, endpoint } = route(path)?;
    // The `Host` header is the client's to set, so the hub's own origin is
    // not trusted from it: list it in ALLOWED_ORIGINS (or keep `*`).
    if !settings.allowed_origins.allows(origin) {
        return Err(HubError::OriginNotAllowed);
    }
    if method == Method::Options {
        return Ok(Outcome::Answer(cors.preflight(endpoint.allow())));
    }
    let action = endpoint.action(method)?;
    // A ticket stands in for a token on live connections; the room that
    // issued it knows whose it is (see `core::tickets`).
    let ticket = match action {
        Action::OpenSocket | Action::OpenEvents => req.query("ticket").map(str::to_owned),
        _ => None,
    };
    let keys = crate::config::api_keys(env)?;
    let (identity, expires_s) = if action.needs_backend() {
        (backend_only(req, &keys)?, None)
    } else {
        match (&ticket, backend_key(req, &keys)?) {
            (_, Some(identity)) => (identity, None),
            (Some(t), None) if looks_like_ticket(t) => (Identity::Anonymous, None),
            (Some(_), None) => return Err(HubError::Unauthorized("malformed ticket")),
            (None, None) => authenticate(req, env, settings, room.as_str(), action).await?,
        }
    };
    if action == Action::OpenSocket && !is_websocket_upgrade(req) {
        return Err(HubError::UpgradeRequired);
    }
    if action == Action::Publish {
        // Refused here, a body is never read: the runtime drops it. Sent on
        // to the room, it would have to be read there (see `crate::body`).
        crate::core::protocol::check_publish_headers(
            req.header("Content-Type").as_deref(),
            req.header("Content-Length").as_deref(),
            settings.max_message_bytes,
        )?;
    }
    // Only a disconnect's body is read here (the room reads a publish's).
    let body = match action {
        Action::Disconnect => {
            let bytes =
                crate::body::read_within(&req.req, settings.max_message_bytes, None).await?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| HubError::InvalidJson("the body is not UTF-8".into()))?,
            )
        }
        _ => None,
    };
    let action = RoomAction::describe(
        action,
        req.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        |name| req.header(name),
        body.as_deref(),
        settings.long_poll_max_secs,
    )?;
    let described = RoomRequest::new(room, action, identity, expires_s, ticket, |name| {
        req.header(name)
    });
    if body.is_some() {
        // The body was read here: the room gets the description alone.
        return crate::rooms_call::send(env, &req.head.url, worker::Method::Post, None, &described)
            .await
            .map(Outcome::Answer);
    }
    Ok(Outcome::Room(described))
}

thread_local! {
    /// This isolate's memory of rooms' ETags (`POLL_CACHE_MS`); made on
    /// first use, and never when the setting is 0.
    static POLL_CACHE: RefCell<Option<PollCache>> = const { RefCell::new(None) };
}

/// The ETag to answer `304` with from this isolate's cache: only for an
/// immediate poll with `If-None-Match` (a long poll or an unconditional
/// poll always goes to the room), and only with `POLL_CACHE_MS` on. The
/// caller was authenticated before.
fn cached_etag(settings: &Settings, described: &RoomRequest) -> Option<String> {
    if settings.poll_cache_ms == 0 {
        return None;
    }
    let RoomAction::Poll {
        query,
        if_none_match: Some(validator),
    } = &described.action
    else {
        return None;
    };
    if query.wait_secs > 0 {
        return None;
    }
    POLL_CACHE.with(|c| {
        c.borrow().as_ref().and_then(|cache| {
            cache
                .not_modified(described.room.as_str(), validator, now_ms())
                .map(str::to_owned)
        })
    })
}

/// Keeps the cache (TTL `ttl_ms`) in step with what went to `room`: a
/// poll's answer (`200` or `304` with the room's ETag, as of `sent_at_ms`)
/// is remembered; a publish or a delete that was answered makes the room's
/// ETag unknown.
fn note_room_answer(
    ttl_ms: u32,
    room: &str,
    is_poll: bool,
    answer: Option<&web_sys::Response>,
    sent_at_ms: u64,
) {
    if !is_poll {
        return forget_etag(room);
    }
    let Some(resp) = answer.filter(|r| matches!(r.status(), 200 | 304)) else {
        return;
    };
    let Ok(Some(etag)) = resp.headers().get("ETag") else {
        return;
    };
    POLL_CACHE.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| PollCache::new(u64::from(ttl_ms), poll_cache::MAX_ENTRIES))
            .record(room, &etag, sent_at_ms);
    });
}

/// Forgets `room`'s ETag in this isolate's cache, if there is one: a
/// publish or delete for it went through here.
pub(crate) fn forget_etag(room: &str) {
    POLL_CACHE.with(|c| {
        if let Some(cache) = c.borrow_mut().as_mut() {
            cache.invalidate(room, now_ms());
        }
    });
}

/// `POST /publish` (the backend's key only).
async fn publish_many(
    req: &Incoming,
    env: &Env,
    settings: &Settings,
    origin: Option<&str>,
    cors: &Cors,
    method: Method,
) -> Result<web_sys::Response, HubError> {
    const ALLOW: &str = "POST, OPTIONS";
    if !settings.allowed_origins.allows(origin) {
        return Err(HubError::OriginNotAllowed);
    }
    match method {
        Method::Options => return Ok(cors.preflight(ALLOW)),
        Method::Post => {}
        _ => return Err(HubError::MethodNotAllowed { allow: ALLOW }),
    }
    let keys = crate::config::api_keys(env)?;
    backend_only(req, &keys)?;
    crate::core::protocol::check_publish_headers(
        req.header("Content-Type").as_deref(),
        None,
        settings.max_message_bytes + 16 * 1024,
    )?;
    crate::publish_many::handle(req, env, settings.max_message_bytes, origin, cors).await
}

/// The caller of a key-only endpoint: the backend, or `403` (no key
/// configured, or another credential presented) or `401` (none).
fn backend_only(req: &Incoming, keys: &[String]) -> Result<Identity, HubError> {
    let presented_key = backend_key(req, keys)?.is_some();
    let other_credential = req.header("Authorization").is_some()
        || req.query("token").is_some()
        || req.query("ticket").is_some();
    backend::admit_backend(presented_key, !keys.is_empty(), other_credential)?;
    Ok(Identity::Backend)
}

/// The backend, when `Authorization` carries one of its keys. A key in
/// `?token=` has leaked into a URL: refused outright.
fn backend_key(req: &Incoming, keys: &[String]) -> Result<Option<Identity>, HubError> {
    if keys.is_empty() {
        return Ok(None);
    }
    if req
        .query("token")
        .is_some_and(|t| backend::is_api_key(t, keys))
    {
        return Err(HubError::Unauthorized(
            "the backend key is never accepted in a URL",
        ));
    }
    let authorization = req.header("Authorization");
    Ok(auth::token_from(authorization.as_deref(), None)
        .filter(|bearer| backend::is_api_key(bearer, keys))
        .map(|_| Identity::Backend))
}

/// Who the request is, and until when (the token's `exp` plus
/// `TOKEN_LEEWAY_SECS`): anonymous when no key is configured (`HUB_SECRET`,
/// `JWKS`, `JWKS_URL`), else the verified user of a token that grants this
/// room and action.
async fn authenticate(
    req: &Incoming,
    env: &Env,
    settings: &Settings,
    room: &str,
    action: Action,
) -> Result<(Identity, Option<u64>), HubError> {
    let secrets = crate::config::secrets(env)?;
    let hs256 = secrets.verifying();
    let closed = !hs256.is_empty() || settings.jwks.is_some() || settings.jwks_url.is_some();
    if !closed {
        if !OPEN_MODE_ANNOUNCED.with(|a| a.replace(true)) {
            worker::console_warn!(
                "HUB_SECRET is not set: every room is open to anyone (development mode)"
            );
        }
        return Ok((Identity::Anonymous, None));
    }
    let authorization = req.header("Authorization");
    // A ticket is issued only for a token in `Authorization`: the point
    // is to keep it out of URLs.
    let query_token = match action {
        Action::IssueTicket => None,
        _ => req.query("token"),
    };
    let token = auth::token_from(authorization.as_deref(), query_token)
        .ok_or(HubError::Unauthorized("a token is required"))?;
    let jws = auth::Jws::parse(token)?;
    match jws.alg {
        // Never checked against a public key, and refused without a secret.
        auth::Alg::Hs256 => jws.verify_hs256(&hs256)?,
        auth::Alg::Rs256 | auth::Alg::Es256 => crate::jwks::verify(&jws, settings).await?,
    }
    let now_s = now_ms() / 1000;
    let claims = jws.claims(&settings.token_rules, now_s)?;
    let identity = auth::authorize(
        &claims,
        room,
        auth::needed_for_publish(action == Action::Publish),
    )?;
    let deadline = claims.exp.saturating_add(settings.token_rules.leeway_s);
    Ok((identity, Some(deadline)))
}

/// Serves an embedded asset to `GET`/`HEAD`; any other method gets 405.
fn serve_asset(method: Method, asset: crate::assets::Asset) -> Result<web_sys::Response, HubError> {
    match method {
        Method::Get | Method::Head => {}
        _ => return Err(HubError::MethodNotAllowed { allow: "GET, HEAD" }),
    }
    let mut headers = respond::HeaderLines::default();
    headers.set("Content-Type", asset.content_type);
    // Short: a deploy changes the client, and pages should pick it up soon.
    headers.set("Cache-Control", "public, max-age=300");
    headers.set("Access-Control-Allow-Origin", "*");
    Ok(respond::build(200, &headers, Some(asset.body.as_bytes())))
}

fn is_websocket_upgrade(req: &Incoming) -> bool {
    req.header("Upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}
