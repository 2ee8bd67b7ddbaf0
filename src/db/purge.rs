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
use crate::chain::checkpoint::{PurgeStatement, SigningKey};
use crate::{Error, Result, Retention};

/// Deletes the records older than `retention` from the database at `url`
/// (applying the migrations first, where they can run); returns how many.
/// What the sink's purge thread does at start-up and daily, for a
/// maintenance job or the CLI. [`Retention::FOREVER`] deletes nothing.
///
/// A hash chain with checkpoints is cut at its newest checkpoint before
/// the cutoff, which stays and anchors the rest (its older records go, the
/// few after it wait for the next purge), and the cut is stated in the
/// table `audit_purges` (unsigned here; see [`purge_signed`]), so that
/// `verify` reports the purged prefix as purged, not deleted.
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
    purge_signed(url, retention, None)
}

/// As [`purge`], signing what it states of each chain it cuts with `key`
/// (the service's checkpoint key): see [`purge`]'s notes on chains.
///
/// # Errors
///
/// As for [`purge`].
pub fn purge_signed(url: &str, retention: Retention, key: Option<&SigningKey>) -> Result<usize> {
    let backend = Backend::parse(url)?;
    // Migrates (where it can), or names what the schema lacks.
    crate::DatabaseSink::builder(url).keep_forever().build()?;
    let Some(days) = retention.as_days() else {
        return Ok(0);
    };
    let mut conn = migrate::connect(&backend, Role::Purge)?;
    purge_all(&mut conn, days, (Pacing::default().clock)(), key, || true)
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
///
/// A chain with checkpoints is cut at its newest checkpoint before the
/// cutoff: its records before that checkpoint go, the checkpoint stays
/// and anchors what remains (it states the hash of the record before it),
/// and the cut is stated first in `audit_purges` (signed with `key`, if
/// given), so that verification tells it from a deletion by someone else.
/// The records between that checkpoint and the cutoff wait for the next
/// purge. Other records (unchained, or of chains without checkpoints) go
/// by time alone.
pub(crate) fn purge_all(
    conn: &mut Conn,
    retention_days: u32,
    now_us: i64,
    key: Option<&SigningKey>,
    mut between: impl FnMut() -> bool,
) -> Result<usize, BoxError> {
    let Some(cutoff) = cutoff(now_us, write::newest(conn)?, retention_days) else {
        return Ok(0);
    };
    let checkpointed = write::checkpointed_chains(conn)?;
    let mut total = 0;
    for chain in &checkpointed {
        let Some((below_seq, detail)) = write::chain_cut(conn, chain, cutoff)? else {
            continue;
        };
        let records = write::count_below(conn, chain, below_seq, cutoff)?;
        if records == 0 {
            continue;
        }
        let head = serde_json::from_str::<serde_json::Value>(&detail)
            .ok()
            .and_then(|d| d.get("head")?.as_str().and_then(crate::chain::from_hex));
        let Some(head) = head else {
            // A checkpoint that states no head anchors nothing: keep the
            // chain whole (verification names the checkpoint).
            continue;
        };
        let statement = PurgeStatement {
            chain: chain.clone(),
            below_seq: u64::try_from(below_seq).unwrap_or(0),
            head,
            time: crate::record::time::datetime(now_us),
            cutoff: crate::record::time::datetime(cutoff),
            records: u64::try_from(records).unwrap_or(0),
        };
        write::state_purge(
            conn,
            &write::PurgeRow {
                chain: chain.clone(),
                below_seq,
                head: crate::chain::to_hex(&head),
                cutoff_us: cutoff,
                purged_at_us: now_us,
                records,
                note: key.map(|key| statement.sign(key)),
            },
        )?;
        let which = write::Expired::Chain {
            chain,
            below_seq,
        };
        loop {
            let deleted = write::purge_chunk(conn, cutoff, which)?;
            total += deleted;
            if deleted < write::PURGE_CHUNK as usize {
                break;
            }
            if !between() {
                return Ok(total);
            }
        }
    }
    let which = write::Expired::ByTime {
        keep_chains: &checkpointed,
    };
    loop {
        let deleted = write::purge_chunk(conn, cutoff, which)?;
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
    pub(crate) fn spawn(
        backend: Backend,
        retention_days: u32,
        pacing: Pacing,
        key: Option<Arc<SigningKey>>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fabric-audit-purge".into())
                .spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        run(&backend, retention_days, pacing, key.as_deref(), &shared);
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

fn run(
    backend: &Backend,
    retention_days: u32,
    pacing: Pacing,
    key: Option<&SigningKey>,
    shared: &Shared,
) {
    let mut conn: Option<Conn> = None;
    let mut warned: Option<Instant> = None;
    loop {
        let result = conn_or_connect(backend, &mut conn).and_then(|conn| {
            purge_all(conn, retention_days, (pacing.clock)(), key, || {
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

    /// Retention keeps a chain verifiable, told apart from deletions, on
    /// SQLite (the SQL is the same DSL on every backend).
    #[cfg(feature = "sqlite")]
    mod anchors {
        use std::sync::Arc;

        use crate::chain::checkpoint::{self, Policy, SigningKey, Why};
        use crate::chain::{Chain, Linker};
        use crate::db::write::{self, Expired};
        use crate::db::backend::{Backend, Role};
        use crate::db::migrate;
        use crate::verify::{Break, ChainReport, Verification, Verifier};
        use crate::{AuditRecord, Batch, DatabaseSink, Retention, Sink, Store};

        const DAY: i64 = 86_400_000_000;

        fn aged(record: AuditRecord, days: i64, i: i64) -> AuditRecord {
            let at = chrono::Utc::now().timestamp_micros() - days * DAY + i;
            let mut json = serde_json::to_value(&record).unwrap();
            json["timestamp"] = crate::record::time::datetime(at)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into();
            serde_json::from_value(json).unwrap()
        }

        /// Chain `api-1/database`: runs of 100 records aged 60, 50 and 10
        /// days, each closed by a signed checkpoint (seqs 101, 202, 303),
        /// then 10 records of today; chain `api-2/database` without
        /// checkpoints, 20 records aged 60 days and 20 of today; 10
        /// unchained records aged 60 days.
        fn records(key: &Arc<SigningKey>) -> Vec<Arc<AuditRecord>> {
            let policy = Policy {
                every_records: 100,
                every: std::time::Duration::from_secs(60),
                key: Some(key.clone()),
            };
            let mut out = Vec::new();
            let mut linker = Linker::new(Chain::new("api-1/database"));
            let mut link = None;
            let mut i = 0;
            for (days, n, checkpointed) in [(60, 100, true), (50, 100, true), (10, 100, true), (0, 10, false)] {
                for _ in 0..n {
                    i += 1;
                    let mut record = aged(AuditRecord::builder("invoice.sent").build(), days, i);
                    linker.link(&mut record);
                    out.push(Arc::new(record));
                }
                if checkpointed {
                    i += 1;
                    let cp = checkpoint::record(linker.chain(), &policy, 200, Why::default(), &mut link);
                    let mut cp = aged(cp, days, i);
                    linker.link(&mut cp);
                    out.push(Arc::new(cp));
                }
            }
            let mut other = Linker::new(Chain::new("api-2/database"));
            for (days, n) in [(60, 20), (0, 20)] {
                for _ in 0..n {
                    i += 1;
                    let mut record = aged(AuditRecord::builder("invoice.sent").build(), days, i);
                    other.link(&mut record);
                    out.push(Arc::new(record));
                }
            }
            for _ in 0..10 {
                i += 1;
                out.push(Arc::new(aged(AuditRecord::builder("old").build(), 60, i)));
            }
            out
        }

        fn seeded(key: &Arc<SigningKey>) -> (tempfile::TempDir, String) {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("audit.db").display());
            let mut sink = DatabaseSink::builder(&url).keep_forever().build().unwrap();
            sink.write(&Batch::new(&records(key))).unwrap();
            (dir, url)
        }

        fn verify(url: &str, keys: &[&Arc<SigningKey>]) -> Verification {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let store = Store::connect(url).await.unwrap();
                let verifier = Verifier::new().keys(keys.iter().map(|k| k.public_key()));
                store.verify_with(verifier, None).await.unwrap()
            })
        }

        fn chain<'v>(v: &'v Verification, name: &str) -> &'v ChainReport {
            v.chains.iter().find(|c| c.chain == name).unwrap()
        }

        #[test]
        fn a_purge_cuts_a_chain_at_a_checkpoint_and_verify_tells_it_from_a_deletion() {
            let key = Arc::new(SigningKey::generate("db.example.com").unwrap());
            let (_dir, url) = seeded(&key);
            assert!(verify(&url, &[&key]).is_intact());

            let deleted = super::super::purge_signed(&url, Retention::days(30).unwrap(), Some(&key)).unwrap();
            // api-1 before its checkpoint at seq 202, api-2's and the
            // unchained records by time.
            assert_eq!(deleted, 201 + 20 + 10);
            let v = verify(&url, &[&key]);
            assert!(v.unreadable.is_empty(), "{v:?}");
            let api1 = chain(&v, "api-1/database");
            assert_eq!(api1.breaks, [], "{api1:?}");
            assert_eq!((api1.first_seq, api1.purged_below), (Some(202), Some(202)));
            assert_eq!(api1.records, 112);
            // Without checkpoints a chain's purged prefix cannot be told
            // from a deletion.
            let api2 = chain(&v, "api-2/database");
            assert_eq!(api2.breaks, [Break::Deleted { from: 1, to: 20 }]);
            assert_eq!(api2.purged_below, None);
            // Nothing more to purge, nothing more stated.
            assert_eq!(super::super::purge_signed(&url, Retention::days(30).unwrap(), Some(&key)).unwrap(), 0);
            assert!(chain(&verify(&url, &[&key]), "api-1/database").breaks.is_empty());

            // Verified with another key only, the statement is not taken.
            let other = Arc::new(SigningKey::generate("db.example.com").unwrap());
            let v = verify(&url, &[&other]);
            assert!(v.unreadable.iter().any(|u| u.place.contains("purge statement of api-1/database below seq 202")), "{v:?}");
            assert!(chain(&v, "api-1/database").breaks.contains(&Break::Deleted { from: 1, to: 201 }));
        }

        #[test]
        fn the_same_deletion_without_the_purge_or_its_signature_is_a_break() {
            let key = Arc::new(SigningKey::generate("db.example.com").unwrap());
            // Deleted as the purge would, but nothing stated.
            let (_dir, url) = seeded(&key);
            let mut conn = migrate::connect(&Backend::parse(&url).unwrap(), Role::Purge).unwrap();
            let which = Expired::Chain { chain: "api-1/database", below_seq: 202 };
            while write::purge_chunk(&mut conn, i64::MAX, which).unwrap() > 0 {}
            let v = verify(&url, &[&key]);
            let api1 = chain(&v, "api-1/database");
            assert_eq!(api1.breaks, [Break::Deleted { from: 1, to: 201 }]);
            assert_eq!(api1.purged_below, None);

            // Purged without the key: the statement is unsigned. Without
            // keys it is taken; with keys it is not.
            let (_dir, url) = seeded(&key);
            super::super::purge_signed(&url, Retention::days(30).unwrap(), None).unwrap();
            assert_eq!(chain(&verify(&url, &[]), "api-1/database").purged_below, Some(202));
            let v = verify(&url, &[&key]);
            assert!(v.unreadable.iter().any(|u| u.error.contains("not signed")), "{v:?}");
            assert!(!v.is_intact());

            // More deleted than the purge stated: the rest is a break.
            let (_dir, url) = seeded(&key);
            super::super::purge_signed(&url, Retention::days(30).unwrap(), Some(&key)).unwrap();
            let mut conn = migrate::connect(&Backend::parse(&url).unwrap(), Role::Purge).unwrap();
            let which = Expired::Chain { chain: "api-1/database", below_seq: 303 };
            while write::purge_chunk(&mut conn, i64::MAX, which).unwrap() > 0 {}
            let api1 = verify(&url, &[&key]).chains.into_iter().find(|c| c.chain == "api-1/database").unwrap();
            assert_eq!(api1.breaks, [Break::Deleted { from: 202, to: 302 }]);
            assert_eq!(api1.purged_below, Some(202));
        }
    }

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
