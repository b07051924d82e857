//! The hub's configuration from the Worker environment, read once per
//! isolate: `[vars]` settings and the `HUB_SECRET` / `HUB_SECRET_PREVIOUS`
//! secrets.
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
    static SECRETS: RefCell<Option<Rc<Secrets>>> = const { RefCell::new(None) };
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

/// The HS256 secrets: `HUB_SECRET` (the one to mint with) and, during a
/// rotation, `HUB_SECRET_PREVIOUS`; both verify.
#[derive(Debug, Default)]
pub struct Secrets {
    pub current: Option<Vec<u8>>,
    pub previous: Option<Vec<u8>>,
}

impl Secrets {
    /// Every secret that verifies, current first.
    pub fn verifying(&self) -> Vec<&[u8]> {
        self.current
            .iter()
            .chain(self.previous.iter())
            .map(Vec::as_slice)
            .collect()
    }
}

thread_local! {
    static API_KEYS: RefCell<Option<Rc<Vec<String>>>> = const { RefCell::new(None) };
}

/// The backend's keys (`HUB_API_KEY`, comma-separated during a rotation);
/// empty when none is configured.
pub fn api_keys(env: &Env) -> Result<Rc<Vec<String>>, HubError> {
    if let Some(k) = API_KEYS.with(|c| c.borrow().clone()) {
        return Ok(k);
    }
    let raw = env
        .secret("HUB_API_KEY")
        .map(|s| s.to_string())
        .unwrap_or_default();
    let keys = crate::core::backend::parse_api_keys(&raw);
    for key in &keys {
        check_secret("HUB_API_KEY", key)?;
    }
    let keys = Rc::new(keys);
    API_KEYS.with(|c| *c.borrow_mut() = Some(keys.clone()));
    Ok(keys)
}

/// The webhook signing key from `WEBHOOK_SECRET` (`whsec_…`), if set.
pub fn webhook_key(env: &Env) -> Result<Option<Vec<u8>>, HubError> {
    let raw = env
        .secret("WEBHOOK_SECRET")
        .map(|s| s.to_string())
        .unwrap_or_default();
    if raw.trim().is_empty() {
        return Ok(None);
    }
    crate::core::webhooks::signing_key(raw.trim()).map(Some)
}

/// The secrets, when set and non-empty; an error when one is too short.
pub fn secrets(env: &Env) -> Result<Rc<Secrets>, HubError> {
    if let Some(s) = SECRETS.with(|c| c.borrow().clone()) {
        return Ok(s);
    }
    let read = |name: &str| -> Result<Option<Vec<u8>>, HubError> {
        let raw = env.secret(name).map(|s| s.to_string()).unwrap_or_default();
        check_secret(name, &raw)?;
        Ok((!raw.is_empty()).then(|| raw.into_bytes()))
    };
    let secrets = Rc::new(Secrets {
        current: read("HUB_SECRET")?,
        previous: read("HUB_SECRET_PREVIOUS")?,
    });
    SECRETS.with(|c| *c.borrow_mut() = Some(secrets.clone()));
    Ok(secrets)
}
