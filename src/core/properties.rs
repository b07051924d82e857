//! Property tests of the pure parsers: whatever bytes arrive, they never
//! panic, and what they accept keeps the invariants the transports rely on.

use super::auth::{mint, token_from, verify, Alg, Claims, Identity, Jws};
use super::cursor::Epoch;
use super::cursor::{parse_seq, sse_cursor, Seq};
use super::error::HubError;
use super::etag::{etag_for, if_none_match};
use super::jwks::JwkSet;
use super::names::{EventName, RoomName};
use super::protocol::Publish;
use super::query::PollQuery;
use super::request::{RoomAction, RoomRequest};
use super::session::{on_text_frame, SocketMeta};
use super::settings::Settings;
use super::sse::encode_event;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;

const SECRET: &[u8] = b"prop-secret";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Headers of every algorithm, with any `kid` and any signature bytes:
    /// the parse never panics, keeps exactly the three algorithms, and a
    /// public-key token never passes the HS256 check nor picks a key of
    /// another type from a set.
    #[test]
    fn public_key_headers_parse_exactly(
        alg in prop_oneof![
            Just("HS256".to_owned()), Just("RS256".to_owned()), Just("ES256".to_owned()),
            Just("none".to_owned()), Just("RS384".to_owned()), "[A-Za-z0-9]{0,8}",
        ],
        kid in proptest::option::of("[ -~]{0,40}"),
        sig in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let header = serde_json::json!({"alg": alg, "kid": kid}).to_string();
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"a","exp":9}"#),
            URL_SAFE_NO_PAD.encode(&sig),
        );
        match Jws::parse(&token) {
            Ok(jws) => {
                prop_assert!(matches!(alg.as_str(), "HS256" | "RS256" | "ES256"), "{} parsed", alg);
                prop_assert_eq!(jws.alg.as_str(), alg.as_str());
                prop_assert_eq!(jws.kid.as_deref(), kid.as_deref());
                if jws.alg != Alg::Hs256 {
                    prop_assert!(jws.verify_hs256(&[SECRET]).is_err());
                }
                let set = JwkSet::parse(r#"{"keys":[{"kty":"RSA","kid":"r","n":"n","e":"AQAB"},{"kty":"EC","kid":"e","crv":"P-256","x":"x","y":"y"}]}"#).unwrap();
                if let Ok(key) = set.choose(jws.alg, jws.kid.as_deref()) {
                    let want = if jws.alg == Alg::Rs256 { "RSA" } else { "EC" };
                    prop_assert_eq!(key.kty.as_str(), want);
                }
            }
            Err(e) => prop_assert_eq!(e.code(), "unauthorized"),
        }
    }

    #[test]
    fn token_verification_never_panics(token in ".{0,600}", now in any::<u64>()) {
        let _ = verify(&token, SECRET, now);
    }

    /// A real HS256 header and well-formed claims under a random
    /// signature: the parse succeeds, so this reaches the signature check,
    /// and that check is what refuses it.
    #[test]
    fn a_random_signature_is_refused_by_the_signature_check(
        sub in "[a-z]{1,20}",
        exp in 1u64..u64::MAX / 2,
        sig in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let claims = Claims { sub, exp, nbf: None, rooms: vec!["*".into()], can: None };
        let minted = mint(&claims, SECRET);
        let signing_input = &minted[..minted.rfind('.').unwrap()];
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        prop_assert_eq!(verify(&token, SECRET, 0), Err(HubError::Unauthorized("bad signature")));
    }

    #[test]
    fn a_flipped_signature_byte_is_refused(sub in "[a-z]{1,20}", flip in 0usize..43) {
        let claims = Claims { sub, exp: 10, nbf: None, rooms: vec!["*".into()], can: None };
        let token = mint(&claims, SECRET);
        let sig_start = token.rfind('.').unwrap() + 1;
        let mut bytes = token.into_bytes();
        let i = sig_start + flip % (bytes.len() - sig_start);
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let refused = verify(&tampered, SECRET, 0);
        prop_assert!(
            matches!(refused, Err(HubError::Unauthorized("bad signature" | "malformed token"))),
            "{:?}", refused
        );
    }

    #[test]
    fn token_sources_never_panic(h in proptest::option::of(".{0,100}"), q in proptest::option::of(".{0,100}")) {
        let _ = token_from(h.as_deref(), q.as_deref());
    }

    /// Any `sub` and origin (any Unicode, control characters included)
    /// cross to the room in a valid header value and come back equal.
    #[test]
    fn room_descriptions_survive_the_header(sub in "\\PC{0,40}|.{0,40}|[\\x00-\\x7f]{0,40}", origin in proptest::option::of(".{0,40}")) {
        let req = RoomRequest {
            room: RoomName::parse("lobby").unwrap(),
            action: RoomAction::ReadState,
            identity: Identity::User { sub, can_publish: true },
            addr: None,
            origin,
            expires_s: None,
            ticket: None,
        };
        let header = req.to_header();
        prop_assert!(header.bytes().all(|b| (b' '..=b'~').contains(&b)), "{}", header);
        prop_assert_eq!(RoomRequest::from_header(Some(&header)), Ok(req));
    }

    #[test]
    fn accepted_names_use_only_the_safe_alphabet(s in ".{0,200}") {
        let safe = |n: &str| n.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
        if let Ok(room) = RoomName::parse(&s) {
            prop_assert!(safe(room.as_str()) && !room.as_str().is_empty() && room.as_str().len() <= 128);
        }
        if let Ok(event) = EventName::parse(Some(&s)) {
            prop_assert!(safe(event.as_str()) && event.as_str().len() <= 64);
        }
    }

    #[test]
    fn if_none_match_never_panics_and_finds_the_current_tag(header in ".{0,200}", last in any::<u64>(), epoch in any::<u32>()) {
        let current = etag_for(Epoch(epoch), Seq(last));
        let _ = if_none_match(&header, &current);
        let list = format!("{header:?}, {current}");
        prop_assert!(if_none_match(&list, &current) || header.contains('"'));
    }

    #[test]
    fn cursors_never_panic(since in proptest::option::of(".{0,40}"), last_event_id in proptest::option::of(".{0,40}")) {
        let _ = sse_cursor(since.as_deref(), last_event_id.as_deref());
        if let Some(s) = since.as_deref() {
            if let Ok(seq) = parse_seq("since", s) {
                let printed = seq.0.to_string();
                prop_assert_eq!(printed.trim_start_matches('0'), s.trim_start_matches('0'));
            }
        }
    }

    #[test]
    fn poll_queries_never_panic(pairs in proptest::collection::vec(("(since|limit|wait|x)", ".{0,12}"), 0..6)) {
        let _ = PollQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), 30);
    }

    #[test]
    fn sse_frames_never_carry_a_raw_newline_from_data(text in ".{0,300}", event in "[a-z]{1,10}", id in 1u64..1_000_000) {
        // Whatever the data string holds, the stored envelope is one line,
        // so the SSE frame has exactly its three field lines.
        let body = serde_json::json!({"event": event, "data": text}).to_string();
        let publish = Publish::from_http_body(&body, 1 << 20).unwrap();
        let envelope = publish.envelope(Seq(id), Some("u\nx"), 0, 1 << 20).unwrap();
        let frame = encode_event(Seq(id), &event, &envelope).expect("an envelope always frames");
        prop_assert!(!envelope.contains('\n') && !envelope.contains('\r'));
        let lines: Vec<&str> = frame.trim_end_matches('\n').split('\n').collect();
        prop_assert_eq!(lines.len(), 3);
        prop_assert!(lines[0].starts_with("id: ") && lines[1].starts_with("event: ") && lines[2].starts_with("data: "));
    }

    #[test]
    fn client_frames_never_panic(frame in ".{0,400}") {
        let settings = Settings::default();
        let mut meta = SocketMeta::new("r".into(), "c".into(), None, true, &settings, 0);
        let _ = on_text_frame(&mut meta, &frame, &settings, 0);
    }

    #[test]
    fn publish_bodies_never_panic(body in ".{0,400}") {
        let _ = Publish::from_http_body(&body, 65536);
    }
}
