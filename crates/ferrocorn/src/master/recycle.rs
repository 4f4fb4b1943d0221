//! Recycling workers by memory (`--max-worker-memory`) and age (`--max-worker-lifetime`): the
//! policy, and reading a worker's resident memory from `/proc`. The master acts on it: a worker
//! due for recycling gets its replacement booted first and is stopped gracefully once the
//! replacement is ready (see the master's loop).

use std::time::Duration;

/// Why a worker is recycled, also the label of its Prometheus counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Memory,
    Lifetime,
}

impl Reason {
    pub const ALL: [Reason; 2] = [Reason::Memory, Reason::Lifetime];

    pub fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Lifetime => "lifetime",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Self::Memory => 0,
            Self::Lifetime => 1,
        }
    }
}

/// When workers are recycled; the default never recycles.
#[derive(Debug, Clone, Default)]
pub struct RecyclePolicy {
    /// Largest resident memory in bytes (`--max-worker-memory`).
    pub max_rss: Option<u64>,
    /// `--max-worker-lifetime`.
    pub lifetime: Option<Duration>,
    /// `--max-worker-lifetime-jitter`: each worker's lifetime gets a random share of it.
    pub jitter: Duration,
}

impl RecyclePolicy {
    /// A lifetime for a new worker: the limit plus a share of the jitter picked from `seed`.
    pub fn lifetime_for(&self, seed: u64) -> Option<Duration> {
        let base = self.lifetime?;
        let spread = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
        Some(base + Duration::from_millis(mixed % spread.saturating_add(1)))
    }

    /// Whether memory must be sampled at all.
    pub fn watches_memory(&self) -> bool {
        self.max_rss.is_some()
    }
}

/// Workers recycled at once: a quarter of the workers, at least one, so that the memory held
/// by replacements booting beside the workers they replace stays bounded.
pub fn concurrent_limit(workers: usize) -> usize {
    (workers / 4).max(1)
}

/// The resident memory of process `pid` in bytes (`/proc/PID/statm`'s second field, in pages).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_read() {
        let rss = rss_bytes(std::process::id() as i32).unwrap();
        assert!(rss > 100 * 1024, "{rss}");
        assert_eq!(rss_bytes(-5), None);
    }

    #[test]
    fn lifetimes_spread_within_the_jitter() {
        let policy = RecyclePolicy {
            max_rss: None,
            lifetime: Some(Duration::from_secs(10)),
            jitter: Duration::from_secs(2),
        };
        let lifetimes: Vec<Duration> = (0..50).map(|s| policy.lifetime_for(s).unwrap()).collect();
        assert!(lifetimes
            .iter()
            .all(|l| *l >= Duration::from_secs(10) && *l <= Duration::from_secs(12)));
        assert!(lifetimes.iter().any(|l| *l != lifetimes[0]), "jittered");
        assert_eq!(RecyclePolicy::default().lifetime_for(1), None);
    }

    #[test]
    fn a_quarter_at_once() {
        assert_eq!(concurrent_limit(1), 1);
        assert_eq!(concurrent_limit(8), 2);
    }
}
