//! Tokens: HS256 JWTs that grant rooms and capabilities.
//!
//! A token is accepted only if its header says `alg: HS256` (nothing else,
//! `none` included), its signature verifies against `HUB_SECRET` (a
//! constant-time compare, done by the `hmac` crate), `exp` is in the future
//! and `nbf`, when present, is not. Only then are its claims read.
//!
//! Claims: `sub` (the user; becomes `from` on every message they publish),
//! `exp`, `nbf`, `rooms` (exact names, or prefixes ending in `*`) and
//! `can` (`subscribe`, `publish`; absent means subscribe only).
//!
//! A `crit` header (critical extensions the verifier must understand) is
//! refused: the hub understands none. A `sub` with control characters is
//! refused (it would become `from`, a presence name and a log line).
//!
//! The verified identity travels from the Worker to the room inside the
//! request description (`core::request`), so a `sub` reaches the room byte
//! for byte (headers would trim spaces).
//!
//! Invariant: no error carries the token or the secret; error texts say
//! which check failed and nothing more.
//!
//! Pure: the caller passes the secret and the time.

use super::error::HubError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted; longer input is refused before any work.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a token may let its holder do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Subscribe,
    Publish,
}

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub rooms: Vec<String>,
    /// `None` when the claim is absent: subscribe only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    /// Critical extensions (RFC 7515 §4.1.11): none is understood here.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Who a request is, once checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// `HUB_SECRET` is unset: open rooms, no user, every capability.
    Anonymous,
    /// A verified user and what they may do in the requested room.
    User { sub: String, can_publish: bool },
}

impl Identity {
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User { sub, .. } => Some(sub),
        }
    }

    pub fn can_publish(&self) -> bool {
        match self {
            Identity::Anonymous => true,
            Identity::User { can_publish, .. } => *can_publish,
        }
    }
}

impl Claims {
    /// Whether `rooms` grants `room`: an exact name, or a prefix before a
    /// final `*` (`chat:*` grants `chat:x` and `chat:`, not `chatx`).
    pub fn grants_room(&self, room: &str) -> bool {
        self.rooms
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => pattern == room,
            })
    }

    /// Whether `can` grants `cap`. Unknown capability names grant nothing.
    pub fn grants(&self, cap: Capability) -> bool {
        let name = match cap {
            Capability::Subscribe => "subscribe",
            Capability::Publish => "publish",
        };
        match &self.can {
            None => cap == Capability::Subscribe,
            Some(list) => list.iter().any(|c| c == name),
        }
    }
}

/// Verifies a token and returns its claims, or `Unauthorized`.
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Claims, HubError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(HubError::Unauthorized("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HubError::Unauthorized("malformed token"));
    };
    let header: Header = decode_json(header_b64)?;
    if header.alg != "HS256" {
        return Err(HubError::Unauthorized("only HS256 tokens are accepted"));
    }
    if header.crit.is_some() {
        return Err(HubError::Unauthorized("unsupported critical header"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| HubError::Unauthorized("malformed token"))?;
    let mut mac =
        HmacSha256::new_from_slice(secret).map_err(|_| HubError::Unauthorized("bad signature"))?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| HubError::Unauthorized("bad signature"))?;

    let claims: Claims = decode_json(payload_b64)?;
    if claims.sub.is_empty() || claims.sub.len() > 256 {
        return Err(HubError::Unauthorized("sub must be 1-256 characters"));
    }
    if claims.sub.chars().any(char::is_control) {
        return Err(HubError::Unauthorized(
            "sub must not contain control characters",
        ));
    }
    if now_s >= claims.exp {
        return Err(HubError::Unauthorized("token expired"));
    }
    if claims.nbf.is_some_and(|nbf| now_s < nbf) {
        return Err(HubError::Unauthorized("token not yet valid"));
    }
    Ok(claims)
}

/// Checks that verified claims grant `room` and `needed`; returns the identity.
pub fn authorize(claims: &Claims, room: &str, needed: Capability) -> Result<Identity, HubError> {
    if !claims.grants_room(room) {
        return Err(HubError::Forbidden("the token does not grant this room"));
    }
    if !claims.grants(needed) {
        return Err(HubError::Forbidden(match needed {
            Capability::Subscribe => "the token does not grant subscribe",
            Capability::Publish => "the token does not grant publish",
        }));
    }
    Ok(Identity::User {
        sub: claims.sub.clone(),
        can_publish: claims.grants(Capability::Publish),
    })
}

/// The key of a caller's publish budget: `u:<sub>` for a verified user,
/// `ip:<address>` for an anonymous client whose address the platform gives
/// (`CF-Connecting-IP`), `None` for an anonymous client without one (they
/// share [`ANONYMOUS_KEY`]'s budget).
pub fn budget_key(identity: &Identity, addr: Option<&str>) -> Option<String> {
    match (identity.user(), addr) {
        (Some(sub), _) => Some(format!("u:{sub}")),
        (None, Some(addr)) if !addr.is_empty() => Some(format!("ip:{addr}")),
        (None, _) => None,
    }
}

/// The key of a caller's per-user connection count: `u:<sub>` for a
/// verified user; anonymous connections are bounded by the room's
/// `MAX_CONNECTIONS_PER_ROOM` only (many users may share one address).
pub fn connection_key(identity: &Identity) -> Option<String> {
    identity.user().map(|sub| format!("u:{sub}"))
}

/// The publish budget that anonymous clients without an address share.
pub const ANONYMOUS_KEY: &str = "anon";

/// The capability an action needs.
pub fn needed_for_publish(publishing: bool) -> Capability {
    if publishing {
        Capability::Publish
    } else {
        Capability::Subscribe
    }
}

/// Signs claims into an HS256 token (the `mint-token` command and tests).
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// The token of a request: `Authorization: Bearer …` wins over `?token=`.
pub fn token_from<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer.or(query_token).filter(|t| !t.is_empty())
}

fn decode_json<T: for<'de> Deserialize<'de>>(b64: &str) -> Result<T, HubError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| HubError::Unauthorized("malformed token"))?;
    serde_json::from_slice(&bytes).map_err(|_| HubError::Unauthorized("malformed token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: NOW + 60,
            nbf: None,
            rooms: vec!["chat:*".into(), "lobby".into()],
            can: Some(vec!["subscribe".into(), "publish".into()]),
        }
    }

    fn forge(header: &str, claims: &Claims, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        format!(
            "{h}.{p}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn a_minted_token_verifies() {
        let token = mint(&claims(), SECRET);
        assert_eq!(verify(&token, SECRET, NOW), Ok(claims()));
    }

    #[test]
    fn refusals() {
        let good = mint(&claims(), SECRET);
        let (h, rest) = good.split_once('.').unwrap();
        let (p, _sig) = rest.split_once('.').unwrap();
        let unsigned_none = format!("{}.{p}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        let expired = mint(
            &Claims {
                exp: NOW,
                ..claims()
            },
            SECRET,
        );
        let early = mint(
            &Claims {
                nbf: Some(NOW + 10),
                ..claims()
            },
            SECRET,
        );
        let no_sub = mint(
            &Claims {
                sub: String::new(),
                ..claims()
            },
            SECRET,
        );
        let table: Vec<(&str, String, &str)> = vec![
            ("garbage", "garbage".into(), "malformed token"),
            ("empty", String::new(), "malformed token"),
            ("two parts", format!("{h}.{p}"), "malformed token"),
            ("four parts", format!("{good}.x"), "malformed token"),
            ("wrong secret", mint(&claims(), b"other"), "bad signature"),
            (
                "tampered payload",
                format!(
                    "{h}.{}.{}",
                    URL_SAFE_NO_PAD.encode(r#"{"sub":"root","exp":9999999999,"rooms":["*"]}"#),
                    good.rsplit('.').next().unwrap()
                ),
                "bad signature",
            ),
            ("alg none", unsigned_none, "only HS256 tokens are accepted"),
            (
                "alg HS512",
                forge(r#"{"alg":"HS512"}"#, &claims(), SECRET),
                "only HS256 tokens are accepted",
            ),
            (
                "alg hs256 lowercase",
                forge(r#"{"alg":"hs256"}"#, &claims(), SECRET),
                "only HS256 tokens are accepted",
            ),
            ("expired", expired, "token expired"),
            ("not yet valid", early, "token not yet valid"),
            ("empty sub", no_sub, "sub must be 1-256 characters"),
            ("too long", "a".repeat(5000), "token too long"),
        ];
        for (name, token, why) in table {
            assert_eq!(
                verify(&token, SECRET, NOW),
                Err(HubError::Unauthorized(why)),
                "{name}"
            );
        }
        // A token missing exp is malformed, not eternal.
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"a","rooms":["x"]}"#);
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let no_exp = format!(
            "{h}.{p}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(
            verify(&no_exp, SECRET, NOW),
            Err(HubError::Unauthorized("malformed token"))
        );
    }

    #[test]
    fn room_patterns() {
        let c = claims();
        for (room, ok) in [
            ("chat:x", true),
            ("chat:", true),
            ("chatx", false),
            ("chat", false),
            ("lobby", true),
            ("lobby2", false),
            ("xlobby", false),
        ] {
            assert_eq!(c.grants_room(room), ok, "{room}");
        }
        let everything = Claims {
            rooms: vec!["*".into()],
            ..claims()
        };
        assert!(everything.grants_room("anything"));
        let none = Claims {
            rooms: vec![],
            ..claims()
        };
        assert!(!none.grants_room("lobby"));
    }

    #[test]
    fn capabilities() {
        let subscribe_only = Claims {
            can: None,
            ..claims()
        };
        assert!(subscribe_only.grants(Capability::Subscribe));
        assert!(!subscribe_only.grants(Capability::Publish));
        let publish_only = Claims {
            can: Some(vec!["publish".into()]),
            ..claims()
        };
        assert!(!publish_only.grants(Capability::Subscribe));
        assert_eq!(
            authorize(&subscribe_only, "lobby", Capability::Publish),
            Err(HubError::Forbidden("the token does not grant publish"))
        );
        assert_eq!(
            authorize(&claims(), "nope", Capability::Subscribe),
            Err(HubError::Forbidden("the token does not grant this room"))
        );
        assert_eq!(
            authorize(&subscribe_only, "lobby", Capability::Subscribe),
            Ok(Identity::User {
                sub: "alice".into(),
                can_publish: false
            })
        );
    }

    #[test]
    fn subs_with_control_characters_and_crit_headers_are_refused() {
        for sub in ["al\u{0}ice", "a\nb", "a\u{7f}", "\u{85}x"] {
            let token = mint(
                &Claims {
                    sub: sub.into(),
                    ..claims()
                },
                SECRET,
            );
            assert_eq!(
                verify(&token, SECRET, NOW),
                Err(HubError::Unauthorized(
                    "sub must not contain control characters"
                )),
                "{sub:?}"
            );
        }
        let crit = forge(r#"{"alg":"HS256","crit":["exp"]}"#, &claims(), SECRET);
        assert_eq!(
            verify(&crit, SECRET, NOW),
            Err(HubError::Unauthorized("unsupported critical header"))
        );
        // Spaces are kept as they are: " alice " is not "alice".
        let spaced = mint(
            &Claims {
                sub: " alice ".into(),
                ..claims()
            },
            SECRET,
        );
        assert_eq!(verify(&spaced, SECRET, NOW).unwrap().sub, " alice ");
    }

    #[test]
    fn budget_keys_keep_users_and_addresses_apart() {
        let user = |sub: &str| Identity::User {
            sub: sub.into(),
            can_publish: true,
        };
        assert_eq!(
            budget_key(&user("alice"), Some("1.2.3.4")).as_deref(),
            Some("u:alice")
        );
        assert_eq!(
            budget_key(&user("ip:1.2.3.4"), None).as_deref(),
            Some("u:ip:1.2.3.4")
        );
        assert_eq!(
            budget_key(&Identity::Anonymous, Some("1.2.3.4")).as_deref(),
            Some("ip:1.2.3.4")
        );
        assert_eq!(budget_key(&Identity::Anonymous, Some("")), None);
        assert_eq!(budget_key(&Identity::Anonymous, None), None);
    }

    #[test]
    fn token_sources() {
        assert_eq!(token_from(Some("Bearer abc"), Some("q")), Some("abc"));
        assert_eq!(token_from(Some("bearer  abc "), None), Some("abc"));
        assert_eq!(token_from(Some("Basic abc"), Some("q")), Some("q"));
        assert_eq!(token_from(None, Some("q")), Some("q"));
        assert_eq!(token_from(None, Some("")), None);
        assert_eq!(token_from(None, None), None);
    }

    /// Every refusal, for tokens that carry a recognisable marker in each
    /// part: no error text echoes any part of the token or the secret.
    #[test]
    fn errors_never_carry_the_token() {
        let marker = "MARKERxyz";
        let tokens = [
            mint(
                &Claims {
                    exp: 1,
                    sub: marker.into(),
                    ..claims()
                },
                SECRET,
            ),
            mint(
                &Claims {
                    sub: marker.into(),
                    ..claims()
                },
                b"wrong-secret",
            ),
            forge(&format!(r#"{{"alg":"{marker}"}}"#), &claims(), SECRET),
            format!("{marker}.{marker}.{marker}"),
            format!(
                "{}.{marker}.x",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#)
            ),
        ];
        for token in &tokens {
            let err = verify(token, SECRET, NOW).unwrap_err();
            let text = format!("{} {}", err.body().message, err.close_reason());
            assert!(!text.contains(marker), "{text}");
            assert!(!text.contains("test-secret"), "{text}");
        }
    }
}
