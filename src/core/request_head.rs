//! The part of a client's request the Worker reads, packed by JavaScript
//! into one string so that reading it is one boundary crossing.
//!
//! Reading the method, the URL, the headers object and each header from
//! Rust is a crossing each, with a string copied each way (five to eight
//! per request; measured with bench/profile.mjs, issue 19). The entry
//! module (`RequestHeads` in src/memo.js) packs the method, the URL and the
//! headers of [`READ_HEADERS`] as lines ([`RequestHead::parse`] reads them
//! back), for the Worker and for the room; the packed string is also the
//! key under which the entry module remembers the crate's decisions, so
//! whatever the crate reads of a request must be in it:
//!
//! ```text
//! METHOD \n URL \n (for each name in READ_HEADERS: "-" if absent, "+value" if present) \n …
//! ```
//!
//! Invariants: a serialized URL and a header value never contain a line
//! break (the URL is percent-encoded, and the runtime refuses header values
//! with CR or LF), so the lines are unambiguous; a header outside
//! [`READ_HEADERS`] is not answered here (`None`), and the caller reads it
//! from the runtime.

/// The headers the Worker may read from a client's request, in the order
/// they are packed (joined by `\n` for the JavaScript side). The last is
/// `core::request::ROOM_REQUEST_HEADER`: the Worker sends the room a
/// client's own request only when the client did not set it.
pub const READ_HEADERS: &str = "Origin\nAuthorization\nIf-None-Match\nCF-Connecting-IP\nContent-Type\nContent-Length\nIdempotency-Key\nLast-Event-ID\nUpgrade\nX-Hub-Request";

/// [`READ_HEADERS`], one name each, for lookups (a test keeps the two the
/// same): splitting the list at every lookup cost a request several µs.
const READ_HEADER_NAMES: [&str; 10] = [
    "Origin",
    "Authorization",
    "If-None-Match",
    "CF-Connecting-IP",
    "Content-Type",
    "Content-Length",
    "Idempotency-Key",
    "Last-Event-ID",
    "Upgrade",
    "X-Hub-Request",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub url: String,
    /// The values of [`READ_HEADERS`], in order.
    values: Vec<Option<String>>,
}

impl RequestHead {
    /// Reads the packed form; `None` if it is not what the packer writes.
    pub fn parse(packed: &str) -> Option<RequestHead> {
        let mut lines = packed.split('\n');
        let method = lines.next()?.to_owned();
        let url = lines.next()?.to_owned();
        let values = READ_HEADER_NAMES
            .iter()
            .map(|_| {
                let line = lines.next()?;
                match line.split_at_checked(1)? {
                    ("-", "") => Some(None),
                    ("+", value) => Some(Some(value.to_owned())),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        if lines.next().is_some() {
            return None;
        }
        Some(RequestHead {
            method,
            url,
            values,
        })
    }

    /// A head whose headers were not read: [`RequestHead::header`] answers
    /// `None` for every name, so the caller asks the runtime.
    pub fn without_headers(method: String, url: String) -> RequestHead {
        RequestHead {
            method,
            url,
            values: Vec::new(),
        }
    }

    /// The value of header `name` (case-insensitive) if it is one of
    /// [`READ_HEADERS`] and was read: `Some(None)` when the request has no
    /// such header, `None` when this head cannot say.
    pub fn header(&self, name: &str) -> Option<Option<&str>> {
        READ_HEADER_NAMES
            .iter()
            .position(|listed| listed.eq_ignore_ascii_case(name))
            .and_then(|i| self.values.get(i))
            .map(|value| value.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(values: &[Option<&str>]) -> String {
        let mut out = String::from("GET\nhttps://hub.example/rooms/a/messages?limit=50");
        for v in values {
            out.push('\n');
            match v {
                None => out.push('-'),
                Some(v) => {
                    out.push('+');
                    out.push_str(v);
                }
            }
        }
        out
    }

    fn all_absent() -> Vec<Option<&'static str>> {
        READ_HEADERS.split('\n').map(|_| None).collect()
    }

    #[test]
    fn reads_the_method_the_url_and_each_listed_header() {
        let mut values = all_absent();
        values[0] = Some("https://app.example");
        values[2] = Some("\"e1-5\"");
        values[5] = Some(""); // present but empty is not absent
        let head = RequestHead::parse(&packed(&values)).unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.url, "https://hub.example/rooms/a/messages?limit=50");
        assert_eq!(head.header("origin"), Some(Some("https://app.example")));
        assert_eq!(head.header("If-None-Match"), Some(Some("\"e1-5\"")));
        assert_eq!(head.header("Content-Length"), Some(Some("")));
        assert_eq!(head.header("Authorization"), Some(None));
        assert_eq!(head.header("Accept"), None, "not listed: read elsewhere");
    }

    #[test]
    fn a_value_may_hold_the_markers_themselves() {
        let mut values = all_absent();
        values[1] = Some("-+Bearer -x+");
        let head = RequestHead::parse(&packed(&values)).unwrap();
        assert_eq!(head.header("Authorization"), Some(Some("-+Bearer -x+")));
    }

    #[test]
    fn anything_else_is_refused() {
        let values = all_absent();
        let good = packed(&values);
        assert!(RequestHead::parse(&good).is_some());
        // One line short, one too many, a bad marker, nothing at all.
        assert!(RequestHead::parse(good.rsplit_once('\n').unwrap().0).is_none());
        assert!(RequestHead::parse(&format!("{good}\n-")).is_none());
        assert!(RequestHead::parse(&good.replacen("\n-", "\n*", 1)).is_none());
        assert!(RequestHead::parse("").is_none());
    }

    #[test]
    fn the_names_looked_up_are_the_names_packed() {
        assert_eq!(READ_HEADER_NAMES.join("\n"), READ_HEADERS);
    }

    #[test]
    fn the_description_header_is_read_with_the_others() {
        let listed = READ_HEADERS.split('\n');
        let name = crate::core::request::ROOM_REQUEST_HEADER;
        assert_eq!(listed.filter(|n| *n == name).count(), 1);
    }

    #[test]
    fn a_head_without_headers_answers_none_for_every_name() {
        let head = RequestHead::without_headers("GET".into(), "https://h/".into());
        assert_eq!(head.header("Origin"), None);
        assert_eq!(head.header("Accept"), None);
    }
}
