//! The Worker entry: routes each request and forwards room requests to the
//! room's Durable Object (binding `ROOMS`, one object per room name).
//!
//! The Worker answers on its own what needs no room: unknown routes (404),
//! wrong methods (405), CORS preflights, cross-site requests from origins
//! outside `ALLOWED_ORIGINS` (403), WebSocket routes without an upgrade
//! (426) and bad settings (500). Everything else is the room's.

use crate::core::error::HubError;
use crate::core::route::{route, Action, Method, Route};
use crate::core::settings::Settings;
use crate::durable::settings_from_env;
use crate::respond::{self, Cors};
use worker::{event, Context, Env, Request, Response};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let settings = match settings_from_env(&env) {
        Ok(s) => s,
        Err(e) => return Ok(respond::error(&e, &Cors::None)),
    };
    let origin = req.headers().get("Origin").ok().flatten();
    let cors = Cors::for_origin(&settings.allowed_origins, origin.as_deref());
    match handle(req, &env, &settings, origin.as_deref(), &cors).await {
        Ok(resp) => Ok(resp),
        Err(e) => Ok(respond::error(&e, &cors)),
    }
}

async fn handle(
    req: Request,
    env: &Env,
    settings: &Settings,
    origin: Option<&str>,
    cors: &Cors,
) -> Result<Response, HubError> {
    let url = req.url().map_err(respond::internal)?;
    let Route { room, endpoint } = route(url.path())?;
    let same_origin = origin == Some(url.origin().ascii_serialization().as_str());
    if !same_origin && !settings.allowed_origins.allows(origin) {
        return Err(HubError::OriginNotAllowed);
    }
    let method = Method::parse(req.method().as_ref());
    if method == Method::Options {
        return cors.preflight(endpoint.allow()).map_err(respond::internal);
    }
    let action = endpoint.action(method)?;
    if action == Action::OpenSocket && !is_websocket_upgrade(&req) {
        return Err(HubError::UpgradeRequired);
    }
    let namespace = env.durable_object("ROOMS").map_err(respond::internal)?;
    let stub = namespace
        .id_from_name(room.as_str())
        .and_then(|id| id.get_stub())
        .map_err(respond::internal)?;
    stub.fetch_with_request(req)
        .await
        .map_err(respond::internal)
}

fn is_websocket_upgrade(req: &Request) -> bool {
    req.headers()
        .get("Upgrade")
        .ok()
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}
