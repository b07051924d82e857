//! The hub's configuration from the Worker environment, read once per
//! isolate: `[vars]` settings and the `HUB_SECRET` secret.
//!
//! Bindings cannot change while an isolate lives (a new deployment starts
//! new isolates), so parsing them once keeps every request, the `304` path
//! included, from crossing into JavaScript eight times for settings it
//! already knows. A bad setting is not cached: every request fails loudly.

use crate::core::error::HubError;
use crate::core::settings::Settings;
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

/// `HUB_SECRET`, when set and non-empty.
pub fn hub_secret(env: &Env) -> Option<Rc<str>> {
    if let Some(s) = SECRET.with(|c| c.borrow().clone()) {
        return s;
    }
    let secret: Option<Rc<str>> = env
        .secret("HUB_SECRET")
        .ok()
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .map(Rc::from);
    SECRET.with(|c| *c.borrow_mut() = Some(secret.clone()));
    secret
}
