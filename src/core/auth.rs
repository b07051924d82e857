//! Tokens: JWTs that grant rooms and capabilities.
//!
//! A token is read in three steps. [`Jws::parse`] splits it and reads its
//! header: `alg` must be HS256, RS256 or ES256 (nothing else, `none`
//! included) and no `crit` extension is understood. The signature is then
//! checked with a key of that algorithm only: HS256 against `HUB_SECRET` or
//! `HUB_SECRET_PREVIOUS` here ([`Jws::verify_hs256`], a constant-time
//! compare by the `hmac` crate), RS256/ES256 by the runtime's WebCrypto
//! with a key chosen from the configured JWK set (`core::jwks`, `src/jwks.rs`),
//! so an HS256 token is never checked against a public key. Only then are
//! its claims read ([`Jws::claims`]): `exp` must be in the future and `nbf`,
//! when present, not, both within `TOKEN_LEEWAY_SECS`; `iss` and `aud` are
//! checked when `TOKEN_ISSUER` / `TOKEN_AUDIENCE` are set.
//!
//! Claims: `sub` (the user; becomes `from` on every message they publish),
//! `exp`, `nbf`, the grants — rooms (exact names, or prefixes ending in `*`)
//! and capabilities (`subscribe`, `publish`; absent means subscribe only),
//! under the names `TOKEN_ROOMS_CLAIM` / `TOKEN_CAN_CLAIM` (default `rooms`
//! and `can`).
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
    #[serde(default)]
    kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11): none is understood here.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The signature algorithms the hub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC-SHA-256 with a shared secret (`HUB_SECRET`).
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, a public key from a JWK set.
    Rs256,
    /// ECDSA on P-256 with SHA-256, a public key from a JWK set.
    Es256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// A token split into its parts, its header read; not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jws<'a> {
    pub alg: Alg,
    /// The key id the header names, if any.
    pub kid: Option<String>,
    /// What the signature signs: `header.payload`, as sent.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
    payload_b64: &'a str,
}

/// The rules claims must meet, from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRules {
    /// Slack for `exp` and `nbf`, in seconds (`TOKEN_LEEWAY_SECS`).
    pub leeway_s: u64,
    /// `TOKEN_ISSUER`: `iss` must equal it.
    pub issuer: Option<String>,
    /// `TOKEN_AUDIENCE`: `aud` must be it or contain it.
    pub audience: Option<String>,
    /// The claim holding the room grants (`TOKEN_ROOMS_CLAIM`).
    pub rooms_claim: String,
    /// The claim holding the capabilities (`TOKEN_CAN_CLAIM`).
    pub can_claim: String,
}

impl Default for ClaimRules {
    fn default() -> Self {
        ClaimRules {
            leeway_s: 30,
            issuer: None,
            audience: None,
            rooms_claim: "rooms".into(),
            can_claim: "can".into(),
        }
    }
}

/// Who a request is, once checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// `HUB_SECRET` is unset: open rooms, no user, every capability.
    Anonymous,
    /// A verified user and what they may do in the requested room.
    User { sub: String, can_publish: bool },
    /// The app's backend (`HUB_API_KEY`): every room, every capability,
    /// the key-only endpoints included; it may set `from` on what it
    /// publishes.
    Backend,
}

impl Identity {
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous | Identity::Backend => None,
            Identity::User { sub, .. } => Some(sub),
        }
    }

    pub fn can_publish(&self) -> bool {
        match self {
            Identity::Anonymous | Identity::Backend => true,
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

impl<'a> Jws<'a> {
    /// Splits a token and reads its header. Refuses oversized and malformed
    /// tokens, algorithms other than HS256/RS256/ES256 (`none` included,
    /// and names spelled differently) and any `crit` extension.
    pub fn parse(token: &'a str) -> Result<Jws<'a>, HubError> {
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
        let alg = match header.alg.as_str() {
            "HS256" => Alg::Hs256,
            "RS256" => Alg::Rs256,
            "ES256" => Alg::Es256,
            _ => {
                return Err(HubError::Unauthorized(
                    "only HS256, RS256 and ES256 tokens are accepted",
                ))
            }
        };
        if header.crit.is_some() {
            return Err(HubError::Unauthorized("unsupported critical header"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| HubError::Unauthorized("malformed token"))?;
        Ok(Jws {
            alg,
            kid: header.kid,
            signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
            signature,
            payload_b64,
        })
    }

    /// Checks an HS256 signature against each secret (the current one and,
    /// during a rotation, the previous one).
    pub fn verify_hs256(&self, secrets: &[&[u8]]) -> Result<(), HubError> {
        if self.alg != Alg::Hs256 {
            return Err(HubError::Unauthorized("bad signature"));
        }
        let verifies = |secret: &&[u8]| {
            HmacSha256::new_from_slice(secret).is_ok_and(|mut mac| {
                mac.update(self.signing_input.as_bytes());
                mac.verify_slice(&self.signature).is_ok()
            })
        };
        if secrets.iter().any(verifies) {
            Ok(())
        } else {
            Err(HubError::Unauthorized("bad signature"))
        }
    }

    /// Reads and checks the claims of a token whose signature verified.
    pub fn claims(&self, rules: &ClaimRules, now_s: u64) -> Result<Claims, HubError> {
        let malformed = || HubError::Unauthorized("malformed token");
        let payload: serde_json::Map<String, serde_json::Value> = decode_json(self.payload_b64)?;
        let text = |name: &str| -> Result<Option<String>, HubError> {
            match payload.get(name) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(malformed()),
            }
        };
        // NumericDate: seconds, possibly with a fraction (RFC 7519 §2).
        let time = |name: &str| -> Result<Option<u64>, HubError> {
            match payload.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .map(Some)
                    .ok_or_else(malformed),
            }
        };
        let list = |name: &str| -> Result<Option<Vec<String>>, HubError> {
            match payload.get(name) {
                None => Ok(None),
                Some(v) => serde_json::from_value(v.clone())
                    .map(Some)
                    .map_err(|_| malformed()),
            }
        };
        let sub = text("sub")?.ok_or_else(malformed)?;
        let exp = time("exp")?.ok_or_else(malformed)?;
        let nbf = time("nbf")?;
        if sub.is_empty() || sub.len() > 256 {
            return Err(HubError::Unauthorized("sub must be 1-256 characters"));
        }
        if sub.chars().any(char::is_control) {
            return Err(HubError::Unauthorized(
                "sub must not contain control characters",
            ));
        }
        if now_s >= exp.saturating_add(rules.leeway_s) {
            return Err(HubError::Unauthorized("token expired"));
        }
        if nbf.is_some_and(|nbf| now_s.saturating_add(rules.leeway_s) < nbf) {
            return Err(HubError::Unauthorized("token not yet valid"));
        }
        if let Some(issuer) = &rules.issuer {
            if text("iss")?.as_ref() != Some(issuer) {
                return Err(HubError::Unauthorized("wrong issuer"));
            }
        }
        if let Some(audience) = &rules.audience {
            let matches = match payload.get("aud") {
                Some(serde_json::Value::String(a)) => a == audience,
                Some(serde_json::Value::Array(list)) => {
                    list.iter().any(|a| a.as_str() == Some(audience))
                }
                _ => false,
            };
            if !matches {
                return Err(HubError::Unauthorized("wrong audience"));
            }
        }
        Ok(Claims {
            sub,
            exp,
            nbf,
            rooms: list(&rules.rooms_claim)?.unwrap_or_default(),
            can: list(&rules.can_claim)?,
        })
    }
}

/// Verifies an HS256 token with one secret and no leeway: the unit and
/// property tests' shorthand for the three steps.
#[cfg(test)]
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Claims, HubError> {
    let jws = Jws::parse(token)?;
    if jws.alg != Alg::Hs256 {
        return Err(HubError::Unauthorized("bad signature"));
    }
    jws.verify_hs256(&[secret])?;
    let rules = ClaimRules {
        leeway_s: 0,
        ..ClaimRules::default()
    };
    jws.claims(&rules, now_s)
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
            (
                "alg none",
                unsigned_none,
                "only HS256, RS256 and ES256 tokens are accepted",
            ),
            (
                "alg HS512",
                forge(r#"{"alg":"HS512"}"#, &claims(), SECRET),
                "only HS256, RS256 and ES256 tokens are accepted",
            ),
            (
                "alg hs256 lowercase",
                forge(r#"{"alg":"hs256"}"#, &claims(), SECRET),
                "only HS256, RS256 and ES256 tokens are accepted",
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

    /// Signs an arbitrary JSON payload with HS256.
    fn signed(payload: &str, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k-1"}"#);
        let p = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        format!(
            "{h}.{p}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn check(token: &str, rules: &ClaimRules, now: u64) -> Result<Claims, HubError> {
        let jws = Jws::parse(token)?;
        jws.verify_hs256(&[SECRET])?;
        jws.claims(rules, now)
    }

    #[test]
    fn the_previous_secret_verifies_during_a_rotation() {
        let old = mint(&claims(), b"old-secret");
        let jws = Jws::parse(&old).unwrap();
        assert_eq!(jws.kid, None);
        assert_eq!(jws.verify_hs256(&[SECRET, b"old-secret"]), Ok(()));
        assert_eq!(
            jws.verify_hs256(&[SECRET]),
            Err(HubError::Unauthorized("bad signature"))
        );
        assert_eq!(
            jws.verify_hs256(&[]),
            Err(HubError::Unauthorized("bad signature"))
        );
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let rules = ClaimRules::default();
        let token = signed(r#"{"sub":"a","exp":1000,"nbf":900}"#, SECRET);
        assert_eq!(Jws::parse(&token).unwrap().kid.as_deref(), Some("k-1"));
        assert!(check(&token, &rules, 1029).is_ok(), "29 s after exp");
        assert_eq!(
            check(&token, &rules, 1030),
            Err(HubError::Unauthorized("token expired"))
        );
        assert!(check(&token, &rules, 870).is_ok(), "30 s before nbf");
        assert_eq!(
            check(&token, &rules, 869),
            Err(HubError::Unauthorized("token not yet valid"))
        );
        // A NumericDate may carry a fraction.
        let fractional = signed(r#"{"sub":"a","exp":1000.5}"#, SECRET);
        assert_eq!(check(&fractional, &rules, 0).unwrap().exp, 1000);
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let rules = ClaimRules {
            issuer: Some("https://id.example/".into()),
            audience: Some("hub".into()),
            ..ClaimRules::default()
        };
        let ok = [
            r#"{"sub":"a","exp":99,"iss":"https://id.example/","aud":"hub"}"#,
            r#"{"sub":"a","exp":99,"iss":"https://id.example/","aud":["api","hub"]}"#,
        ];
        for payload in ok {
            assert!(
                check(&signed(payload, SECRET), &rules, 1).is_ok(),
                "{payload}"
            );
        }
        let refused = [
            (r#"{"sub":"a","exp":99,"aud":"hub"}"#, "wrong issuer"),
            (
                r#"{"sub":"a","exp":99,"iss":"https://evil.example/","aud":"hub"}"#,
                "wrong issuer",
            ),
            (
                r#"{"sub":"a","exp":99,"iss":"https://id.example/"}"#,
                "wrong audience",
            ),
            (
                r#"{"sub":"a","exp":99,"iss":"https://id.example/","aud":["api"]}"#,
                "wrong audience",
            ),
            (
                r#"{"sub":"a","exp":99,"iss":"https://id.example/","aud":"hubs"}"#,
                "wrong audience",
            ),
        ];
        for (payload, why) in refused {
            assert_eq!(
                check(&signed(payload, SECRET), &rules, 1),
                Err(HubError::Unauthorized(why)),
                "{payload}"
            );
        }
        // Unset, they are not checked.
        let any = signed(r#"{"sub":"a","exp":99,"iss":"x","aud":"y"}"#, SECRET);
        assert!(check(&any, &ClaimRules::default(), 1).is_ok());
    }

    #[test]
    fn grants_under_configured_claim_names() {
        let rules = ClaimRules {
            rooms_claim: "https://hub.example/rooms".into(),
            can_claim: "https://hub.example/can".into(),
            ..ClaimRules::default()
        };
        let token = signed(
            r#"{"sub":"a","exp":99,"rooms":["ignored"],"https://hub.example/rooms":["chat:*"],"https://hub.example/can":["publish"]}"#,
            SECRET,
        );
        let c = check(&token, &rules, 1).unwrap();
        assert_eq!(c.rooms, vec!["chat:*".to_owned()]);
        assert!(c.grants(Capability::Publish));
        // A grant claim of the wrong shape is malformed, not empty.
        let bad = signed(r#"{"sub":"a","exp":99,"rooms":"chat:*"}"#, SECRET);
        assert_eq!(
            check(&bad, &ClaimRules::default(), 1),
            Err(HubError::Unauthorized("malformed token"))
        );
    }

    #[test]
    fn public_key_algorithms_parse_but_never_verify_as_hs256() {
        for alg in ["RS256", "ES256"] {
            let header = format!(r#"{{"alg":"{alg}","kid":"k"}}"#);
            let token = forge(&header, &claims(), SECRET);
            let jws = Jws::parse(&token).unwrap();
            assert_eq!(jws.alg.as_str(), alg);
            // Signed with the secret as an HMAC key: still refused.
            assert_eq!(
                jws.verify_hs256(&[SECRET]),
                Err(HubError::Unauthorized("bad signature"))
            );
        }
        for alg in ["none", "HS512", "RS512", "ES384", "PS256", "EdDSA", "rs256"] {
            let token = forge(&format!(r#"{{"alg":"{alg}"}}"#), &claims(), SECRET);
            assert_eq!(
                Jws::parse(&token).unwrap_err(),
                HubError::Unauthorized("only HS256, RS256 and ES256 tokens are accepted"),
                "{alg}"
            );
        }
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
