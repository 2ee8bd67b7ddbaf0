//! Retention: deleting expired records on a thread of the sink's own.
//!
//! Purging used to run on the sink's worker, before its first insert and
//! then on a write once a day: a large backlog held every write until it
//! was gone (and the queue overflowed meanwhile), an idle sink never
//! purged, and a role without DELETE kept the sink from writing at all.
//! Now the sink owns a purge thread with its own connection: it purges at
//! start-up and then every day, a chunk per transaction with a pause
//! between chunks, so the writer only ever waits for one short chunk (on
//! SQLite, through `busy_timeout`); a failure is warned about and retried
//! later, never passed on to the writer.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::backend::{Backend, Conn, Role};
use super::{migrate, write};
use crate::{Error, Result, Retention};

/// Deletes the records older than `retention` from the database at `url`
/// (applying the migrations first, where they can run); returns how many.
/// What the sink's purge thread does at start-up and daily, for a
/// maintenance job or the CLI. [`Retention::FOREVER`] deletes nothing.
///
/// Never deletes a record less than `retention` older than the newest one
/// stored, whatever the clock says.
///
/// Blocks: from async code call it inside `spawn_blocking`.
///
/// # Errors
///
/// As for [`DatabaseSinkBuilder::build`](crate::DatabaseSinkBuilder::build), or a purge that fails (a role
/// without `DELETE`).
pub fn purge(url: &str, retention: Retention) -> Result<usize> {
    let backend = Backend::parse(url)?;
    // Migrates (where it can), or names what the schema lacks.
    crate::DatabaseSink::builder(url).keep_forever().build()?;
    let Some(days) = retention.as_days() else {
        return Ok(0);
    };
    let mut conn = migrate::connect(&backend, Role::Purge)?;
    purge_all(&mut conn, days, (Pacing::default().clock)(), || true)
        .map_err(|e| Error::database("cannot purge expired audit records").because(e))
}

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// How often a failed purge is warned about, at most.
const WARN_EVERY: Duration = Duration::from_secs(60 * 60);

/// How a sink's purge thread paces itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pacing {
    /// Between two complete purges.
    pub(crate) interval: Duration,
    /// Between two chunks of one purge: the writer's turn.
    pub(crate) pause: Duration,
    /// After a failed purge, before trying again (at most `interval`).
    pub(crate) retry: Duration,
    /// The wall clock, in microseconds since the epoch (injected in tests).
    pub(crate) clock: fn() -> i64,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(24 * 60 * 60),
            pause: Duration::from_millis(20),
            retry: Duration::from_secs(10 * 60),
            clock: || chrono::Utc::now().timestamp_micros(),
        }
    }
}

/// Records before this time (µs) are expired: `retention_days` before now,
/// and never later than `retention_days` before the newest stored record,
/// so that a clock that jumps forward cannot delete fresh records. `None`
/// when nothing is stored.
pub(crate) fn cutoff(now_us: i64, newest_us: Option<i64>, retention_days: u32) -> Option<i64> {
    let window = i64::from(retention_days) * DAY_US;
    let newest = newest_us?;
    Some(now_us.min(newest).saturating_sub(window))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Purges every expired record, a chunk per transaction, calling `between`
/// after each full chunk (to pause; `false` stops early). Returns how many
/// were deleted.
pub(crate) fn purge_all(
    conn: &mut Conn,
    retention_days: u32,
    now_us: i64,
    mut between: impl FnMut() -> bool,
) -> Result<usize, BoxError> {
    let Some(cutoff) = cutoff(now_us, write::newest(conn)?, retention_days) else {
        return Ok(0);
    };
    let mut total = 0;
    loop {
        let deleted = write::purge_chunk(conn, cutoff)?;
        total += deleted;
        if deleted < write::PURGE_CHUNK as usize || !between() {
            return Ok(total);
        }
    }
}

/// The sink's purge thread; stopped by [`Purger::stop`] or when dropped.
pub(crate) struct Purger {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stop: bool,
    finished: bool,
    /// Complete purges so far (tests wait on it).
    passes: u64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits `timeout` or until stopped; whether stopped.
    fn sleep(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        state.stop
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

impl Purger {
    /// Starts purging the database of `backend` of records older than
    /// `retention_days`: now, then every `pacing.interval`.
    ///
    /// Warnings go to the dispatcher that is current here.
    pub(crate) fn spawn(backend: Backend, retention_days: u32, pacing: Pacing) -> Self {
        let shared = Arc::new(Shared::default());
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fabric-audit-purge".into())
                .spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        run(&backend, retention_days, pacing, &shared);
                    });
                    shared.update(|s| s.finished = true);
                })
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::warn!(target: "fabric_audit", %error, "cannot start the audit retention purge");
                None
            }
        };
        Self { shared, thread }
    }

    /// Stops the thread: it finishes the chunk it is deleting, if any.
    /// Waits up to `wait` for it; whether it ended in time (if not, it is
    /// left to end on its own: a server that stopped answering).
    pub(crate) fn stop(&mut self, wait: Duration) -> bool {
        self.shared.update(|s| s.stop = true);
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, wait, |s| !s.finished && self.thread.is_some())
            .unwrap_or_else(PoisonError::into_inner);
        let ended = state.finished || self.thread.is_none();
        drop(state);
        if ended {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        ended
    }

    /// Complete purges so far.
    #[cfg(test)]
    pub(crate) fn passes(&self) -> u64 {
        self.shared.lock().passes
    }

    /// Waits up to `timeout` until `passes` complete purges have run.
    #[cfg(test)]
    pub(crate) fn wait_for_passes(&self, passes: u64, timeout: Duration) -> bool {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.passes < passes)
            .unwrap_or_else(PoisonError::into_inner);
        state.passes >= passes
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.shared.update(|s| s.stop = true);
    }
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

fn run(backend: &Backend, retention_days: u32, pacing: Pacing, shared: &Shared) {
    let mut conn: Option<Conn> = None;
    let mut warned: Option<Instant> = None;
    loop {
        let result = conn_or_connect(backend, &mut conn).and_then(|conn| {
            purge_all(conn, retention_days, (pacing.clock)(), || {
                !shared.sleep(pacing.pause)
            })
        });
        let next = match result {
            Ok(_) => {
                shared.update(|s| s.passes += 1);
                pacing.interval
            }
            Err(error) => {
                conn = None;
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        target: "fabric_audit",
                        %error,
                        retry_in_s = pacing.retry.min(pacing.interval).as_secs(),
                        "audit retention purge failed; writing goes on, the purge is retried later"
                    );
                }
                pacing.retry.min(pacing.interval)
            }
        };
        if shared.sleep(next) {
            return;
        }
    }
}

fn conn_or_connect<'c>(
    backend: &Backend,
    conn: &'c mut Option<Conn>,
) -> Result<&'c mut Conn, BoxError> {
    if conn.is_none() {
        *conn = Some(backend.connect(Role::Purge)?);
    }
    conn.as_mut().ok_or_else(|| "no database connection".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_never_passes_the_newest_record_minus_the_retention() {
        let day = DAY_US;
        let cases = [
            // (now, newest, days, cutoff)
            (100 * day, Some(99 * day), 30, Some(69 * day)),
            (100 * day, Some(100 * day), 30, Some(70 * day)),
            // The clock jumped a year ahead: keep 30 days before the newest.
            (465 * day, Some(100 * day), 30, Some(70 * day)),
            // A record from the future: now decides.
            (100 * day, Some(500 * day), 30, Some(70 * day)),
            (100 * day, None, 30, None),
            // Before 1970, and at the edges of time: no overflow.
            (-100 * day, Some(-100 * day), 36_525, Some(-36_625 * day)),
            (i64::MIN, Some(i64::MIN), 36_525, Some(i64::MIN)),
            (i64::MAX, Some(i64::MAX), 1, Some(i64::MAX - day)),
        ];
        for (now, newest, days, want) in cases {
            assert_eq!(cutoff(now, newest, days), want, "{now} {newest:?} {days}");
        }
    }
}
