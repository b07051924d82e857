//! Settings from `[vars]`, with the defaults of docs/PROTOCOL.md, "Settings".
//!
//! Every value is validated once, when the first request arrives. A value
//! that does not parse is an error ([`HubError::BadConfig`]) that fails every
//! request loudly, never a silent fallback to the default.
//!
//! Pure: the glue passes a lookup function over the Worker's environment.

use super::auth::ClaimRules;
use super::error::HubError;
use super::jwks::JwkSet;

/// The hub's settings. See the README's Settings table for what each does.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Messages kept per room; older ones are dropped.
    pub history_limit: u32,
    /// Largest request body, WebSocket frame and stored envelope, in bytes.
    pub max_message_bytes: usize,
    /// Token-bucket refill per second; 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// Token-bucket size.
    pub rate_burst: u32,
    /// Live connections per user per room; 0 turns the limit off.
    /// Anonymous connections are bounded by `max_connections_per_room`.
    pub max_connections_per_user: u32,
    /// Live connections per room, all transports and users; 0 = off.
    pub max_connections_per_room: u32,
    /// Seconds between SSE heartbeats.
    pub heartbeat_secs: u32,
    /// Longest long-poll `wait`, in seconds.
    pub long_poll_max_secs: u32,
    /// Members a room tracks one by one (`join`/`leave`, full lists);
    /// above it presence is a count (see `presence.rs`).
    pub presence_max_members: u32,
    /// Origins allowed for WebSocket upgrades and CORS.
    pub allowed_origins: AllowedOrigins,
    /// How token claims are checked (`TOKEN_LEEWAY_SECS`, `TOKEN_ISSUER`,
    /// `TOKEN_AUDIENCE`, `TOKEN_ROOMS_CLAIM`, `TOKEN_CAN_CLAIM`).
    pub token_rules: ClaimRules,
    /// An identity provider's public keys, inline (`JWKS`).
    pub jwks: Option<JwkSet>,
    /// Where to fetch an identity provider's public keys (`JWKS_URL`).
    pub jwks_url: Option<String>,
    /// Where rooms POST their webhook events (`WEBHOOK_URL`); off when unset.
    pub webhook_url: Option<String>,
    /// Attempts per webhook event before it is dropped and counted.
    pub webhook_max_attempts: u32,
    /// Messages older than this many seconds leave the history; 0 = off.
    pub history_ttl_secs: u32,
    /// A room with no live connection and no publish for this many seconds
    /// erases its storage; 0 = off.
    pub room_idle_ttl_secs: u32,
    /// How long (ms) the Worker answers a repeat conditional poll `304`
    /// from its own memory of the room's ETag (`core::poll_cache`); 0 = off.
    pub poll_cache_ms: u32,
}

/// `ALLOWED_ORIGINS`: `*` or a comma-separated list of exact origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request's `Origin` is allowed. A request without `Origin`
    /// (curl, a server, a native app) is not a cross-site browser request.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (AllowedOrigins::Any, _) | (_, None) => true,
            (AllowedOrigins::List(list), Some(o)) => list.iter().any(|a| a == o),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            history_limit: 1000,
            max_message_bytes: 65536,
            rate_per_sec: 20,
            rate_burst: 40,
            max_connections_per_user: 5,
            max_connections_per_room: 10_000,
            heartbeat_secs: 15,
            long_poll_max_secs: 30,
            presence_max_members: 1000,
            allowed_origins: AllowedOrigins::Any,
            token_rules: ClaimRules::default(),
            jwks: None,
            jwks_url: None,
            webhook_url: None,
            webhook_max_attempts: 12,
            history_ttl_secs: 0,
            room_idle_ttl_secs: 0,
            poll_cache_ms: 0,
        }
    }
}

/// Upper bounds that keep a typo from turning into an outage.
const MAX_HISTORY_LIMIT: u32 = 100_000;
/// The runtime's WebSocket message limit is 1 MiB.
const MAX_MESSAGE_BYTES_CEILING: usize = 1 << 20;
const MAX_LONG_POLL_SECS: u32 = 300;
const MAX_HEARTBEAT_SECS: u32 = 3600;
/// The platform's limit of WebSockets per Durable Object.
const MAX_CONNECTIONS_PER_ROOM_CEILING: u32 = 32_768;
/// The shortest `HUB_SECRET`: 32 bytes (256 bits, the HMAC-SHA-256 block
/// strength); anything shorter can be brute-forced offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;
/// A poll cache older than a minute would let pollers miss messages for
/// longer than any poll interval worth caching.
const MAX_POLL_CACHE_MS: u32 = 60_000;
/// Past this, one join costs more sends than a room can make in a second.
const MAX_PRESENCE_MEMBERS: u32 = 100_000;
const MAX_TOKEN_LEEWAY_SECS: u32 = 3600;
/// Ten years: longer is the same as off, and a typo should not overflow.
const MAX_TTL_SECS: u32 = 10 * 366 * 24 * 3600;

impl Settings {
    /// Reads every setting through `lookup`, which returns a `[vars]` value or `None`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, HubError> {
        let d = Settings::default();
        Settings {
            history_limit: number(
                &lookup,
                "HISTORY_LIMIT",
                d.history_limit,
                1,
                MAX_HISTORY_LIMIT,
            )?,
            max_message_bytes: number(
                &lookup,
                "MAX_MESSAGE_BYTES",
                d.max_message_bytes as u32,
                256,
                MAX_MESSAGE_BYTES_CEILING as u32,
            )? as usize,
            rate_per_sec: number(&lookup, "RATE_PER_SEC", d.rate_per_sec, 0, 100_000)?,
            rate_burst: number(&lookup, "RATE_BURST", d.rate_burst, 0, 1_000_000)?,
            max_connections_per_user: number(
                &lookup,
                "MAX_CONNECTIONS_PER_USER",
                d.max_connections_per_user,
                0,
                32_768,
            )?,
            max_connections_per_room: number(
                &lookup,
                "MAX_CONNECTIONS_PER_ROOM",
                d.max_connections_per_room,
                0,
                MAX_CONNECTIONS_PER_ROOM_CEILING,
            )?,
            heartbeat_secs: number(
                &lookup,
                "HEARTBEAT_SECS",
                d.heartbeat_secs,
                1,
                MAX_HEARTBEAT_SECS,
            )?,
            long_poll_max_secs: number(
                &lookup,
                "LONG_POLL_MAX_SECS",
                d.long_poll_max_secs,
                0,
                MAX_LONG_POLL_SECS,
            )?,
            presence_max_members: number(
                &lookup,
                "PRESENCE_MAX_MEMBERS",
                d.presence_max_members,
                0,
                MAX_PRESENCE_MEMBERS,
            )?,
            allowed_origins: match lookup("ALLOWED_ORIGINS") {
                None => d.allowed_origins,
                Some(v) => parse_origins(&v)?,
            },
            token_rules: ClaimRules {
                leeway_s: u64::from(number(
                    &lookup,
                    "TOKEN_LEEWAY_SECS",
                    d.token_rules.leeway_s as u32,
                    0,
                    MAX_TOKEN_LEEWAY_SECS,
                )?),
                issuer: text(&lookup, "TOKEN_ISSUER"),
                audience: text(&lookup, "TOKEN_AUDIENCE"),
                rooms_claim: text(&lookup, "TOKEN_ROOMS_CLAIM")
                    .unwrap_or(d.token_rules.rooms_claim),
                can_claim: text(&lookup, "TOKEN_CAN_CLAIM").unwrap_or(d.token_rules.can_claim),
            },
            jwks: text(&lookup, "JWKS")
                .map(|v| JwkSet::parse(&v))
                .transpose()?,
            jwks_url: match text(&lookup, "JWKS_URL") {
                Some(url) if !is_keys_url(&url) => {
                    return Err(HubError::BadConfig(format!(
                        "JWKS_URL must be an https URL (http only on localhost), got {url:?}"
                    )))
                }
                url => url,
            },
            webhook_url: match text(&lookup, "WEBHOOK_URL") {
                Some(url) if !is_keys_url(&url) => {
                    return Err(HubError::BadConfig(format!(
                        "WEBHOOK_URL must be an https URL (http only on localhost), got {url:?}"
                    )))
                }
                url => url,
            },
            webhook_max_attempts: number(
                &lookup,
                "WEBHOOK_MAX_ATTEMPTS",
                d.webhook_max_attempts,
                1,
                100,
            )?,
            history_ttl_secs: number(
                &lookup,
                "HISTORY_TTL_SECS",
                d.history_ttl_secs,
                0,
                MAX_TTL_SECS,
            )?,
            room_idle_ttl_secs: number(
                &lookup,
                "ROOM_IDLE_TTL_SECS",
                d.room_idle_ttl_secs,
                0,
                MAX_TTL_SECS,
            )?,
            poll_cache_ms: number(
                &lookup,
                "POLL_CACHE_MS",
                d.poll_cache_ms,
                0,
                MAX_POLL_CACHE_MS,
            )?,
        }
        .checked()
    }

    /// Refuses combinations no single value shows: a rate limit with an
    /// empty bucket would refuse every publish forever.
    fn checked(self) -> Result<Self, HubError> {
        if self.rate_per_sec > 0 && self.rate_burst == 0 {
            return Err(HubError::BadConfig(
                "RATE_BURST=0 with RATE_PER_SEC>0 refuses every publish; use RATE_BURST>=1 or RATE_PER_SEC=0".into(),
            ));
        }
        Ok(self)
    }
}

/// Checks a secret (`HUB_SECRET`, `HUB_SECRET_PREVIOUS`, named `name`):
/// unset or empty means none; otherwise it must be at least
/// [`MIN_SECRET_BYTES`] long, or every request fails loudly.
pub fn check_secret(name: &str, secret: &str) -> Result<(), HubError> {
    if !secret.is_empty() && secret.len() < MIN_SECRET_BYTES {
        return Err(HubError::BadConfig(format!(
            "{name} is {} bytes; use at least {MIN_SECRET_BYTES} random bytes \
             (e.g. `openssl rand -base64 48`)",
            secret.len()
        )));
    }
    Ok(())
}

/// Whether `url` may be used for keys or webhooks: https, or http to this
/// machine only (an on-path attacker who can swap the keys can forge every
/// token, and one who reads webhooks reads every message).
fn is_keys_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    matches!(host, "localhost" | "127.0.0.1") || rest.starts_with("[::1]")
}

/// A text setting: unset and blank are the same (not configured).
fn text(lookup: &impl Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    lookup(key)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, HubError> {
    let Some(raw) = lookup(key) else {
        return Ok(default);
    };
    let n: u32 = raw
        .trim()
        .parse()
        .map_err(|_| HubError::BadConfig(format!("{key}={raw:?}: expected a whole number")))?;
    if n < min || n > max {
        return Err(HubError::BadConfig(format!(
            "{key}={n}: expected {min}..={max}"
        )));
    }
    Ok(n)
}

fn parse_origins(raw: &str) -> Result<AllowedOrigins, HubError> {
    if raw.trim() == "*" {
        return Ok(AllowedOrigins::Any);
    }
    let mut list = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let valid = (part.starts_with("https://") || part.starts_with("http://"))
            && !part.ends_with('/')
            && !part.contains(char::is_whitespace);
        if !valid {
            return Err(HubError::BadConfig(format!(
                "ALLOWED_ORIGINS: {part:?} is not an origin like https://example.com"
            )));
        }
        list.push(part.to_owned());
    }
    if list.is_empty() {
        return Err(HubError::BadConfig(
            "ALLOWED_ORIGINS is empty; use * or a list of origins".into(),
        ));
    }
    Ok(AllowedOrigins::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, HubError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| pairs.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_match_the_protocol() {
        let s = with(&[]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.history_limit, 1000);
        assert_eq!(s.max_message_bytes, 65536);
        assert_eq!((s.rate_per_sec, s.rate_burst), (20, 40));
        assert_eq!(s.max_connections_per_user, 5);
        assert_eq!(s.max_connections_per_room, 10_000);
        assert_eq!((s.heartbeat_secs, s.long_poll_max_secs), (15, 30));
        assert_eq!(s.presence_max_members, 1000);
        assert_eq!(s.poll_cache_ms, 0, "the poll cache is off by default");
    }

    #[test]
    fn poll_cache_ms() {
        assert_eq!(
            with(&[("POLL_CACHE_MS", "1000")]).unwrap().poll_cache_ms,
            1000
        );
        assert_eq!(with(&[("POLL_CACHE_MS", " 0 ")]).unwrap().poll_cache_ms, 0);
        assert_eq!(
            with(&[("POLL_CACHE_MS", "60000")]).unwrap().poll_cache_ms,
            60_000
        );
        for bad in ["60001", "-1", "1s", "0.5", ""] {
            match with(&[("POLL_CACHE_MS", bad)]) {
                Err(HubError::BadConfig(why)) => assert!(why.contains("POLL_CACHE_MS"), "{why}"),
                other => panic!("POLL_CACHE_MS={bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn values_parse_and_bad_values_fail_loudly() {
        let s = with(&[
            ("HISTORY_LIMIT", "10"),
            ("RATE_PER_SEC", "0"),
            ("PRESENCE_MAX_MEMBERS", "0"),
            ("HISTORY_TTL_SECS", "3600"),
            ("ROOM_IDLE_TTL_SECS", "86400"),
        ])
        .unwrap();
        assert_eq!((s.history_limit, s.rate_per_sec), (10, 0));
        assert_eq!((s.history_ttl_secs, s.room_idle_ttl_secs), (3600, 86400));
        assert_eq!(s.presence_max_members, 0);
        let bad: &[(&str, &str)] = &[
            ("HISTORY_LIMIT", "0"),
            ("HISTORY_LIMIT", "ten"),
            ("HISTORY_LIMIT", "-1"),
            ("HISTORY_TTL_SECS", "1d"),
            ("ROOM_IDLE_TTL_SECS", "999999999999"),
            ("MAX_MESSAGE_BYTES", "2000000"),
            ("HEARTBEAT_SECS", "0"),
            ("LONG_POLL_MAX_SECS", "1.5"),
            ("PRESENCE_MAX_MEMBERS", "100001"),
            ("PRESENCE_MAX_MEMBERS", "many"),
            ("ALLOWED_ORIGINS", "example.com"),
            ("ALLOWED_ORIGINS", "https://a.com/"),
            ("ALLOWED_ORIGINS", " , "),
            ("RATE_BURST", "0"),
            ("TOKEN_LEEWAY_SECS", "3601"),
            ("JWKS", "{\"keys\": 3}"),
            ("JWKS_URL", "id.example/jwks.json"),
            ("JWKS_URL", "http://id.example/jwks.json"),
            ("JWKS_URL", "http://127.0.0.1.evil.example/jwks.json"),
        ];
        for (k, v) in bad {
            assert!(
                matches!(with(&[(k, v)]), Err(HubError::BadConfig(_))),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn short_secrets_fail_loudly() {
        assert!(check_secret("HUB_SECRET", "").is_ok());
        assert!(check_secret("HUB_SECRET", &"s".repeat(32)).is_ok());
        match check_secret("HUB_SECRET_PREVIOUS", "topsecret") {
            Err(HubError::BadConfig(why)) => {
                assert!(!why.contains("topsecret"), "{why}");
                assert!(why.starts_with("HUB_SECRET_PREVIOUS"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_settings() {
        let s = with(&[
            ("TOKEN_LEEWAY_SECS", "0"),
            ("TOKEN_ISSUER", "https://id.example/"),
            ("TOKEN_AUDIENCE", " hub "),
            ("TOKEN_ROOMS_CLAIM", "https://hub.example/rooms"),
            (
                "JWKS",
                r#"{"keys":[{"kty":"EC","crv":"P-256","x":"x","y":"y"}]}"#,
            ),
            ("JWKS_URL", "https://id.example/.well-known/jwks.json"),
        ])
        .unwrap();
        assert_eq!(s.token_rules.leeway_s, 0);
        assert_eq!(s.token_rules.issuer.as_deref(), Some("https://id.example/"));
        assert_eq!(s.token_rules.audience.as_deref(), Some("hub"));
        assert_eq!(s.token_rules.rooms_claim, "https://hub.example/rooms");
        assert_eq!(s.token_rules.can_claim, "can");
        assert_eq!(s.jwks.map(|j| j.keys.len()), Some(1));
        assert!(s.jwks_url.is_some());
        for local in [
            "http://127.0.0.1:8790/jwks.json",
            "http://localhost/jwks",
            "http://[::1]:9/k",
        ] {
            assert!(with(&[("JWKS_URL", local)]).is_ok(), "{local}");
        }
        let d = with(&[("TOKEN_ISSUER", "  ")]).unwrap();
        assert_eq!(d.token_rules, ClaimRules::default(), "blank is unset");
    }

    #[test]
    fn origins() {
        let s = with(&[("ALLOWED_ORIGINS", "https://a.com, http://localhost:8787")]).unwrap();
        assert!(s.allowed_origins.allows(Some("https://a.com")));
        assert!(s.allowed_origins.allows(Some("http://localhost:8787")));
        assert!(!s.allowed_origins.allows(Some("https://evil.com")));
        assert!(!s.allowed_origins.allows(Some("https://a.com.evil.com")));
        assert!(s.allowed_origins.allows(None));
        assert!(AllowedOrigins::Any.allows(Some("https://evil.com")));
    }
}
