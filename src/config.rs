//! The hub's configuration from the Worker environment, read once per
//! isolate: `[vars]` settings and the `HUB_SECRET` secret.
//!
//! Bindings cannot change while an isolate lives (a new deployment starts
//! new isolates), so parsing them once keeps every request, the `304` path
//! included, from crossing into JavaScript eight times for settings it
//! already knows. A bad setting (a short secret included) is not cached:
//! every request fails loudly.

use crate::core::error::HubError;
use crate::core::settings::{check_secret, Settings};
use std::cell::RefCell;
use std::rc::Rc;
use worker::Env;

thread_local! {
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
    static SECRET: RefCell<Option<Option<Rc<str>>>> = const { RefCell::new(None) };
}

/// The settings from `[vars]`, parsed on first use.
pub fn settings(env: &Env) -> Result<Rc<Settings>, HubError> {
    if let Some(s) = SETTINGS.with(|c| c.borrow().clone()) {
        return Ok(s);
    }
    let parsed = Rc::new(Settings::from_lookup(|key| {
        env.var(key).ok().map(|v| v.to_string())
    })?);
    SETTINGS.with(|c| *c.borrow_mut() = Some(parsed.clone()));
    Ok(parsed)
}

/// `HUB_SECRET`, when set and non-empty; an error when it is too short.
pub fn hub_secret(env: &Env) -> Result<Option<Rc<str>>, HubError> {
    if let Some(s) = SECRET.with(|c| c.borrow().clone()) {
        return Ok(s);
    }
    let raw = env
        .secret("HUB_SECRET")
        .map(|s| s.to_string())
        .unwrap_or_default();
    check_secret(&raw)?;
    let secret: Option<Rc<str>> = (!raw.is_empty()).then(|| Rc::from(raw));
    SECRET.with(|c| *c.borrow_mut() = Some(secret.clone()));
    Ok(secret)
}
