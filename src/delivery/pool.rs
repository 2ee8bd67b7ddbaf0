//! Spent records, kept for the emitting threads to fill again.
//!
//! A record is allocated by an emitting thread and freed by a sink's worker
//! once every sink is done with it. Freeing memory on one thread that
//! another allocates makes the allocator's threads contend, and a steady
//! stream of events would allocate for each. So the workers hand spent
//! records back here, and [`Delivery::start_record`](super::Delivery::start_record)
//! takes one before it allocates: steady emission then allocates nothing.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::AuditRecord;

/// How many spent records are kept for reuse.
const POOL_CAPACITY: usize = 4096;

/// Records holding more heap than this are freed rather than reused, so a
/// burst of large records does not stay resident in the pool.
const POOL_MAX_RECORD_BYTES: usize = 4096;

/// A bounded, lock-free stack of spent records (a queue, in fact: the
/// order does not matter).
#[derive(Debug)]
pub(crate) struct RecordPool {
    spent: ArrayQueue<Arc<AuditRecord>>,
}

impl Default for RecordPool {
    fn default() -> Self {
        Self {
            spent: ArrayQueue::new(POOL_CAPACITY),
        }
    }
}

impl RecordPool {
    /// A record that nobody else holds, to fill in place: a spent one, or
    /// a new one when the pool is empty.
    pub(crate) fn take(&self) -> Arc<AuditRecord> {
        match self.spent.pop() {
            // Only the pool held it; `Arc::make_mut` will not clone it.
            Some(spent) if Arc::strong_count(&spent) == 1 => spent,
            _ => Arc::new(AuditRecord::empty()),
        }
    }

    /// Keeps a record no sink needs any more for reuse, if it is the last
    /// reference and not oversized (and the pool has room); frees it
    /// otherwise.
    pub(crate) fn recycle(&self, record: Arc<AuditRecord>) {
        if Arc::strong_count(&record) == 1 && record.retained_bytes() <= POOL_MAX_RECORD_BYTES {
            let _ = self.spent.push(record);
        }
    }
}
