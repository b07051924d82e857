//! Turning results into `worker::Response`s: JSON bodies, JSON errors with
//! their status and headers, and the CORS headers every room response carries.
//!
//! Both the Worker and the Durable Object answer through here, so an error
//! looks the same whichever of them found it.

use crate::core::error::HubError;
use crate::core::settings::AllowedOrigins;
use worker::{Headers, Response};

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

    /// Adds this decision's CORS headers to a response's headers.
    pub fn apply_to(&self, headers: &Headers) -> worker::Result<()> {
        match self {
            Cors::None => return Ok(()),
            Cors::Any => headers.set("Access-Control-Allow-Origin", "*")?,
            Cors::Origin(o) => {
                headers.set("Access-Control-Allow-Origin", o)?;
                headers.append("Vary", "Origin")?;
            }
        }
        headers.set("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
    }

    /// The `204` answer to a CORS preflight.
    pub fn preflight(&self, allow_methods: &str) -> worker::Result<Response> {
        let resp = Response::empty()?.with_status(204);
        let headers = resp.headers();
        self.apply_to(headers)?;
        headers.set("Access-Control-Allow-Methods", allow_methods)?;
        headers.set("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)?;
        headers.set("Access-Control-Max-Age", "600")?;
        Ok(resp)
    }
}

/// A JSON response from an already-serialized body.
///
/// Responses here fill the `Headers` their builder made rather than a
/// second one: every runtime object costs a boundary crossing (issue 19).
pub fn json_text(status: u16, body: String, cors: &Cors) -> worker::Result<Response> {
    let resp = Response::ok(body)?.with_status(status);
    let headers = resp.headers();
    headers.set("Content-Type", "application/json; charset=utf-8")?;
    headers.set("Cache-Control", "no-cache")?;
    cors.apply_to(headers)?;
    Ok(resp)
}

/// A JSON response from a serializable value.
pub fn json<T: serde::Serialize>(status: u16, value: &T, cors: &Cors) -> worker::Result<Response> {
    let body = serde_json::to_string(value).map_err(|e| worker::Error::RustError(e.to_string()))?;
    json_text(status, body, cors)
}

/// The response for an error: the JSON body of docs/PROTOCOL.md, "Errors",
/// the fitting status, `Retry-After` and `Allow` where they apply.
/// `Internal` and `BadConfig` details go to the log, never to the client.
pub fn error(err: &HubError, cors: &Cors) -> Response {
    if let HubError::Internal(detail) | HubError::BadConfig(detail) = err {
        worker::console_error!("{}: {}", err.code(), detail);
    }
    build_error(err, cors).unwrap_or_else(|_| {
        // Building a response only fails if the runtime rejects a header;
        // fall back to the bare status rather than panic in a handler.
        Response::empty()
            .map(|r| r.with_status(500))
            .unwrap_or_else(|_| {
                Response::from_bytes(Vec::new()).expect("an empty response always builds")
            })
    })
}

fn build_error(err: &HubError, cors: &Cors) -> worker::Result<Response> {
    let resp = json(err.status(), &err.body(), cors)?;
    let headers = resp.headers();
    if let Some(secs) = err.retry_after_s() {
        headers.set("Retry-After", &secs.to_string())?;
    }
    if let HubError::MethodNotAllowed { allow } = err {
        headers.set("Allow", allow)?;
    }
    Ok(resp)
}

/// A `304 Not Modified` carrying the current ETag and nothing else.
pub fn not_modified(etag: &str, cors: &Cors) -> worker::Result<Response> {
    let resp = Response::empty()?.with_status(304);
    let headers = resp.headers();
    headers.set("ETag", etag)?;
    headers.set("Cache-Control", "no-cache")?;
    cors.apply_to(headers)?;
    Ok(resp)
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
