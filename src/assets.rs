//! Static assets the Worker serves itself: the browser client, its types
//! and the demo page. Embedded at compile time, so a deploy is one bundle
//! and the client always matches the hub that serves it.

/// A static response body and its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

const CLIENT_JS: Asset = Asset {
    body: include_str!("client/client.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLIENT_TYPES: Asset = Asset {
    body: include_str!("client/client.d.ts"),
    content_type: "application/typescript; charset=utf-8",
};
const DEMO_PAGE: Asset = Asset {
    body: include_str!("client/demo.html"),
    content_type: "text/html; charset=utf-8",
};

/// The asset at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/" | "/index.html" => Some(DEMO_PAGE),
        "/client.js" => Some(CLIENT_JS),
        "/client.d.ts" => Some(CLIENT_TYPES),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_with_their_types() {
        assert!(asset("/client.js")
            .unwrap()
            .body
            .contains("export function connect"));
        assert!(asset("/client.d.ts")
            .unwrap()
            .body
            .contains("export function connect"));
        assert!(asset("/").unwrap().content_type.starts_with("text/html"));
        assert_eq!(asset("/rooms/x"), None);
        assert_eq!(asset("/client.js/x"), None);
    }
}
