//! When the I/O thread calls the app itself instead of handing the request to an app thread.
//!
//! Handing a request to an app thread and the response back costs two thread hand-offs, which
//! for a fast app are most of a request's cost (see docs/benchmarks.md). A request whose route
//! has proven fast is therefore run inline, on the I/O thread, like a single-threaded server
//! would. Slow or blocking apps keep their own threads: the I/O thread never waits on them.
//!
//! The rules, per route (method and path, without the query):
//! - a route qualifies after [`QUALIFY`] consecutive responses that each took the app less than
//!   [`FAST`] (measured on the app threads, from the app's call to the response's end);
//! - one response slower than [`SLOW`], inline or not, disqualifies it again (responses in
//!   between count for nothing: a busy CPU preempts fast apps now and then);
//! - only requests without a body left to read run inline (reading one would block);
//! - nothing runs inline while a request of a route that has not qualified is with the app
//!   threads: such a request may hold the GIL for long, and the I/O thread must not wait for it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A response is fast when the app produced it within this.
pub const FAST: Duration = Duration::from_micros(500);
/// A response this slow sends its route back to the app threads.
pub const SLOW: Duration = Duration::from_millis(2);
/// Consecutive fast responses before a route runs inline.
pub const QUALIFY: u32 = 8;
/// Routes remembered; past this the table starts over (apps with unbounded path spaces).
const MAX_ROUTES: usize = 4096;

/// Identifies a route: the method and the path of a request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey(u64);

impl RouteKey {
    pub fn new(method: &str, target: &str) -> Self {
        let path = target.split('?').next().unwrap_or(target);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        method.hash(&mut h);
        path.hash(&mut h);
        Self(h.finish())
    }
}

/// A worker's inline decisions; shared by its connection tasks.
#[derive(Debug)]
pub struct InlinePolicy {
    enabled: bool,
    /// Consecutive fast responses per route.
    streaks: Mutex<HashMap<u64, u32>>,
    /// Requests of unqualified routes now with the app threads.
    unproven_in_app: AtomicUsize,
}

/// Held while a request of an unqualified route is with the app threads.
#[derive(Debug)]
pub struct Unproven<'a>(&'a InlinePolicy);

impl Drop for Unproven<'_> {
    fn drop(&mut self) {
        self.0.unproven_in_app.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InlinePolicy {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            streaks: Mutex::new(HashMap::new()),
            unproven_in_app: AtomicUsize::new(0),
        }
    }

    fn streak(&self, key: RouteKey) -> u32 {
        self.streaks
            .lock()
            .map(|s| s.get(&key.0).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// True when a request of this route (with no body to read) should run inline.
    pub fn inline(&self, key: RouteKey) -> bool {
        self.enabled
            && self.unproven_in_app.load(Ordering::Acquire) == 0
            && self.streak(key) >= QUALIFY
    }

    /// Notes a request going to the app threads; the guard marks the route unproven while held
    /// if it has not qualified.
    pub fn dispatched(&self, key: RouteKey) -> Option<Unproven<'_>> {
        if !self.enabled || self.streak(key) >= QUALIFY {
            return None;
        }
        self.unproven_in_app.fetch_add(1, Ordering::AcqRel);
        Some(Unproven(self))
    }

    /// Records how long the app took to produce a response of this route.
    pub fn record(&self, key: RouteKey, took: Duration) {
        if !self.enabled || (took > FAST && took <= SLOW) {
            // In between: a fast app preempted by a busy CPU looks like this now and then;
            // it neither proves nor disproves the route.
            return;
        }
        let Ok(mut streaks) = self.streaks.lock() else {
            return;
        };
        if took <= FAST {
            if streaks.len() >= MAX_ROUTES && !streaks.contains_key(&key.0) {
                streaks.clear();
            }
            let s = streaks.entry(key.0).or_insert(0);
            *s = s.saturating_add(1);
        } else if streaks.remove(&key.0).is_some_and(|s| s >= QUALIFY) {
            log::debug!(
                "a response took {} ms: its route goes back to the app threads",
                took.as_millis()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_qualifies_after_consecutive_fast_responses_and_one_slow_one_disqualifies_it() {
        let p = InlinePolicy::new(true);
        let hello = RouteKey::new("GET", "/hello?x=1");
        assert_eq!(
            hello,
            RouteKey::new("GET", "/hello?y=2"),
            "the query is not the route"
        );
        assert_ne!(hello, RouteKey::new("POST", "/hello"));
        for _ in 0..QUALIFY - 1 {
            p.record(hello, Duration::from_micros(50));
        }
        assert!(!p.inline(hello));
        p.record(hello, Duration::from_micros(50));
        assert!(p.inline(hello));
        p.record(hello, Duration::from_millis(1));
        assert!(
            p.inline(hello),
            "in between FAST and SLOW counts for nothing"
        );
        p.record(hello, Duration::from_millis(5));
        assert!(!p.inline(hello));
    }

    #[test]
    fn nothing_runs_inline_while_an_unproven_request_is_with_the_app_threads() {
        let p = InlinePolicy::new(true);
        let fast = RouteKey::new("GET", "/fast");
        let slow = RouteKey::new("GET", "/slow");
        for _ in 0..QUALIFY {
            p.record(fast, Duration::from_micros(10));
        }
        assert!(
            p.dispatched(fast).is_none(),
            "a proven route is not tracked"
        );
        let guard = p.dispatched(slow);
        assert!(guard.is_some());
        assert!(!p.inline(fast));
        drop(guard);
        assert!(p.inline(fast));
    }

    #[test]
    fn disabled_policy_never_inlines() {
        let p = InlinePolicy::new(false);
        let k = RouteKey::new("GET", "/");
        for _ in 0..QUALIFY * 2 {
            p.record(k, Duration::from_micros(1));
        }
        assert!(!p.inline(k));
        assert!(p.dispatched(k).is_none());
    }
}
