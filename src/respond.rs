//! Responses: JSON bodies, JSON errors with their status and headers, and
//! the CORS headers every room response carries.
//!
//! Both the Worker and the Durable Object answer through here, so an error
//! looks the same whichever of them found it.
//!
//! A response built here (status, headers, a body in one piece) is made
//! by one call into JavaScript ([`make_response`]): its headers travel
//! packed in one string. Building it through `worker::Response` took a
//! boundary crossing for its `Headers`, one per header, one for the init
//! object, two for its fields, two for the body's copy and one for the
//! `Response` (issue 19). The headers reach the `Response` as a plain
//! object: measured in workerd, a `Response` made from one costs ~1.5 µs
//! less than from a `Headers` filled by `set` (the runtime copies the
//! headers into the response either way). Streamed responses (SSE) and WebSocket upgrades
//! still come from `worker::Response`, which fills the runtime's
//! `Headers` itself ([`Cors::apply_to`]).

use crate::core::error::HubError;
use crate::core::settings::AllowedOrigins;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{web_sys, Headers};

#[wasm_bindgen(inline_js = r#"
export function make_response(status, body, lines) {
  const headers = {};
  let start = 0;
  while (start < lines.length) {
    let end = lines.indexOf('\n', start);
    if (end < 0) end = lines.length;
    const colon = lines.indexOf(':', start);
    headers[lines.slice(start, colon)] = lines.slice(colon + 1, end);
    start = end + 1;
  }
  return new Response(body === undefined ? null : body.slice(), { status, headers });
}
"#)]
extern "C" {
    /// The runtime's `Response`: `status`, the headers packed in `lines`
    /// (see [`HeaderLines`]) and a copy of `body`.
    #[wasm_bindgen(catch)]
    fn make_response(
        status: u16,
        body: Option<&[u8]>,
        lines: &str,
    ) -> Result<web_sys::Response, JsValue>;
}

/// The headers of a response built here, packed as [`make_response`]
/// reads them: `Name:value` lines. A later line replaces an earlier one of
/// the same name as written: every name is a constant here, written in one
/// casing. Names hold no `:`, and no value holds a line break (the
/// runtime refuses both in a header anyway).
#[derive(Default)]
pub struct HeaderLines(String);

impl HeaderLines {
    pub fn set(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        self.0.push_str(name);
        self.0.push(':');
        self.0.push_str(value);
    }
}

/// The runtime's `Response` for `status`, `headers` and `body`. Should the
/// runtime refuse a header, the answer is a bare `500` (logged), never a
/// panic in a handler.
pub fn build(status: u16, headers: &HeaderLines, body: Option<&[u8]>) -> web_sys::Response {
    make_response(status, body, &headers.0).unwrap_or_else(|e| {
        worker::console_error!("internal: building a {} response: {:?}", status, e);
        make_response(500, None, "").expect("a bare 500 always builds")
    })
}

/// Headers a browser may send on room requests; listed in CORS preflights.
const CORS_ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Idempotency-Key, If-None-Match, Last-Event-ID";
/// Headers a browser script may read from room responses.
const CORS_EXPOSE_HEADERS: &str = "ETag, Retry-After, Idempotent-Replayed";

/// What a response says to a cross-origin browser.
#[derive(Debug, Clone)]
pub enum Cors {
    /// No `Origin` header, or an origin not allowed: no CORS headers.
    None,
    /// `ALLOWED_ORIGINS=*`.
    Any,
    /// An allowed origin from the list, echoed back.
    Origin(String),
}

impl Cors {
    /// Decides CORS for a request's `Origin` against the allowed list.
    pub fn for_origin(allowed: &AllowedOrigins, origin: Option<&str>) -> Cors {
        match (allowed, origin) {
            (_, None) => Cors::None,
            (AllowedOrigins::Any, Some(_)) => Cors::Any,
            (list, Some(o)) if list.allows(Some(o)) => Cors::Origin(o.to_owned()),
            _ => Cors::None,
        }
    }

    /// The CORS headers of this decision, as name and value.
    fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let (origin, vary) = match self {
            Cors::None => (None, None),
            Cors::Any => (Some("*"), None),
            Cors::Origin(o) => (Some(o.as_str()), Some("Origin")),
        };
        let expose = origin.map(|_| CORS_EXPOSE_HEADERS);
        [
            origin.map(|o| ("Access-Control-Allow-Origin", o)),
            vary.map(|v| ("Vary", v)),
            expose.map(|e| ("Access-Control-Expose-Headers", e)),
        ]
        .into_iter()
        .flatten()
    }

    /// Adds this decision's CORS headers to a runtime `Headers` (of a
    /// streamed response).
    pub fn apply_to(&self, headers: &Headers) -> worker::Result<()> {
        for (name, value) in self.headers() {
            headers.set(name, value)?;
        }
        Ok(())
    }

    /// Adds this decision's CORS headers to a response built here.
    fn add_to(&self, headers: &mut HeaderLines) {
        for (name, value) in self.headers() {
            headers.set(name, value);
        }
    }

    /// The `204` answer to a CORS preflight.
    pub fn preflight(&self, allow_methods: &str) -> web_sys::Response {
        let mut headers = HeaderLines::default();
        self.add_to(&mut headers);
        headers.set("Access-Control-Allow-Methods", allow_methods);
        headers.set("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
        headers.set("Access-Control-Max-Age", "600");
        build(204, &headers, None)
    }
}

/// A JSON response from an already-serialized body, with `extra`
/// headers after the usual ones (replacing any of the same name).
pub fn json_text_with(
    status: u16,
    body: &str,
    extra: &[(&str, &str)],
    cors: &Cors,
) -> web_sys::Response {
    let mut headers = HeaderLines::default();
    headers.set("Content-Type", "application/json; charset=utf-8");
    headers.set("Cache-Control", "no-cache");
    cors.add_to(&mut headers);
    for (name, value) in extra {
        headers.set(name, value);
    }
    build(status, &headers, Some(body.as_bytes()))
}

/// A JSON response from an already-serialized body.
pub fn json_text(status: u16, body: &str, cors: &Cors) -> web_sys::Response {
    json_text_with(status, body, &[], cors)
}

/// A JSON response from a serializable value, with `extra` headers.
pub fn json_with<T: serde::Serialize>(
    status: u16,
    value: &T,
    extra: &[(&str, &str)],
    cors: &Cors,
) -> Result<web_sys::Response, HubError> {
    let body = serde_json::to_string(value).map_err(|e| HubError::Internal(e.to_string()))?;
    Ok(json_text_with(status, &body, extra, cors))
}

/// A JSON response from a serializable value.
pub fn json<T: serde::Serialize>(
    status: u16,
    value: &T,
    cors: &Cors,
) -> Result<web_sys::Response, HubError> {
    json_with(status, value, &[], cors)
}

/// The response for an error: the JSON body of docs/PROTOCOL.md, "Errors",
/// the fitting status, `Retry-After` and `Allow` where they apply.
/// `Internal` and `BadConfig` details go to the log, never to the client.
pub fn error(err: &HubError, cors: &Cors) -> web_sys::Response {
    if let HubError::Internal(detail) | HubError::BadConfig(detail) = err {
        worker::console_error!("{}: {}", err.code(), detail);
    }
    let body = serde_json::to_string(&err.body()).unwrap_or_default();
    let retry_after = err.retry_after_s().map(|secs| secs.to_string());
    let mut extra = Vec::new();
    if let Some(secs) = &retry_after {
        extra.push(("Retry-After", secs.as_str()));
    }
    if let HubError::MethodNotAllowed { allow } = err {
        extra.push(("Allow", *allow));
    }
    json_text_with(err.status(), &body, &extra, cors)
}

/// A `304 Not Modified` carrying the current ETag and nothing else.
pub fn not_modified(etag: &str, cors: &Cors) -> web_sys::Response {
    let mut headers = HeaderLines::default();
    headers.set("ETag", etag);
    headers.set("Cache-Control", "no-cache");
    cors.add_to(&mut headers);
    build(304, &headers, None)
}

/// A response with `status`, no body and the CORS headers (a `204`).
pub fn empty(status: u16, cors: &Cors) -> web_sys::Response {
    let mut headers = HeaderLines::default();
    cors.add_to(&mut headers);
    build(status, &headers, None)
}

/// A runtime error is the hub's `internal` error: its detail is logged,
/// never sent (see [`error`]).
impl From<worker::Error> for HubError {
    fn from(e: worker::Error) -> Self {
        HubError::Internal(e.to_string())
    }
}

/// A JavaScript exception from a raw `web_sys` call is an `internal`
/// error too.
impl From<worker::wasm_bindgen::JsValue> for HubError {
    fn from(e: worker::wasm_bindgen::JsValue) -> Self {
        HubError::Internal(format!("{e:?}"))
    }
}
