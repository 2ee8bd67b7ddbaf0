//! The collector's batches on their way into the database: each imported
//! on a blocking thread and a connection of its own while the next batch
//! is received, its messages acknowledged only once its import committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::collect::Progress;
use crate::sink::Batch;
use crate::{AuditRecord, DatabaseSink, Error, Imported, Result};

/// A batch's records, shared with the blocking thread that imports them.
type Records = Arc<Vec<Arc<AuditRecord>>>;

/// An import's end: the batch, the sink back from its thread, and what the
/// import did.
type Ended = (Import, Result<(DatabaseSink, Result<Imported>)>);

/// A batch of messages and their records.
pub(super) struct Import {
    messages: Vec<Message>,
    records: Records,
    /// The wait before the next try, if this one fails.
    backoff: Duration,
}

/// The database sinks, each writing at most one batch at a time.
pub(super) struct Imports {
    idle: Vec<DatabaseSink>,
    running: FuturesUnordered<Pin<Box<dyn Future<Output = Ended> + Send>>>,
}

impl Imports {
    /// Imports through `sinks`: as many batches at a time as there are.
    pub(super) fn new(sinks: Vec<DatabaseSink>) -> Self {
        Self {
            idle: sinks,
            running: FuturesUnordered::new(),
        }
    }

    /// Whether every sink is writing a batch.
    pub(super) fn all_busy(&self) -> bool {
        self.idle.is_empty()
    }

    /// Whether no batch is being written.
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Hands the held messages' records to an idle sink, on a blocking
    /// thread.
    pub(super) fn start(&mut self, held: &mut Vec<(Message, Arc<AuditRecord>)>) -> Result<()> {
        let db = self
            .idle
            .pop()
            .ok_or_else(|| Error::database("no idle database sink"))?;
        let (messages, records): (Vec<Message>, Vec<Arc<AuditRecord>>) = held.drain(..).unzip();
        let import = Import {
            messages,
            records: Arc::new(records),
            backoff: Duration::from_millis(100),
        };
        self.spawn(db, import);
        Ok(())
    }

    fn spawn(&mut self, mut db: DatabaseSink, import: Import) {
        let records = Arc::clone(&import.records);
        let task = tokio::task::spawn_blocking(move || {
            let result = db.import(&Batch::new(&records));
            (db, result)
        });
        self.running.push(Box::pin(async move {
            let joined = task
                .await
                .map_err(|e| Error::database(format!("database writer failed: {e}")));
            (import, joined)
        }));
    }

    /// The next import to end; pending while none is running.
    pub(super) async fn next(&mut self) -> Ended {
        match self.running.next().await {
            Some(ended) => ended,
            None => std::future::pending().await,
        }
    }

    /// Counts and acknowledges a committed import; after a failure, waits
    /// out the backoff and tries again. Returns `true` if `stop` completed
    /// first: the batch's messages then stay unacknowledged (delivered
    /// again later).
    pub(super) async fn settle(
        &mut self,
        (import, joined): Ended,
        total: &mut Progress,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<bool> {
        let (db, result) = joined?;
        let imported = match result {
            Ok(imported) => imported,
            Err(e) => {
                let backoff = import.backoff;
                tracing::warn!(target: "fabric_audit", "collect: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut *stop => {
                        self.idle.push(db);
                        return Ok(true);
                    }
                }
                let backoff = (backoff * 2).min(Duration::from_secs(5));
                self.spawn(db, Import { backoff, ..import });
                return Ok(false);
            }
        };
        self.idle.push(db);
        for id in imported.conflicting.iter().chain(&imported.refused) {
            tracing::warn!(target: "fabric_audit", "collect: record {id} not stored (refused, or stored with other content)");
        }
        total.stored += imported.stored as u64;
        total.present += imported.present as u64;
        total.not_stored += (imported.conflicting.len() + imported.refused.len()) as u64;
        for message in import.messages {
            if let Err(e) = message.ack().await {
                tracing::warn!(target: "fabric_audit", "cannot acknowledge nats message: {e}");
            }
        }
        Ok(false)
    }

    /// Waits for every running import and settles it, each without another
    /// try (shutting down).
    pub(super) async fn finish(&mut self, total: &mut Progress) -> Result<()> {
        while let Some(ended) = self.running.next().await {
            self.settle(ended, total, &mut std::future::ready(()))
                .await?;
        }
        Ok(())
    }

    /// The sinks, once no import runs (to be dropped off the async
    /// runtime: each owns one).
    pub(super) fn into_sinks(self) -> Vec<DatabaseSink> {
        self.idle
    }
}
