//! Public keys from an identity provider: a JWK set (RFC 7517), and which
//! of its keys may verify a given token.
//!
//! Invariants (the classic confusions are refused here, before any
//! cryptography):
//! - A key verifies only tokens of its own type: RS256 needs an `RSA` key,
//!   ES256 an `EC` key on `P-256`; a key that names an `alg` verifies only
//!   that `alg`; a key whose `use` is not `sig` verifies nothing. HS256
//!   tokens never reach a JWK set (see `auth`).
//! - A token that names a `kid` is verified with that key or not at all;
//!   one without a `kid` only when exactly one key fits.
//!
//! Pure: the set is parsed from text; the Worker fetches it (`src/jwks.rs`)
//! and hands the chosen key to the runtime's WebCrypto.

use super::auth::Alg;
use super::error::HubError;
use serde::{Deserialize, Serialize};

/// One public key, with the members WebCrypto needs to import it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// RSA modulus and exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve and point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A JWK set: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// Why no key was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoKey {
    /// The token names a `kid` the set does not hold: the provider may have
    /// rotated its keys, so the set is worth fetching again.
    UnknownKid,
    /// No key of the token's type, or several and no `kid` to choose.
    NoMatch,
}

impl JwkSet {
    /// Parses a JWK set; keys of types the hub cannot use are kept (and
    /// never match), so a provider's other keys do not break the set.
    pub fn parse(text: &str) -> Result<JwkSet, HubError> {
        serde_json::from_str(text)
            .map_err(|e| HubError::BadConfig(format!("JWKS: not a JWK set ({e})")))
    }

    /// The key to verify a token of `alg` naming `kid`.
    pub fn choose(&self, alg: Alg, kid: Option<&str>) -> Result<&Jwk, NoKey> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(NoKey::UnknownKid)?;
                if key.fits(alg) {
                    Ok(key)
                } else {
                    Err(NoKey::NoMatch)
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key),
                    _ => Err(NoKey::NoMatch),
                }
            }
        }
    }
}

impl Jwk {
    /// Whether this key may verify a token of `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        let type_fits = match alg {
            Alg::Rs256 => self.kty == "RSA" && self.n.is_some() && self.e.is_some(),
            Alg::Es256 => {
                self.kty == "EC"
                    && self.crv.as_deref() == Some("P-256")
                    && self.x.is_some()
                    && self.y.is_some()
            }
            Alg::Hs256 => false,
        };
        type_fits
            && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
            && self.use_.as_deref().is_none_or(|u| u == "sig")
    }

    /// The key as JSON for WebCrypto's `importKey("jwk", …)`: only the
    /// public members it needs.
    pub fn to_import_json(&self) -> String {
        let public = Jwk {
            kty: self.kty.clone(),
            kid: None,
            alg: None,
            use_: None,
            n: self.n.clone(),
            e: self.e.clone(),
            crv: self.crv.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
        };
        serde_json::to_string(&public).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa(kid: Option<&str>, alg: Option<&str>) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            kid: kid.map(Into::into),
            alg: alg.map(Into::into),
            use_: None,
            n: Some("n".into()),
            e: Some("AQAB".into()),
            crv: None,
            x: None,
            y: None,
        }
    }

    fn ec(kid: Option<&str>, crv: &str) -> Jwk {
        Jwk {
            kty: "EC".into(),
            kid: kid.map(Into::into),
            alg: None,
            use_: None,
            n: None,
            e: None,
            crv: Some(crv.into()),
            x: Some("x".into()),
            y: Some("y".into()),
        }
    }

    #[test]
    fn a_kid_picks_its_key_and_only_for_its_type() {
        let set = JwkSet {
            keys: vec![rsa(Some("r1"), Some("RS256")), ec(Some("e1"), "P-256")],
        };
        assert_eq!(set.choose(Alg::Rs256, Some("r1")), Ok(&set.keys[0]));
        assert_eq!(set.choose(Alg::Es256, Some("e1")), Ok(&set.keys[1]));
        // alg/kty confusion: an RS256 token naming the EC key, and back.
        assert_eq!(set.choose(Alg::Rs256, Some("e1")), Err(NoKey::NoMatch));
        assert_eq!(set.choose(Alg::Es256, Some("r1")), Err(NoKey::NoMatch));
        // HS256 never uses a public key.
        assert_eq!(set.choose(Alg::Hs256, Some("r1")), Err(NoKey::NoMatch));
        assert_eq!(set.choose(Alg::Hs256, None), Err(NoKey::NoMatch));
        assert_eq!(set.choose(Alg::Rs256, Some("gone")), Err(NoKey::UnknownKid));
    }

    #[test]
    fn without_a_kid_only_a_single_fitting_key() {
        let one = JwkSet {
            keys: vec![rsa(None, None), ec(None, "P-384")],
        };
        assert_eq!(one.choose(Alg::Rs256, None), Ok(&one.keys[0]));
        // P-384 is not ES256's curve.
        assert_eq!(one.choose(Alg::Es256, None), Err(NoKey::NoMatch));
        let two = JwkSet {
            keys: vec![rsa(Some("a"), None), rsa(Some("b"), None)],
        };
        assert_eq!(two.choose(Alg::Rs256, None), Err(NoKey::NoMatch));
    }

    #[test]
    fn a_key_bound_to_another_alg_or_use_does_not_fit() {
        assert!(!rsa(None, Some("RS512")).fits(Alg::Rs256));
        let mut enc = rsa(None, None);
        enc.use_ = Some("enc".into());
        assert!(!enc.fits(Alg::Rs256));
    }

    #[test]
    fn sets_parse_and_keep_only_public_members_for_import() {
        let set = JwkSet::parse(
            r#"{"keys":[{"kty":"RSA","kid":"k","n":"nn","e":"AQAB","d":"secret","use":"sig"},{"kty":"OKP","crv":"Ed25519","x":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(set.keys.len(), 2);
        let json = set.keys[0].to_import_json();
        assert!(
            !json.contains("secret") && json.contains("\"n\":\"nn\""),
            "{json}"
        );
        assert_eq!(JwkSet::parse("[]").unwrap_err().code(), "bad_config");
    }
}
