//! `POST /publish`: the app's backend publishes one message to up to 100
//! rooms at once (docs/PROTOCOL.md, "The backend's key").
//!
//! The Worker checks the request as a whole (the key, the body), then asks
//! every named room at the same time to store the message, each under the
//! request's `idempotency_key`, so a retry returns the same ids and stores
//! nothing twice. The answer has one entry per room, in request order: its
//! id, or its own error; one room's failure never hides another's result.

use crate::core::auth::Identity;
use crate::core::backend::PublishMany;
use crate::core::error::HubError;
use crate::core::request::{RoomAction, RoomRequest};
use crate::respond::Cors;
use futures_util::future::join_all;
use serde_json::{json, Value};
use worker::{web_sys, Env, Method};

/// Room names and the rest of a request may take this much beyond the
/// message itself.
const ENVELOPE_SLACK_BYTES: usize = 16 * 1024;

pub async fn handle(
    req: &crate::routes::Incoming,
    env: &Env,
    max_message_bytes: usize,
    origin: Option<&str>,
    cors: &Cors,
) -> Result<web_sys::Response, HubError> {
    let bytes =
        crate::body::read_within(&req.req, max_message_bytes + ENVELOPE_SLACK_BYTES, None).await?;
    let body = std::str::from_utf8(&bytes)
        .map_err(|_| HubError::InvalidJson("the body is not UTF-8".into()))?;
    let many = PublishMany::parse(body)?;
    let room_body = many.room_body();
    let base = req.parts().base;
    let calls = many.targets().into_iter().map(|(name, room)| {
        let room_body = room_body.clone();
        let key = many.idempotency_key.clone();
        async move {
            let outcome = match room {
                Ok(room) => publish_to(env, base, room, key, room_body, origin).await,
                Err(e) => Err(json!(e.body())),
            };
            match outcome {
                Ok(id) => json!({ "room": name, "id": id }),
                Err(error) => json!({ "room": name, "error": error }),
            }
        }
    });
    let results: Vec<Value> = join_all(calls).await;
    crate::respond::json(200, &json!({ "results": results }), cors)
}

/// Publishes to one room as the backend; the stored id, or the error body
/// (`{"error", "message"}`) the room answered with.
async fn publish_to(
    env: &Env,
    base: &str,
    room: crate::core::names::RoomName,
    idempotency_key: Option<String>,
    body: String,
    origin: Option<&str>,
) -> Result<u64, Value> {
    let room_url = format!("{base}/rooms/{}/messages", room.as_str());
    let described = RoomRequest {
        room,
        action: RoomAction::Publish {
            idempotency_key,
            body_len: Some(body.len() as u64),
        },
        identity: Identity::Backend,
        addr: None,
        origin: origin.map(str::to_owned),
        expires_s: None,
        ticket: None,
    };
    let sent = crate::rooms_call::send(env, &room_url, Method::Post, Some(body), &described).await;
    crate::routes::forget_etag(described.room.as_str());
    let mut resp: worker::Response = match sent {
        Ok(resp) => resp.into(),
        Err(e) => return Err(json!(e.body())),
    };
    let status = resp.status_code();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    match answer["id"].as_u64() {
        Some(id) if status == 201 => Ok(id),
        _ => Err(answer),
    }
}
