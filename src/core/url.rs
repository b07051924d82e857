//! A request's URL, read without a URL parser.
//!
//! The runtime hands the Worker `request.url` already serialized by the
//! WHATWG URL parser: scheme, `://`, host, then the path (never empty for
//! http(s): at least `/`), then `?query`; `#` never reaches a server. So
//! splitting at the first `/` after the host and the first `?` after it
//! gives exactly the parts a parser would, without building a URL object
//! per request (a full parse cost ~15 µs a request in the V8 profile).
//!
//! Query pairs decode as `application/x-www-form-urlencoded` (what
//! `URLSearchParams` and the `url` crate's `query_pairs` do): `&`
//! separates pairs, the first `=` splits a pair, `+` is a space, `%XX` is
//! a byte, and bytes that are not UTF-8 become U+FFFD.
//!
//! Pure.

use percent_encoding::percent_decode;
use std::borrow::Cow;

/// The parts of a serialized request URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `scheme://host[:port]`, without the path.
    pub base: &'a str,
    /// The path, as serialized (percent-encoded), starting with `/`.
    pub path: &'a str,
    /// The query without its `?` (empty when there is none).
    pub query: &'a str,
}

impl<'a> UrlParts<'a> {
    /// Splits a URL as the runtime serializes it. A URL without `://` is
    /// taken as a path (with its query).
    pub fn split(url: &'a str) -> UrlParts<'a> {
        // The scheme ends at the first `:`; a substring search for `://`
        // cost more, and could match in the query of a URL without one.
        let after_scheme = url
            .find(':')
            .filter(|&i| url[i..].starts_with("://"))
            .map_or(0, |i| i + 3);
        let path_start = url[after_scheme..]
            .find(['/', '?'])
            .map_or(url.len(), |i| after_scheme + i);
        let (base, rest) = url.split_at(path_start);
        let rest = rest.split('#').next().unwrap_or_default();
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        UrlParts {
            base,
            path: if path.is_empty() { "/" } else { path },
            query,
        }
    }

    /// The query's pairs, decoded, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        query_pairs(self.query)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// The decoded pairs of a query string (without its `?`).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

/// One form-urlencoded component: `+` is a space, then percent-decoding.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let spaced: Cow<'_, [u8]> = if s.contains('+') {
        Cow::Owned(
            s.bytes()
                .map(|b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(s.as_bytes())
    };
    let bytes: Vec<u8> = percent_decode(&spaced).collect();
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

/// The first value of `name` among decoded `pairs`.
pub fn first<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_what_the_runtime_serializes() {
        let table: &[(&str, (&str, &str, &str))] = &[
            (
                "http://127.0.0.1:8787/rooms/a/messages?since=3&limit=5",
                (
                    "http://127.0.0.1:8787",
                    "/rooms/a/messages",
                    "since=3&limit=5",
                ),
            ),
            ("https://hub.example/", ("https://hub.example", "/", "")),
            ("https://hub.example", ("https://hub.example", "/", "")),
            (
                "https://hub.example?x=1",
                ("https://hub.example", "/", "x=1"),
            ),
            (
                "https://hub.example/rooms/caf%C3%A9?",
                ("https://hub.example", "/rooms/caf%C3%A9", ""),
            ),
            (
                "https://hub.example/a?b=c?d#frag",
                ("https://hub.example", "/a", "b=c?d"),
            ),
            ("/rooms/a?x", ("", "/rooms/a", "x")),
            (
                "/rooms/chat:1/messages?next=https://x/y",
                ("", "/rooms/chat:1/messages", "next=https://x/y"),
            ),
            (
                "http://127.0.0.1:8787/rooms/chat:1?u=a://b",
                ("http://127.0.0.1:8787", "/rooms/chat:1", "u=a://b"),
            ),
        ];
        for (url, (base, path, query)) in table {
            assert_eq!(
                UrlParts::split(url),
                UrlParts { base, path, query },
                "{url}"
            );
        }
    }

    #[test]
    fn query_pairs_decode_as_form_urlencoded() {
        let got = UrlParts::split(
            "https://h/p?since=3&&token=a+b%2Bc&flag&e=&=v&bad=%ZZ&utf=%C3%A9&lone=%E9&since=4",
        )
        .pairs();
        let want: Vec<(String, String)> = [
            ("since", "3"),
            ("token", "a b+c"),
            ("flag", ""),
            ("e", ""),
            ("", "v"),
            ("bad", "%ZZ"),
            ("utf", "é"),
            ("lone", "\u{FFFD}"),
            ("since", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(first(&got, "since"), Some("3"), "the first value");
        assert_eq!(first(&got, "nope"), None);
        assert_eq!(UrlParts::split("https://h/p").pairs(), vec![]);
    }
}
