//! Warnings a fault repeats per request (every client's checkout failing
//! while a server is down, every transaction in flight losing its link when
//! it restarts) are logged at most once a second per source, saying how many
//! were held back; the others go to debug. An outage then costs a line a
//! second per tenant, not one per request.

use std::sync::atomic::{AtomicU64, Ordering};

/// One source's pace of warnings.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Milliseconds since `EPOCH` before which warnings are held back.
    next_ms: AtomicU64,
    held: AtomicU64,
}

const EVERY_MS: u64 = 1000;

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl Throttle {
    /// `Some(n)` when this warning is to be logged (`n` were held back
    /// since the last), `None` when it is one too many this second.
    pub fn pass(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + EVERY_MS, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_second_counting_the_rest() {
        let t = Throttle::default();
        assert_eq!(t.pass(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.pass(), None);
        }
        // A second later the next one goes out with the count.
        t.next_ms.store(now_ms(), Ordering::Relaxed);
        assert_eq!(t.pass(), Some(5));
        assert_eq!(t.pass(), None);
    }
}
