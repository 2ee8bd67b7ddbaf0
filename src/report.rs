//! Counters: what was emitted, and what became of it in each sink.

use std::fmt;

/// What became of the records: emitted, and per sink written, dropped and
/// failed.
///
/// [`AuditHandle::report`](crate::AuditHandle::report) gives a snapshot at
/// any time; [`AuditHandle::shutdown`](crate::AuditHandle::shutdown) gives
/// the final one. Every report balances for every sink: `emitted ==
/// written + dropped + failed + pending`, and in the final report pending
/// is zero, so every emitted record is accounted for in every sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub(crate) emitted: u64,
    pub(crate) invalid: u64,
    pub(crate) unseen: u64,
    pub(crate) sinks: Vec<SinkReport>,
    pub(crate) checkpoint_copy: Option<CopyReport>,
}

impl Report {
    /// Records accepted by the layer (audit events with an action).
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Audit events that were not recorded because they had no action
    /// (possible only for events made without `audit!`).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// `audit!` events that no audit layer saw, in this whole process: a
    /// filter of the subscriber switched them off, or the layer was not
    /// installed where they were emitted. They are not in `emitted`. The
    /// first one is explained on standard error; see
    /// [`AuditHandle::check`](crate::AuditHandle::check).
    pub fn unseen(&self) -> u64 {
        self.unseen
    }

    /// One entry per sink, in the order they were added.
    pub fn sinks(&self) -> &[SinkReport] {
        &self.sinks
    }

    /// The sink named `name`.
    pub fn sink(&self, name: &str) -> Option<&SinkReport> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// What became of the copies of the chains' checkpoints, when they are
    /// copied to a store apart
    /// ([`checkpoint_copy`](crate::AuditLayerBuilder::checkpoint_copy),
    /// [`checkpoint_copy_sink`](crate::AuditLayerBuilder::checkpoint_copy_sink)).
    /// Copies are not records: they are not in `emitted`, and a failed
    /// copy is a missing witness, not a lost record.
    pub fn checkpoint_copy(&self) -> Option<&CopyReport> {
        self.checkpoint_copy.as_ref()
    }

    /// Whether every emitted record reached every sink.
    pub fn is_lossless(&self) -> bool {
        self.sinks.iter().all(|s| s.written == self.emitted)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "emitted {}", self.emitted)?;
        if self.invalid > 0 {
            write!(f, ", invalid {}", self.invalid)?;
        }
        if self.unseen > 0 {
            write!(
                f,
                ", unseen {} (auditing was off in the subscriber)",
                self.unseen
            )?;
        }
        for s in &self.sinks {
            write!(
                f,
                "; {}: written {}, dropped {}, failed {}",
                s.name, s.written, s.dropped, s.failed
            )?;
            if s.pending > 0 {
                write!(f, ", pending {}", s.pending)?;
            }
        }
        if let Some(c) = &self.checkpoint_copy {
            write!(
                f,
                "; checkpoint copies: written {}, failed {}",
                c.written, c.failed
            )?;
            if c.pending > 0 {
                write!(f, ", pending {}", c.pending)?;
            }
        }
        Ok(())
    }
}

/// What became of the records in one sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkReport {
    pub(crate) name: String,
    pub(crate) written: u64,
    pub(crate) dropped: u64,
    pub(crate) failed: u64,
    pub(crate) errors: u64,
    pub(crate) queued: u64,
    pub(crate) pending: u64,
    pub(crate) failing: bool,
    pub(crate) last_error: Option<String>,
}

impl SinkReport {
    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records the sink has written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Records dropped because the sink's queue was full (or closed).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records the sink rejected, or could not write before the shutdown
    /// deadline.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Failed write attempts, retried or not.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Records waiting in the queue when the report was taken.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Records emitted and not yet written, dropped or failed in this sink:
    /// queued, being written, or being handed over. Zero in the final
    /// report.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Whether the sink's last write attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// The last error the sink reported.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

/// What became of the copies of the chains' checkpoints
/// ([`Report::checkpoint_copy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    pub(crate) written: u64,
    pub(crate) failed: u64,
    pub(crate) pending: u64,
}

impl CopyReport {
    /// Checkpoint records copied.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Copies given up: refused by the copy's store, still failing when
    /// the workers finished, or the oldest of too many pending.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Copies waiting for the copy's store (it failed at their
    /// checkpoint): tried again with the next checkpoint.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}
