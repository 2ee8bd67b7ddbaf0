//! The producer side: records published to JetStream, acknowledged.

use std::collections::HashMap;
use std::fmt;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream;
use async_nats::Subject;
use bytes::Bytes;
use tokio::runtime::Runtime;

use super::ack::Acks;
use super::NatsStream;
use crate::sink::{Batch, ChainHead, Sink, SinkError};
use crate::{Error, Result};

/// Room left in a message for its headers (`Nats-Msg-Id` and framing).
const HEADER_ROOM: usize = 256;

/// Publishes records to a NATS JetStream stream, each as its JSON form on
/// `<prefix>.<action>` with its id as `Nats-Msg-Id`.
///
/// A record counts as written only once the server has acknowledged it.
/// Publishes are pipelined: up to [`window`](NatsSinkBuilder::window)
/// acknowledgements are awaited at a time, never dropped. A batch with any
/// publish that failed or timed out (a server down or restarting) is a
/// transient error: the worker retries the whole batch with backoff while
/// the records stay queued, and the server stores the records it already
/// had once (same `Nats-Msg-Id` within the duplicate window). A record
/// larger than the server's maximum payload can never be published: it is
/// counted as failed and the rest of its batch is written.
///
/// The async client runs on a runtime of the sink's own (one thread named
/// `fabric-audit-nats`); the emitting path is untouched. The sink connects
/// and creates or checks the stream in [`Sink::open`] and again after any
/// failure, so a server that is down at start-up is no error.
///
/// # Examples
///
/// ```no_run
/// use fabric_audit::{AuditLayer, NatsSink, NatsStream};
///
/// # fn main() -> fabric_audit::Result<()> {
/// let nats = NatsSink::builder(NatsStream::new("nats://127.0.0.1:4222")).build()?;
/// let (layer, audit) = AuditLayer::builder()
///     .sink("nats", nats)
///     .build::<tracing_subscriber::Registry>()?;
/// # drop(layer); audit.shutdown_blocking();
/// # Ok(())
/// # }
/// ```
pub struct NatsSink {
    target: NatsStream,
    window: usize,
    runtime: Runtime,
    conn: Option<Conn>,
}

struct Conn {
    client: async_nats::Client,
    /// The server's acknowledgements of this connection's publishes, on
    /// `<inbox>.<batch number>`.
    acks: async_nats::Subscriber,
    inbox: String,
    batches: u64,
}

/// Builds a [`NatsSink`]; made by [`NatsSink::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`window`](Self::window) | 1 024 unacknowledged publishes |
#[must_use]
#[derive(Debug)]
pub struct NatsSinkBuilder {
    target: NatsStream,
    window: usize,
}

impl NatsSink {
    /// Starts building a sink that publishes to `target`.
    pub fn builder(target: NatsStream) -> NatsSinkBuilder {
        NatsSinkBuilder {
            target,
            window: 1024,
        }
    }

    fn connection(&mut self) -> Result<&Conn, SinkError> {
        if self.conn.is_none() {
            let target = &self.target;
            let conn = self
                .runtime
                .block_on(async {
                    let client = target.connect().await?;
                    let js = jetstream::ContextBuilder::new()
                        .timeout(target.timeout)
                        .build(client.clone());
                    target.ensure(&js).await?;
                    let inbox = client.new_inbox();
                    let acks = client.subscribe(format!("{inbox}.*")).await.map_err(|e| {
                        Error::unavailable(format!(
                            "cannot subscribe to nats acknowledgements: {e}"
                        ))
                    })?;
                    Ok::<_, Error>(Conn {
                        client,
                        acks,
                        inbox,
                        batches: 0,
                    })
                })
                .map_err(SinkError::transient)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| SinkError::transient("no nats connection"))
    }
}

impl NatsSinkBuilder {
    /// The most publishes awaiting their acknowledgement at a time (at
    /// least 1). Awaiting each in turn would cap throughput at one round
    /// trip per record.
    pub fn window(self, publishes: usize) -> Self {
        Self {
            window: publishes,
            ..self
        }
    }

    /// Builds the sink; it connects from its worker thread.
    ///
    /// # Errors
    ///
    /// Settings no stream can have (a subject prefix or stream name with
    /// spaces or wildcards, a zero window or duplicate window, a
    /// duplicate window longer than the max age), or no thread for the
    /// client.
    pub fn build(self) -> Result<NatsSink> {
        self.target.validate()?;
        if self.window == 0 {
            return Err(Error::invalid("nats window must be at least 1"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fabric-audit-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the nats client's thread", e))?;
        Ok(NatsSink {
            target: self.target,
            window: self.window,
            runtime,
            conn: None,
        })
    }
}

/// What became of a batch's publishes.
#[derive(Default)]
struct Outcome {
    /// The first error that may clear (retry the batch).
    transient: Option<String>,
    /// Records that can never be published, and why (the first).
    rejected: usize,
    reason: Option<String>,
}

/// The batch's JSON forms, written into one buffer: one allocation per
/// batch instead of one per record, each payload a slice of it.
fn payloads(batch: &Batch<'_>) -> Vec<Bytes> {
    let mut buffer = Vec::with_capacity(batch.len() * 512);
    let mut ends = Vec::with_capacity(batch.len());
    for record in batch {
        record.write_json(&mut buffer);
        ends.push(buffer.len());
    }
    let buffer = Bytes::from(buffer);
    let mut start = 0;
    ends.into_iter()
        .map(|end| buffer.slice(std::mem::replace(&mut start, end)..end))
        .collect()
}

/// Publishes the batch and awaits every acknowledgement, up to `window`
/// at a time.
///
/// This is JetStream publishing at the level of core NATS, as
/// `jetstream::Context::send_publish` does it, without what costs per
/// message there and is not needed here: a fresh inbox, a one-shot
/// channel and a timer per publish, a permit, and a boxed future. All of
/// the batch's messages ask for their acknowledgement on one reply subject
/// (`<inbox>.<batch number>`), and the batch is written once that many
/// acknowledgements came back, each a success. The stream orders nothing
/// here: acknowledgements are counted, not matched; one that says an error
/// fails the batch (retried whole, the server storing each record once by
/// its `Nats-Msg-Id`). Late ones of an earlier, failed batch come on
/// another subject and are skipped.
async fn publish(
    conn: &mut Conn,
    target: &NatsStream,
    window: usize,
    batch: &Batch<'_>,
) -> Outcome {
    let max_payload = conn.client.server_info().max_payload;
    conn.batches += 1;
    let reply = Subject::from(format!("{}.{}", conn.inbox, conn.batches));
    let mut acks = Acks::new(&mut conn.acks, &reply, target.timeout);
    let mut outcome = Outcome::default();
    // A batch's records mostly share a few actions: each subject is made
    // once (a `Subject` clones by reference count).
    let mut subjects: HashMap<&str, Subject> = HashMap::new();
    for (record, payload) in batch.iter().zip(payloads(batch)) {
        if payload.len() + HEADER_ROOM > max_payload {
            outcome.reject(format!(
                "record {} is {} bytes, more than the nats server's max payload of {max_payload}",
                record.id(),
                payload.len()
            ));
            continue;
        }
        let subject = subjects
            .entry(record.action())
            .or_insert_with(|| Subject::from(target.subject(record.action())))
            .clone();
        let mut id = uuid::Uuid::encode_buffer();
        let mut headers = HeaderMap::new();
        headers.insert(
            NATS_MESSAGE_ID,
            &*record.id().hyphenated().encode_lower(&mut id),
        );
        let send =
            conn.client
                .publish_with_reply_and_headers(subject, reply.clone(), headers, payload);
        if let Err(e) = acks.send(send).await {
            outcome.transient = Some(e);
            return outcome;
        }
        while acks.awaited() >= window {
            if let Err(e) = acks.next().await {
                outcome.transient = Some(e);
                return outcome;
            }
        }
    }
    while acks.awaited() > 0 {
        if let Err(e) = acks.next().await {
            outcome.transient = Some(e);
            return outcome;
        }
    }
    outcome
}

impl Outcome {
    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        self.reason.get_or_insert(reason);
    }
}

impl Sink for NatsSink {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        self.connection()?;
        let (window, target) = (self.window, &self.target);
        let Some(conn) = self.conn.as_mut() else {
            return Err(SinkError::transient("no nats connection"));
        };
        let outcome = self.runtime.block_on(publish(conn, target, window, batch));
        if let Some(error) = outcome.transient {
            return Err(SinkError::transient(error));
        }
        match outcome.reason {
            None => Ok(()),
            Some(reason) if outcome.rejected == batch.len() => Err(SinkError::rejected(reason)),
            Some(reason) => Err(SinkError::partial(outcome.rejected, reason)),
        }
    }

    fn open(&mut self) -> Result<(), SinkError> {
        self.connection().map(drop)
    }

    /// The stream cannot say cheaply where an instance's chain ended, so
    /// each run chains its records afresh (`<instance>/nats/<run>`): the
    /// collector stores them with their `chain`, `seq` and `hash`, and the
    /// central database verifies each producer's run end to end.
    fn chain_head(&mut self, _chain: &str) -> Result<ChainHead, SinkError> {
        Ok(ChainHead::NewRun)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        // The subscriber unsubscribes, when dropped, from a task of the
        // runtime's.
        let _runtime = self.runtime.enter();
        if let Some(conn) = self.conn.take() {
            self.runtime
                .block_on(conn.client.flush())
                .map_err(SinkError::transient)?;
        }
        Ok(())
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        let _runtime = self.runtime.enter();
        self.conn = None;
    }
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("target", &self.target)
            .field("window", &self.window)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payloads are the records' JSON forms, one slice each.
    #[test]
    fn payloads_are_each_records_json() {
        let records: Vec<_> = (0..3)
            .map(|i| {
                std::sync::Arc::new(
                    crate::AuditRecord::builder("post.created")
                        .resource("post", i.to_string())
                        .detail("n", i)
                        .build(),
                )
            })
            .collect();
        let payloads = payloads(&Batch::new(&records));
        assert_eq!(payloads.len(), 3);
        for (record, payload) in records.iter().zip(&payloads) {
            assert_eq!(payload[..], serde_json::to_vec(&**record).unwrap()[..]);
        }
    }
}
