//! What the rest of pgtenant tells one client session between its
//! transactions (KILL, shutdown, "give your buffers back"), as bits and one
//! waker. A session waiting for its client's next request registers this one
//! waker instead of a waiter on a watch channel per signal, each of which
//! takes a lock to register and another to leave, on every idle wait.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

/// One signal (a bit of [`Signals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(u8);

impl Signal {
    /// KILL of its tenant or KILL_CLIENT: disconnect (sticky).
    pub const KILL: Signal = Signal(1);
    /// pgtenant shuts down: disconnect once idle (sticky).
    pub const SHUTDOWN: Signal = Signal(2);
    /// Idle a while: give the relay buffers back (cleared when done).
    pub const TRIM: Signal = Signal(4);
}

/// Several signals at once: `Signal::KILL | Signal::SHUTDOWN`.
impl std::ops::BitOr for Signal {
    type Output = Signal;
    fn bitor(self, other: Signal) -> Signal {
        Signal(self.0 | other.0)
    }
}

#[derive(Debug, Default)]
pub struct Signals {
    bits: AtomicU8,
    waker: AtomicWaker,
}

impl Signals {
    /// Raises `s` and wakes the session if it waits.
    pub fn raise(&self, s: Signal) {
        self.bits.fetch_or(s.0, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Whether `s` (any of them, for several) is raised.
    pub fn has(&self, s: Signal) -> bool {
        self.bits.load(Ordering::SeqCst) & s.0 != 0
    }

    /// Lowers `s` (the session acted on it).
    pub fn lower(&self, s: Signal) {
        self.bits.fetch_and(!s.0, Ordering::SeqCst);
    }

    /// Ready once one of `wanted` is raised; registers the task's waker
    /// before the second look, so a signal raised in between wakes it.
    pub fn poll_wait(&self, wanted: Signal, cx: &mut Context<'_>) -> Poll<()> {
        if self.has(wanted) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.has(wanted) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Wakes `waker` at the next raise (of any signal) instead of a waiting
    /// task's: a parked session's parking lot (see `frontend::parking`),
    /// which watches again after each ring.
    pub fn watch(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Resolves once one of `wanted` is raised.
    pub async fn wait(&self, wanted: Signal) {
        std::future::poll_fn(|cx| self.poll_wait(wanted, cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_raised_signal_wakes_a_waiting_session_and_stays_until_lowered() {
        let s = Arc::new(Signals::default());
        assert!(!s.has(Signal::KILL));
        let all = Signal::KILL | Signal::SHUTDOWN | Signal::TRIM;
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait(all).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        s.raise(Signal::TRIM);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert!(s.has(Signal::TRIM));
        assert!(!s.has(Signal::KILL));
        s.lower(Signal::TRIM);
        assert!(!s.has(Signal::TRIM));
        s.raise(Signal::KILL);
        s.raise(Signal::SHUTDOWN);
        s.lower(Signal::TRIM);
        assert!(s.has(Signal::KILL) && s.has(Signal::SHUTDOWN));
        // Already raised: ready at once.
        tokio::time::timeout(Duration::from_secs(5), s.wait(Signal::KILL))
            .await
            .expect("ready");
    }

    #[tokio::test]
    async fn a_wait_ignores_signals_it_did_not_ask_for() {
        let s = Arc::new(Signals::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait(Signal::KILL | Signal::SHUTDOWN).await }
        });
        tokio::task::yield_now().await;
        s.raise(Signal::TRIM);
        // One thread: each yield lets the woken waiter run and look again.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiter.is_finished(),
            "TRIM must not end a wait for KILL or SHUTDOWN"
        );
        s.raise(Signal::SHUTDOWN);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
