//! The producer side: records published to JetStream, acknowledged.

use std::fmt;
use std::future::IntoFuture;

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::runtime::Runtime;

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
    js: jetstream::Context,
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
                        .max_ack_inflight(self.window)
                        .backpressure_on_inflight(true)
                        .build(client.clone());
                    target.ensure(&js).await?;
                    Ok::<_, Error>(Conn { client, js })
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

async fn publish(conn: &Conn, target: &NatsStream, window: usize, batch: &Batch<'_>) -> Outcome {
    let max_payload = conn.client.server_info().max_payload;
    let mut outcome = Outcome::default();
    let mut pending = FuturesOrdered::new();
    for record in batch {
        let payload = match serde_json::to_vec(record) {
            Ok(payload) => payload,
            Err(e) => {
                outcome.reject(format!("record {} has no JSON form: {e}", record.id()));
                continue;
            }
        };
        if payload.len() + HEADER_ROOM > max_payload {
            outcome.reject(format!(
                "record {} is {} bytes, more than the nats server's max payload of {max_payload}",
                record.id(),
                payload.len()
            ));
            continue;
        }
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(record.id().to_string());
        match conn
            .js
            .send_publish(target.subject(record.action()), message)
            .await
        {
            Ok(ack) => pending.push_back(ack.into_future()),
            Err(e) => {
                outcome
                    .transient
                    .get_or_insert(format!("nats publish failed: {e}"));
                break;
            }
        }
        if pending.len() >= window {
            if let Some(Err(e)) = pending.next().await {
                outcome
                    .transient
                    .get_or_insert(format!("nats publish not acknowledged: {e}"));
                break;
            }
        }
    }
    // Every acknowledgement is awaited, even after a failure: a dropped one
    // would hold its permit until it timed out on its own.
    while let Some(result) = pending.next().await {
        if let Err(e) = result {
            outcome
                .transient
                .get_or_insert(format!("nats publish not acknowledged: {e}"));
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
        let Some(conn) = self.conn.as_ref() else {
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
        if let Some(conn) = self.conn.take() {
            self.runtime
                .block_on(conn.client.flush())
                .map_err(SinkError::transient)?;
        }
        Ok(())
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
