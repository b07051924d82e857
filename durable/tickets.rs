//! Connect tickets in the room: `POST /rooms/{room}/ticket` issues one for
//! the caller's token; a WebSocket or SSE request with `?ticket=` redeems
//! it (see `core::tickets` for the rules). The ticket's text comes from
//! the runtime's cryptographic random source.

use super::{now_ms, RoomObject};
use crate::core::auth::Identity;
use crate::core::error::HubError;
use crate::core::request::RoomRequest;
use crate::respond::{self, Cors};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use worker::web_sys;

#[wasm_bindgen(inline_js = r#"
export function random_ticket() {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  let text = btoa(String.fromCharCode(...bytes));
  return text.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
"#)]
extern "C" {
    fn random_ticket() -> String;
}

/// The `200` body of `POST /rooms/{room}/ticket`.
#[derive(Serialize)]
struct Issued {
    ticket: String,
    expires_in: u64,
}

impl RoomObject {
    /// Issues a ticket for the caller's identity and token deadline.
    pub(super) fn on_issue_ticket(
        &self,
        request: &RoomRequest,
        cors: &Cors,
    ) -> Result<web_sys::Response, HubError> {
        // A ticket stands for a user's token; the backend's key is not one
        // to hand to a browser (no deadline, no user to disconnect).
        if request.identity == Identity::Backend {
            return Err(HubError::Forbidden(
                "tickets are issued for user tokens, not the backend key",
            ));
        }
        let ticket = random_ticket();
        let expires_in = self.tickets.borrow_mut().issue(
            ticket.clone(),
            request.identity.clone(),
            request.expires_s,
            now_ms(),
        )?;
        // A ticket is a credential: never cached.
        respond::json_with(
            200,
            &Issued { ticket, expires_in },
            &[("Cache-Control", "no-store")],
            cors,
        )
    }

    /// The request a `?ticket=` stands for: its identity and deadline
    /// replace the placeholder the Worker sent. Without a ticket, as is.
    pub(super) fn redeem_ticket(&self, request: RoomRequest) -> Result<RoomRequest, HubError> {
        let Some(text) = request.ticket.as_deref() else {
            return Ok(request);
        };
        let ticket = self.tickets.borrow_mut().redeem(text, now_ms())?;
        Ok(RoomRequest {
            identity: ticket.identity,
            expires_s: ticket.expires_s,
            ticket: None,
            ..request
        })
    }
}
