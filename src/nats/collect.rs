//! The collector: the stream, through a durable pull consumer, into a
//! database, acknowledged only after the commit.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, AckKind, Message};
use futures_util::StreamExt;

use super::commit::Imports;
use super::NatsStream;
use crate::{AuditRecord, DatabaseSink, Error, Result};

/// Reads the stream with a durable pull consumer and writes its records
/// into a database through [`DatabaseSink::import`]: one transaction per
/// batch, records already stored skipped, messages acknowledged only after
/// the commit.
///
/// Killed at any moment, it loses nothing and stores nothing twice: what
/// was not acknowledged is delivered again after the acknowledgement wait,
/// and its insert finds the records present. Collectors sharing the
/// durable name share the load. A message that is not a record is
/// terminated (never delivered again) and warned about; a record the
/// database refuses, or whose id is stored with other content, is warned
/// about on target `fabric_audit` and acknowledged.
///
/// # Examples
///
/// ```no_run
/// use fabric_audit::{NatsCollector, NatsStream};
///
/// # async fn run() -> fabric_audit::Result<()> {
/// let collector = NatsCollector::builder(
///     NatsStream::new("nats://127.0.0.1:4222"),
///     "postgres://postgres@127.0.0.1/audit",
/// )
/// .build()?;
/// let total = collector
///     .run(async { tokio::signal::ctrl_c().await.ok(); }, |p| eprintln!("{p:?}"))
///     .await?;
/// println!("{} records stored", total.stored);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCollector {
    target: NatsStream,
    database: String,
    durable: String,
    batch: usize,
    imports: usize,
    linger: Duration,
    ack_wait: Duration,
    every: Duration,
}

/// Builds a [`NatsCollector`]; made by [`NatsCollector::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`durable`](Self::durable) | `fabric-audit-collect` |
/// | [`batch_size`](Self::batch_size) | 1 000 records per transaction |
/// | [`imports`](Self::imports) | 2 batches written at a time, each on a connection of its own |
/// | [`linger`](Self::linger) | 100 ms: the longest a partial batch waits |
/// | [`ack_wait`](Self::ack_wait) | 30 s before an unacknowledged record is delivered again |
/// | [`progress_every`](Self::progress_every) | 5 s |
#[must_use]
#[derive(Debug)]
pub struct NatsCollectorBuilder(NatsCollector);

/// What a collector has done so far.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Records stored by this collector.
    pub stored: u64,
    /// Records delivered again and found already stored.
    pub present: u64,
    /// Records not stored: refused by the database, conflicting with a
    /// stored id, or messages that are not records.
    pub not_stored: u64,
    /// Records per second since the previous report.
    pub rate: f64,
    /// Messages of the stream not yet acknowledged by the consumer.
    pub lag: u64,
}

impl NatsCollector {
    /// Starts building a collector from `target` into the database at
    /// `database_url`.
    pub fn builder(target: NatsStream, database_url: impl Into<String>) -> NatsCollectorBuilder {
        NatsCollectorBuilder(Self {
            target,
            database: database_url.into(),
            durable: "fabric-audit-collect".to_owned(),
            batch: 1000,
            imports: 2,
            linger: Duration::from_millis(100),
            ack_wait: Duration::from_secs(30),
            every: Duration::from_secs(5),
        })
    }

    /// Collects until `shutdown` completes, then commits and acknowledges
    /// what it holds and returns the totals. `progress` is called every
    /// [`progress_every`](NatsCollectorBuilder::progress_every).
    ///
    /// # Errors
    ///
    /// No NATS server answers at start-up, the stream has incompatible
    /// settings, the database URL is wrong, or the consumer was deleted.
    /// A database that fails while collecting is retried with backoff.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Progress> {
        let client = self.target.connect().await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.target.timeout)
            .build(client.clone());
        let stream = self.target.ensure(&js).await?;
        let consumer = stream
            .get_or_create_consumer(
                &self.durable,
                pull::Config {
                    durable_name: Some(self.durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    // The batches being written, the one filling, and
                    // room for the next pull.
                    max_ack_pending: (self.batch * (self.imports + 3))
                        .try_into()
                        .unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "cannot create or read nats consumer `{}`: {e}",
                    self.durable
                ))
            })?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .map_err(|e| Error::unavailable(format!("cannot read nats consumer: {e}")))?;
        // Building connects, on a runtime of the sink's own: not on ours.
        // The first sink purges past the retention; the others only write.
        let (database, imports) = (self.database.clone(), self.imports);
        let sinks = tokio::task::spawn_blocking(move || {
            (0..imports)
                .map(|i| match i {
                    0 => DatabaseSink::builder(&database).build(),
                    _ => DatabaseSink::builder(&database).keep_forever().build(),
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::database(format!("database sink failed to start: {e}")))??;
        let mut imports = Imports::new(sinks);
        let result = self
            .collect(
                &client,
                &consumer,
                &mut messages,
                &mut imports,
                shutdown,
                &mut progress,
            )
            .await;
        // Each sink owns a runtime, which may not be dropped on ours.
        let sinks = imports.into_sinks();
        let _ = tokio::task::spawn_blocking(move || drop(sinks)).await;
        result
    }

    /// The collecting loop of [`run`](Self::run).
    ///
    /// A full batch is handed to a database sink on a blocking thread
    /// while the next one is received and parsed: the messages' delivery
    /// and parsing overlap the database's work, and with two sinks or more
    /// one batch's statements overlap another's commit. A batch's messages
    /// are acknowledged once its import has committed.
    async fn collect(
        &self,
        client: &async_nats::Client,
        consumer: &jetstream::consumer::Consumer<pull::Config>,
        messages: &mut pull::Stream,
        imports: &mut Imports,
        shutdown: impl Future<Output = ()>,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<Progress> {
        let mut total = Progress::default();
        let mut held: Vec<(Message, Arc<AuditRecord>)> = Vec::with_capacity(self.batch);
        let mut tick = tokio::time::interval(self.every);
        let (mut last, mut last_count) = (Instant::now(), 0u64);
        let mut deadline = None;
        let mut lag = None;
        tokio::pin!(shutdown);
        'collect: loop {
            let linger = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ended = imports.next(), if !imports.is_empty() => {
                    if imports.settle(ended, &mut total, &mut shutdown).await? {
                        break;
                    }
                    continue;
                }
                _ = tick.tick() => {
                    let done = total.stored + total.present;
                    total.rate = (done - last_count) as f64 / last.elapsed().as_secs_f64();
                    (last, last_count) = (Instant::now(), done);
                    // The lag is asked for alongside the work, not in its
                    // way; progress is reported with the answer.
                    if lag.is_none() {
                        lag = Some(Box::pin(consumer.get_info()));
                    }
                    continue;
                }
                info = async {
                    match lag.as_mut() {
                        Some(query) => query.await,
                        None => std::future::pending().await,
                    }
                }, if lag.is_some() => {
                    lag = None;
                    if let Ok(info) = info {
                        total.lag = info.num_pending + info.num_ack_pending as u64;
                    }
                    progress(&total);
                    continue;
                }
                () = linger => {}
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        if let Some(record) = parse(&message, &mut total).await {
                            held.push((message, Arc::new(record)));
                        }
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.linger);
                        if held.len() < self.batch {
                            continue;
                        }
                    }
                    Some(Err(e)) => {
                        if matches!(e.kind(), pull::MessagesErrorKind::ConsumerDeleted) {
                            return Err(Error::invalid(format!("nats consumer `{}` was deleted", self.durable)));
                        }
                        tracing::warn!(target: "fabric_audit", "nats consumer: {e}");
                        continue;
                    }
                    None => return Err(Error::unavailable("nats consumer ended its message stream")),
                },
            }
            deadline = None;
            if held.is_empty() {
                continue;
            }
            // Every sink busy: the first to end takes this batch.
            while imports.all_busy() {
                let ended = imports.next().await;
                if imports.settle(ended, &mut total, &mut shutdown).await? {
                    break 'collect;
                }
            }
            imports.start(&mut held)?;
        }
        // Ctrl-C: finish the imports under way and commit what is held,
        // each tried once: with the database down, the records are
        // delivered again to the next collector.
        imports.finish(&mut total).await?;
        if !held.is_empty() {
            imports.start(&mut held)?;
            imports.finish(&mut total).await?;
        }
        client
            .flush()
            .await
            .map_err(|e| Error::unavailable(format!("cannot flush nats acknowledgements: {e}")))?;
        Ok(total)
    }
}

/// The record in `message`, or `None` (terminated and counted) for a
/// message that is not one.
async fn parse(message: &Message, total: &mut Progress) -> Option<AuditRecord> {
    match serde_json::from_slice::<AuditRecord>(&message.payload) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(target: "fabric_audit", subject = %message.subject, "nats message is not an audit record, dropped: {e}");
            total.not_stored += 1;
            if let Err(e) = message.ack_with(AckKind::Term).await {
                tracing::warn!(target: "fabric_audit", "cannot terminate nats message: {e}");
            }
            None
        }
    }
}

impl NatsCollectorBuilder {
    /// The durable consumer's name: collectors with the same name share
    /// the stream's records; another name reads them all again.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.0.durable = name.into();
        self
    }

    /// The most records per transaction (at least 1).
    pub fn batch_size(mut self, records: usize) -> Self {
        self.0.batch = records;
        self
    }

    /// The most batches written at a time (at least 1), each by a database
    /// sink on a connection of its own: while one batch commits, the next
    /// one's statements run. The first sink also purges past the
    /// retention (30 days); the others only write.
    pub fn imports(mut self, batches: usize) -> Self {
        self.0.imports = batches;
        self
    }

    /// The longest a partial batch waits for more records.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.0.linger = linger;
        self
    }

    /// How long a delivered record may stay unacknowledged (a collector
    /// killed mid-batch) before it is delivered again. Applies when the
    /// durable consumer is created.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.0.ack_wait = wait;
        self
    }

    /// How often `run` reports progress.
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.0.every = every;
        self
    }

    /// Builds the collector; it connects in [`NatsCollector::run`].
    ///
    /// # Errors
    ///
    /// Bad stream settings (see [`NatsSinkBuilder::build`](crate::NatsSinkBuilder::build)),
    /// a zero batch size, number of imports, ack wait or progress interval, or a durable name
    /// with characters a consumer name cannot hold.
    pub fn build(self) -> Result<NatsCollector> {
        let c = self.0;
        c.target.validate()?;
        if c.batch == 0 || c.imports == 0 || c.ack_wait.is_zero() || c.every.is_zero() {
            return Err(Error::invalid(
                "collect: batch size, imports, ack wait and progress interval must be above zero",
            ));
        }
        let name_ok = !c.durable.is_empty()
            && c.durable
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(Error::invalid(format!(
                "collect: durable name {:?} may hold only letters, digits, `_` and `-`",
                c.durable
            )));
        }
        Ok(c)
    }
}
