//! Beyond one machine: records published to NATS JetStream by every service
//! instance, and collected from there into one database.
//!
//! The stream is the durable buffer between many producers and one store:
//! producers need no database connection, and a slow or absent database
//! holds back no producer. Each record is published with its id as
//! `Nats-Msg-Id` (the server stores a retried publish once within its
//! duplicate window) and collected with an idempotent insert acknowledged
//! only after the commit, so the table holds every record exactly once.

mod ack;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod collect;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod commit;
mod sink;
mod stream;

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use self::collect::{NatsCollector, NatsCollectorBuilder, Progress};
pub use self::sink::{NatsSink, NatsSinkBuilder};
pub use self::stream::NatsStream;
