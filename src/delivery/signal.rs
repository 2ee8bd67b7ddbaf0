//! A condition to wait on from both sync and async code.
//!
//! Workers call [`Signal::notify`] after they change shared state (a batch
//! drained, a flush marker reached, a sink failing). Waiters re-check their
//! own condition. Notifying costs one atomic load while nobody waits, so the
//! worker may call it after every batch.
//!
//! A signal carries no state of its own: it only says "look again". That
//! is what makes it safe to share between unrelated conditions (a flush
//! waiting for its barriers, shutdown waiting for its workers): a waiter
//! woken for someone else's reason checks its own condition and waits
//! again. The cost is a spurious wake-up now and then, never a lost one.
//!
//! No lost wake-up, without a lock on the notifying side: a waiter counts
//! itself in `waiters` and then checks its condition; a notifier changes
//! the state and then reads `waiters`. The two `SeqCst` fences order those
//! pairs, so at least one of them sees the other. A blocking waiter checks
//! under `lock`, which the notifier takes (empty) before notifying the
//! condvar, so the notification cannot fall between its check and its
//! wait; an async waiter registers with `Notify` before it checks.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use tokio::sync::Notify;

/// Wakes blocking threads and async tasks alike; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    /// Threads and tasks waiting now: zero lets `notify` return at once.
    waiters: AtomicUsize,
    /// Held by a blocking waiter between its check and its wait.
    lock: Mutex<()>,
    /// Blocking waiters (flush_blocking, shutdown_blocking, Block emitters).
    condvar: Condvar,
    /// Async waiters (flush, shutdown, under the caller's runtime).
    notify: Notify,
}

impl Signal {
    /// Wakes every waiter, if there is one.
    pub(crate) fn notify(&self) {
        // Pairs with the fence in `enter`: either the waiter sees our state
        // change when it checks its condition, or we see it waiting.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
        self.condvar.notify_all();
        self.notify.notify_waiters();
    }

    /// Blocks the thread until `ready` returns true.
    pub(crate) fn wait_blocking(&self, mut ready: impl FnMut() -> bool) {
        let _waiting = self.enter();
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !ready() {
            guard = self
                .condvar
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until `ready` returns true, without blocking the thread.
    pub(crate) async fn wait(&self, mut ready: impl FnMut() -> bool) {
        let _waiting = self.enter();
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a notify in between is kept.
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
    }

    fn enter(&self) -> Waiting<'_> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Waiting(self)
    }
}

/// Counts a waiter for as long as it waits, even if its future is dropped.
struct Waiting<'a>(&'a Signal);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_blocked_thread_wakes_on_notify() {
        let signal = Arc::new(Signal::default());
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (signal, flag) = (signal.clone(), flag.clone());
            std::thread::spawn(move || signal.wait_blocking(|| flag.load(Ordering::SeqCst)))
        };
        flag.store(true, Ordering::SeqCst);
        signal.notify();
        waiter.join().unwrap();
        assert_eq!(signal.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_async_waiter_wakes_on_notify() {
        let signal = Arc::new(Signal::default());
        let flag = Arc::new(AtomicBool::new(false));
        let setter = {
            let (signal, flag) = (signal.clone(), flag.clone());
            std::thread::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                signal.notify();
            })
        };
        signal.wait(|| flag.load(Ordering::SeqCst)).await;
        setter.join().unwrap();
        assert!(flag.load(Ordering::SeqCst));
    }
}
