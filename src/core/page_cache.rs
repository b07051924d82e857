//! The room's memory of the poll pages it answered since its last message.
//!
//! Pollers of one room ask for the same few pages: after a message, every
//! poller behind by one asks for `since=<previous id>`, and clients without
//! a cursor ask for the newest `limit`. A page is a function of the room's
//! state (its ETag) and the query (cursor and limit), so until the next
//! message it can be answered from memory instead of a storage query (the
//! query was ~40% of a `200`'s time in the V8 profile).
//!
//! Invariants: an entry is served only for the ETag it was built under
//! (any accepted message, or a new epoch, changes the ETag and empties the
//! cache); at most [`MAX_PAGES`] pages of at most [`MAX_PAGE_BYTES`] each
//! are kept, so the cache holds at most 256 KiB.
//!
//! Pure.

use super::cursor::Cursor;
use std::rc::Rc;

/// Pages remembered at most.
pub const MAX_PAGES: usize = 4;
/// Larger pages are not remembered (they are rare, and memory is not).
pub const MAX_PAGE_BYTES: usize = 64 * 1024;

/// One page's query: cursor and limit.
pub type PageKey = (Cursor, u32);

/// A remembered answer: its body, and how many messages it holds (for the
/// room's meter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPage {
    pub body: Rc<str>,
    pub messages: u64,
}

impl std::ops::Deref for CachedPage {
    type Target = str;
    fn deref(&self) -> &str {
        &self.body
    }
}

/// The pages answered under one ETag; see the module docs.
#[derive(Debug, Default)]
pub struct PageCache {
    etag: String,
    /// Most recently stored last.
    pages: Vec<(PageKey, CachedPage)>,
}

impl PageCache {
    /// The body answered for `key` under `etag`, if remembered.
    pub fn get(&self, etag: &str, key: PageKey) -> Option<CachedPage> {
        if self.etag != etag {
            return None;
        }
        self.pages
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, body)| body.clone())
    }

    /// Remembers `body` as the answer for `key` under `etag`; a new ETag
    /// forgets every page of the old one.
    pub fn put(&mut self, etag: &str, key: PageKey, body: CachedPage) {
        if body.len() > MAX_PAGE_BYTES {
            return;
        }
        if self.etag != etag {
            self.etag.clear();
            self.etag.push_str(etag);
            self.pages.clear();
        }
        self.pages.retain(|(k, _)| *k != key);
        if self.pages.len() >= MAX_PAGES {
            self.pages.remove(0);
        }
        self.pages.push((key, body));
    }

    /// Pages remembered.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cursor::Seq;

    const E1: &str = "\"a-1\"";
    const E2: &str = "\"a-2\"";

    fn body(s: &str) -> CachedPage {
        CachedPage {
            body: Rc::from(s),
            messages: 1,
        }
    }

    #[test]
    fn a_page_is_served_only_under_its_etag_and_query() {
        let mut c = PageCache::default();
        let key = (Cursor::After(Seq(4)), 50);
        assert_eq!(c.get(E1, key), None);
        c.put(E1, key, body("p1"));
        assert_eq!(c.get(E1, key).as_deref(), Some("p1"));
        assert_eq!(
            c.get(E1, (Cursor::After(Seq(4)), 49)),
            None,
            "another limit"
        );
        assert_eq!(
            c.get(E1, (Cursor::After(Seq(5)), 50)),
            None,
            "another cursor"
        );
        assert_eq!(c.get(E1, (Cursor::Latest, 50)), None, "no cursor");
        assert_eq!(c.get(E2, key), None, "another state of the room");
    }

    #[test]
    fn a_new_etag_forgets_the_old_pages() {
        let mut c = PageCache::default();
        c.put(E1, (Cursor::Latest, 50), body("old"));
        c.put(E2, (Cursor::Latest, 10), body("new"));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(E1, (Cursor::Latest, 50)), None);
        assert_eq!(c.get(E2, (Cursor::Latest, 50)), None);
        assert_eq!(c.get(E2, (Cursor::Latest, 10)).as_deref(), Some("new"));
    }

    #[test]
    fn bounded_in_pages_and_in_bytes() {
        let mut c = PageCache::default();
        for i in 0..(MAX_PAGES as u32 + 2) {
            c.put(E1, (Cursor::Latest, i + 1), body(&i.to_string()));
        }
        assert_eq!(c.len(), MAX_PAGES);
        assert_eq!(
            c.get(E1, (Cursor::Latest, 1)),
            None,
            "the oldest went first"
        );
        assert!(c.get(E1, (Cursor::Latest, MAX_PAGES as u32 + 2)).is_some());
        c.put(
            E1,
            (Cursor::Latest, 1),
            body(&"x".repeat(MAX_PAGE_BYTES + 1)),
        );
        assert_eq!(c.get(E1, (Cursor::Latest, 1)), None, "too large to keep");
        // Storing a page again replaces it, taking no second slot.
        c.put(E1, (Cursor::Latest, 3), body("again"));
        c.put(E1, (Cursor::Latest, 3), body("again2"));
        assert_eq!(c.len(), MAX_PAGES);
        assert_eq!(c.get(E1, (Cursor::Latest, 3)).as_deref(), Some("again2"));
    }
}
