//! When the I/O thread calls the app itself instead of handing the request to an app thread.
//!
//! Handing a request to an app thread and the response back costs two thread hand-offs, which
//! for a fast app are most of a request's cost (see docs/benchmarks.md). A request whose route
//! has proven fast is therefore run inline, on the I/O thread, like a single-threaded server
//! would. Slow or blocking apps keep their own threads: the I/O thread never waits on them.
//!
//! The rules, per route (method and path, without the query):
//! - a route qualifies after [`QUALIFY`] responses that each took the app less than [`FAST`]
//!   (from the app's call to the response's end), doubled for each time it was sent back;
//! - two responses in a row slower than [`SLOW`] on the I/O thread, while no app thread had a
//!   request, send it back to the app threads (one could be the thread losing its core to
//!   another process for a few ms). Otherwise times include waits for the GIL: a thread is
//!   made to give the GIL up after another has waited 5 ms for it, so with threads busy a fast
//!   app often looks 5-30 ms slow. Then only a response slower than [`BLOCKING`] counts against
//!   a route, and responses in between count for nothing. (Counting them left a fast app under load stuck
//!   on its threads, at half its speed, in about half of the runs of a benchmark.)
//! - only requests without a body left to read run inline (reading one would block); a
//!   qualified route's body of up to 64 KiB that is still arriving is awaited first, on the
//!   connection's task (`http::conn`);
//! - nothing runs inline while a request of a route that has not qualified is with the app
//!   threads: such a request may hold the GIL for long, and the I/O thread must not wait for it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::http1::request::target_path;

/// A response is fast when the app produced it within this.
pub const FAST: Duration = Duration::from_micros(500);
/// A response this slow on the I/O thread sends its route back to the app threads.
pub const SLOW: Duration = Duration::from_millis(2);
/// Responses slower than [`SLOW`] in a row (on the I/O thread, alone) that send a route back.
const SLOW_IN_A_ROW: u32 = 2;
/// A response this slow while threads contend for the GIL resets its route: more than GIL
/// waits explain.
pub const BLOCKING: Duration = Duration::from_millis(50);
/// Fast responses before a route runs inline (the first time).
pub const QUALIFY: u32 = 8;
/// Each time a route is sent back, it needs twice as many fast responses, up to this many
/// doublings: a route that is only sometimes slow stalls the I/O thread ever more rarely.
const MAX_DOUBLINGS: u32 = 10;
/// Routes remembered; past this the table starts over (apps with unbounded path spaces).
const MAX_ROUTES: usize = 4096;

/// Identifies a route: the method and the path of a request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey(u64);

/// A worker's inline decisions; shared by its connection tasks.
#[derive(Debug)]
pub struct InlinePolicy {
    enabled: bool,
    /// What is known of each route.
    routes: Mutex<HashMap<u64, Route, foldhash::fast::RandomState>>,
    /// Hashes routes into keys: fast, and seeded per process so that a client cannot pick
    /// paths that share another route's key. (SipHash, twice per request, was 2% of a hello
    /// request's instructions.)
    hasher: foldhash::fast::RandomState,
    /// Requests of unqualified routes now with the app threads.
    unproven_in_app: AtomicUsize,
    /// Requests of any route now with the app threads.
    in_app: AtomicUsize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Route {
    /// Fast responses since the route last counted as slow.
    streak: u32,
    /// Times the route was sent back to the app threads.
    demotions: u32,
    /// Slow responses in a row on the I/O thread (see [`SLOW_IN_A_ROW`]).
    slow_in_a_row: u32,
}

impl Route {
    fn qualified(&self) -> bool {
        self.streak >= QUALIFY << self.demotions.min(MAX_DOUBLINGS)
    }
}

/// Held while a request is with the app threads.
#[derive(Debug)]
pub struct InApp<'a> {
    policy: &'a InlinePolicy,
    unproven: bool,
}

impl Drop for InApp<'_> {
    fn drop(&mut self) {
        self.policy.in_app.fetch_sub(1, Ordering::AcqRel);
        if self.unproven {
            self.policy.unproven_in_app.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl InlinePolicy {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            routes: Mutex::new(HashMap::default()),
            hasher: foldhash::fast::RandomState::default(),
            unproven_in_app: AtomicUsize::new(0),
            in_app: AtomicUsize::new(0),
        }
    }

    /// The key of a request's route: its method and the path of its target.
    pub fn route(&self, method: &str, target: &str) -> RouteKey {
        RouteKey(self.hasher.hash_one((method, target_path(target))))
    }

    fn qualified(&self, key: RouteKey) -> bool {
        self.routes
            .lock()
            .is_ok_and(|r| r.get(&key.0).is_some_and(Route::qualified))
    }

    /// True when a request of this route (with no body to read) should run inline.
    pub fn inline(&self, key: RouteKey) -> bool {
        self.enabled && self.unproven_in_app.load(Ordering::Acquire) == 0 && self.qualified(key)
    }

    /// Notes a request going to the app threads, until the guard is dropped; it also marks the
    /// route unproven while held if it has not qualified.
    pub fn dispatched(&self, key: RouteKey) -> InApp<'_> {
        self.in_app.fetch_add(1, Ordering::AcqRel);
        let unproven = self.enabled && !self.qualified(key);
        if unproven {
            self.unproven_in_app.fetch_add(1, Ordering::AcqRel);
        }
        InApp {
            policy: self,
            unproven,
        }
    }

    /// True when no request is with the app threads: a call on the I/O thread that starts now
    /// has the GIL to itself, so its time is the app's own.
    pub fn app_threads_idle(&self) -> bool {
        self.in_app.load(Ordering::Acquire) == 0
    }

    /// Records how long the app took to produce a response of this route. `alone`: it ran on
    /// the I/O thread while no app thread had a request, so no GIL wait is in `took`.
    pub fn record(&self, key: RouteKey, took: Duration, alone: bool) {
        if !self.enabled {
            return;
        }
        let limit = if alone { SLOW } else { BLOCKING };
        if took > FAST && took <= limit {
            return;
        }
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        if took <= FAST {
            if routes.len() >= MAX_ROUTES && !routes.contains_key(&key.0) {
                routes.clear();
            }
            let r = routes.entry(key.0).or_default();
            r.streak = r.streak.saturating_add(1);
            r.slow_in_a_row = 0;
            return;
        }
        let Some(r) = routes.get_mut(&key.0) else {
            return;
        };
        if took <= BLOCKING {
            // Slow while alone on the I/O thread, but a busy CPU also takes a thread off its
            // core for a few ms now and then: only two in a row send the route back.
            r.slow_in_a_row = r.slow_in_a_row.saturating_add(1);
            if r.slow_in_a_row < SLOW_IN_A_ROW {
                return;
            }
        }
        if r.qualified() {
            r.demotions = r.demotions.saturating_add(1);
            log::debug!(
                "a response took {} ms: its route goes back to the app threads (sent back {} times)",
                took.as_millis(),
                r.demotions
            );
        }
        r.streak = 0;
        r.slow_in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_qualifies_after_consecutive_fast_responses_and_one_slow_one_disqualifies_it() {
        let p = InlinePolicy::new(true);
        let hello = p.route("GET", "/hello?x=1");
        assert_eq!(
            hello,
            p.route("GET", "/hello?y=2"),
            "the query is not the route"
        );
        assert_ne!(hello, p.route("POST", "/hello"));
        for _ in 0..QUALIFY - 1 {
            p.record(hello, Duration::from_micros(50), false);
        }
        assert!(!p.inline(hello));
        p.record(hello, Duration::from_millis(12), false);
        assert!(
            !p.inline(hello),
            "GIL waits on an app thread count for nothing"
        );
        p.record(hello, Duration::from_micros(50), false);
        assert!(p.inline(hello));
        p.record(hello, Duration::from_millis(1), true);
        assert!(
            p.inline(hello),
            "in between FAST and SLOW counts for nothing"
        );
        p.record(hello, Duration::from_millis(5), true);
        assert!(p.inline(hello), "one slow response may be a preemption");
        p.record(hello, Duration::from_millis(5), true);
        assert!(
            !p.inline(hello),
            "two slow in a row on the I/O thread: sent back"
        );
        for _ in 0..QUALIFY {
            p.record(hello, Duration::from_micros(50), false);
        }
        assert!(!p.inline(hello), "sent back once: twice as many needed");
        for _ in 0..QUALIFY {
            p.record(hello, Duration::from_micros(50), false);
        }
        assert!(p.inline(hello));
    }

    #[test]
    fn blocking_on_an_app_thread_resets_a_route() {
        let p = InlinePolicy::new(true);
        let k = p.route("GET", "/db");
        for _ in 0..QUALIFY - 1 {
            p.record(k, Duration::from_micros(50), false);
        }
        p.record(k, Duration::from_millis(80), false);
        p.record(k, Duration::from_micros(50), false);
        assert!(!p.inline(k));
    }

    #[test]
    fn nothing_runs_inline_while_an_unproven_request_is_with_the_app_threads() {
        let p = InlinePolicy::new(true);
        let fast = p.route("GET", "/fast");
        let slow = p.route("GET", "/slow");
        for _ in 0..QUALIFY {
            p.record(fast, Duration::from_micros(10), false);
        }
        let proven = p.dispatched(fast);
        assert!(
            p.inline(fast),
            "a proven route's request does not block inline calls"
        );
        assert!(!p.app_threads_idle());
        drop(proven);
        assert!(p.app_threads_idle());
        let guard = p.dispatched(slow);
        assert!(!p.inline(fast));
        drop(guard);
        assert!(p.inline(fast));
    }

    #[test]
    fn disabled_policy_never_inlines() {
        let p = InlinePolicy::new(false);
        let k = p.route("GET", "/");
        for _ in 0..QUALIFY * 2 {
            p.record(k, Duration::from_micros(1), false);
        }
        assert!(!p.inline(k));
        assert!(!p.dispatched(k).unproven);
    }
}
