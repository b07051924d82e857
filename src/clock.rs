//! The runtime's clock, read at most once per synchronous stretch.
//!
//! The Workers runtime does not move `Date.now()` while code runs: time
//! advances between events and at I/O, so every read within one
//! synchronous stretch returns the same value. Each read is a boundary
//! crossing, and one publish read it seven times (issue 19). So while a
//! [`Frame`] is open (`crate::settle` opens one around the part of each
//! event that runs on the spot) the first read is kept and given to every
//! later one; outside a frame (a future resumed after an await) every call
//! reads the runtime's clock.
//!
//! Invariants: every read of the runtime's clock in the crate goes through
//! [`now_ms`]; a frame is closed before the call that opened it returns to
//! JavaScript, so a kept time is never served across an await.

use std::cell::Cell;
use worker::js_sys;

thread_local! {
    /// `None`: no frame is open. `Some(None)`: a frame is open and has not
    /// read the clock yet. `Some(Some(t))`: the time this frame read.
    static KEPT: Cell<Option<Option<f64>>> = const { Cell::new(None) };
}

/// An open frame; dropping it closes it (and restores the frame it was
/// opened in, if any).
pub struct Frame {
    outer: Option<Option<f64>>,
}

/// Opens a frame: until it is dropped, [`now_ms`] reads the clock once.
pub fn frame() -> Frame {
    Frame {
        outer: KEPT.with(|k| k.replace(Some(None))),
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        KEPT.with(|k| k.set(self.outer));
    }
}

/// Milliseconds since the epoch, from the runtime's clock.
pub fn now_ms() -> u64 {
    KEPT.with(|k| match k.get() {
        Some(Some(t)) => t,
        Some(None) => {
            let t = js_sys::Date::now();
            k.set(Some(Some(t)));
            t
        }
        None => js_sys::Date::now(),
    }) as u64
}
