//! JavaScript copies of the constant strings the hub hands the runtime on
//! every request: the description's header name, the SQL of a publish,
//! the slow-consumer close reason.
//!
//! A `&str` argument is copied out of the module's memory and decoded with
//! `TextDecoder` at every call (issue 19 counted 5 of the 13 strings a
//! publish copied out as constants). The V8 profile put a short one at
//! ~1.5 µs; that profiler overstates native calls, and in a loop in
//! workerd a short decode costs ~0.2 µs: a small saving, kept because it
//! costs nothing. [`js_text`] makes
//! the JavaScript string once per instance and hands out the same value
//! every time, which crosses as a reference.
//!
//! Invariants: only `'static` strings are kept, so the set is bounded by
//! the program's own text; each is made once per WebAssembly instance and
//! never freed (a reset instance starts with a fresh memory, and an empty
//! set).

use std::cell::RefCell;
use wasm_bindgen::JsValue;

thread_local! {
    /// The strings made so far, by the address and length of their text.
    static MADE: RefCell<Vec<(&'static str, &'static JsValue)>> = const { RefCell::new(Vec::new()) };
}

/// The JavaScript string of `text`, made on first use.
pub fn js_text(text: &'static str) -> &'static JsValue {
    let same = |(kept, _): &&(&'static str, &'static JsValue)| std::ptr::eq(*kept, text);
    if let Some((_, value)) = MADE.with(|made| made.borrow().iter().find(same).copied()) {
        return value;
    }
    // Made outside the borrow: making a value may not call back here, but
    // nothing is lost if it did.
    let value: &'static JsValue = Box::leak(Box::new(JsValue::from_str(text)));
    MADE.with(|made| made.borrow_mut().push((text, value)));
    value
}
