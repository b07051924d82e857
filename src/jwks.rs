//! RS256 and ES256 tokens: the identity provider's public keys, and the
//! signature check by the runtime's WebCrypto (`crypto.subtle`); no
//! RSA or ECDSA code of our own.
//!
//! Keys come from `JWKS` (inline) or `JWKS_URL`. A fetched set is cached
//! per isolate for [`KEYS_TTL_MS`], then fetched again (so a key the
//! provider removed stops verifying). A token naming a `kid` the cached set
//! does not hold makes the set be fetched again, at most once per
//! [`REFETCH_EVERY_MS`] (a provider rotates keys rarely; a flood of made-up
//! `kid`s must not become a flood of fetches). Before the first successful
//! fetch, a failed one is retried after [`RETRY_FAILED_MS`]. Requests that
//! arrive while a fetch is under way wait for that one fetch.
//!
//! Invariant: a failure to fetch or read keys never lets a token through:
//! with no set at all it answers `503 unavailable` (the token may be
//! fine; retry), and a stale set keeps serving while the provider is
//! down. Which key may verify which token is decided in `core::jwks`.

use crate::core::auth::{Alg, Jws};
use crate::core::error::HubError;
use crate::core::jwks::{Jwk, JwkSet, NoKey};
use crate::core::settings::Settings;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{js_sys, Fetch, Method, Request, RequestInit};

/// The shortest time between two fetches of `JWKS_URL` once a set is cached.
const REFETCH_EVERY_MS: f64 = 60_000.0;
/// The shortest time between two fetches while no set could be fetched yet.
const RETRY_FAILED_MS: f64 = 5_000.0;

/// How long a fetched set is used before it is fetched again (a key the
/// provider removed, e.g. a compromised one, stops verifying by then).
const KEYS_TTL_MS: f64 = 600_000.0;

/// A fetched set and when it was fetched.
#[derive(Clone)]
struct Fetched {
    set: Rc<JwkSet>,
    at_ms: f64,
}

type PendingFetch = Shared<LocalBoxFuture<'static, Result<Rc<JwkSet>, String>>>;

thread_local! {
    static FETCHED: RefCell<Option<Fetched>> = const { RefCell::new(None) };
    static LAST_FETCH_MS: Cell<f64> = const { Cell::new(f64::NEG_INFINITY) };
    static IN_FLIGHT: RefCell<Option<PendingFetch>> = const { RefCell::new(None) };
}

#[wasm_bindgen(inline_js = r#"
// Imported keys by their JSON and algorithm: importing is the costly part.
const imported = new Map();

export async function verify_signature(jwk, alg, signature, data) {
  // Copies first: the views point into WASM memory, which may move while
  // this function awaits.
  const sig = signature.slice();
  const msg = data.slice();
  const rsa = alg === 'RS256';
  const cacheKey = alg + jwk;
  let key = imported.get(cacheKey);
  if (key === undefined) {
    key = await crypto.subtle.importKey(
      'jwk',
      JSON.parse(jwk),
      rsa ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['verify'],
    );
    if (imported.size > 64) imported.clear();
    imported.set(cacheKey, key);
  }
  return crypto.subtle.verify(
    rsa ? { name: 'RSASSA-PKCS1-v1_5' } : { name: 'ECDSA', hash: 'SHA-256' },
    key,
    sig,
    msg,
  );
}
"#)]
extern "C" {
    fn verify_signature(jwk: &str, alg: &str, signature: &[u8], data: &[u8]) -> js_sys::Promise;
}

/// Checks the signature of an RS256 or ES256 token with the configured
/// public keys.
pub async fn verify(jws: &Jws<'_>, settings: &Settings) -> Result<(), HubError> {
    let key = choose_key(jws, settings).await?;
    let promise = verify_signature(
        &key.to_import_json(),
        jws.alg.as_str(),
        &jws.signature,
        jws.signing_input.as_bytes(),
    );
    // A key WebCrypto cannot import, or a signature of the wrong shape,
    // rejects: a bad signature either way.
    match JsFuture::from(promise).await {
        Ok(v) if v.as_bool() == Some(true) => Ok(()),
        _ => Err(HubError::Unauthorized("bad signature")),
    }
}

/// The key for this token: from `JWKS`, else from the set fetched from
/// `JWKS_URL` (fetched again when stale, or for an unknown `kid` within the
/// limits; concurrent requests share one fetch).
async fn choose_key(jws: &Jws<'_>, settings: &Settings) -> Result<Jwk, HubError> {
    let no_key = HubError::Unauthorized("no key verifies this token");
    if jws.alg == Alg::Hs256 {
        return Err(no_key);
    }
    let kid = jws.kid.as_deref();
    if let Some(Ok(key)) = settings.jwks.as_ref().map(|set| set.choose(jws.alg, kid)) {
        return Ok(key.clone());
    }
    let Some(url) = settings.jwks_url.as_deref() else {
        return Err(no_key);
    };
    let now = crate::clock::now_ms() as f64;
    let cached = FETCHED.with(|f| f.borrow().clone());
    let fresh = cached.as_ref().is_some_and(|c| now - c.at_ms < KEYS_TTL_MS);
    let choice = cached.as_ref().map(|c| c.set.choose(jws.alg, kid));
    match (&choice, fresh) {
        (Some(Ok(key)), true) => return Ok((*key).clone()),
        (Some(Err(NoKey::NoMatch)), true) => return Err(no_key),
        _ => {}
    }
    // A fetch is due: the set is stale, or it lacks this `kid` (a
    // rotation), or there is none yet; within the limits.
    let since_last = now - LAST_FETCH_MS.with(Cell::get);
    let may_fetch = match (&cached, fresh) {
        (Some(_), false) => true,
        (Some(_), true) => since_last >= REFETCH_EVERY_MS,
        (None, _) => since_last >= RETRY_FAILED_MS || IN_FLIGHT.with(|f| f.borrow().is_some()),
    };
    let fetched = if may_fetch {
        Some(fetch_shared(url).await)
    } else {
        None
    };
    let set = match (fetched, cached) {
        (Some(Ok(set)), _) => set,
        // Stale keys beat none while the provider is down.
        (Some(Err(_)), Some(c)) | (None, Some(c)) => c.set,
        (Some(Err(_)), None) | (None, None) => {
            return Err(HubError::Unavailable(
                "the identity provider's keys are not available",
            ))
        }
    };
    set.choose(jws.alg, kid).cloned().map_err(|_| no_key)
}

/// Fetches the set once for every request waiting on it; keeps it on
/// success.
async fn fetch_shared(url: &str) -> Result<Rc<JwkSet>, String> {
    let pending = IN_FLIGHT.with(|f| f.borrow().clone());
    let pending = match pending {
        Some(p) => p,
        None => {
            LAST_FETCH_MS.with(|t| t.set(crate::clock::now_ms() as f64));
            let url = url.to_owned();
            let fut = async move { fetch_set(&url).await.map(Rc::new) }
                .boxed_local()
                .shared();
            IN_FLIGHT.with(|f| *f.borrow_mut() = Some(fut.clone()));
            fut
        }
    };
    let result = pending.await;
    IN_FLIGHT.with(|f| f.borrow_mut().take());
    match &result {
        Ok(set) => FETCHED.with(|f| {
            *f.borrow_mut() = Some(Fetched {
                set: set.clone(),
                at_ms: crate::clock::now_ms() as f64,
            })
        }),
        Err(e) => worker::console_error!("JWKS_URL: {}", e),
    }
    result
}

async fn fetch_set(url: &str) -> Result<JwkSet, String> {
    let mut init = RequestInit::new();
    init.with_method(Method::Get);
    let req = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
    let mut resp = Fetch::Request(req)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status_code() != 200 {
        return Err(format!("status {}", resp.status_code()));
    }
    let text = resp.text().await.map_err(|e| e.to_string())?;
    JwkSet::parse(&text).map_err(|e| format!("{e:?}"))
}
