//! Immutable audit logging for Rust web services, built on [`tracing`].
//!
//! An audit event is an ordinary `tracing` event with target `"audit"`,
//! emitted with [`audit!`]. An [`AuditLayer`] in your subscriber turns each
//! one into an [`AuditRecord`] (who did what to which resource, when, from
//! where) and hands it, without blocking, to background sinks: a daily
//! JSON-lines [`FileSink`], a [`WriterSink`] over a writer you already
//! have (a `tracing_appender` rolling appender), or any [`Sink`] of yours. Your other layers keep
//! working; [`exclude_audit`] keeps audit events out of the ones where
//! personal data does not belong.
//!
//! # Quick start
//!
//! Most apps already have a subscriber with an `EnvFilter`: put that filter
//! on the fmt layer (a global one would switch auditing off) and add the
//! audit layer beside it.
//!
//! ```
//! use fabric_audit::{audit, exclude_audit, AuditLayer, Principal};
//! use tracing_subscriber::filter::FilterExt;
//! use tracing_subscriber::{prelude::*, EnvFilter};
//!
//! struct User { id: u64 }
//! impl Principal for User {
//!     fn id(&self) -> std::borrow::Cow<'_, str> { self.id.to_string().into() }
//!     fn kind(&self) -> Option<&str> { Some("user") }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("audit.jsonl");
//! // 1. Install the layer next to the layers you already have.
//! let (audit_layer, audit) = AuditLayer::builder()
//!     .file(&path) // logs/audit.jsonl: daily files, 90 days kept
//!     .build()?;
//! let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(env_filter.and(exclude_audit())))
//!     .with(audit_layer);
//! # let _guard = tracing::subscriber::set_default(subscriber);
//! # /*
//! subscriber.try_init()?;
//! # */
//! audit.check()?; // fails loudly if the subscriber switches auditing off
//!
//! // 2. Emit anywhere: sync or async, inside or outside a runtime.
//! let user = User { id: 1 };
//! audit!(action = "post.created", actor = &user,
//!        resource_type = "post", resource_id = 42, title = "Hello");
//!
//! // 3. At shutdown, everything emitted so far reaches every sink.
//! let report = audit.shutdown_blocking();
//! assert_eq!(report.emitted(), 1);
//! assert!(report.is_lossless());
//! # Ok(())
//! # }
//! ```
//!
//! # The record
//!
//! One flat JSON object per record, the same in every sink:
//!
//! | field | type | notes |
//! |---|---|---|
//! | `id` | string | UUID v7, made in the layer before any write |
//! | `timestamp` | string | RFC 3339 UTC, microseconds, `Z` |
//! | `action` | string | required, dotted: `post.created` |
//! | `actor_id`, `actor_type`, `actor_email`, `actor_name` | string or null | from the principal, else from an enclosing span |
//! | `actor_flags` | array of strings | `[]` when none |
//! | `resource_type`, `resource_id` | string or null | |
//! | `detail` | object | every other field, typed |
//! | `request_id`, `client_ip`, `user_agent` | string or null | from an enclosing request span |
//! | `chain`, `seq`, `hash` | string, integer, string, or null | the record's place in a hash chain, set where it is stored (tamper evidence); never from an event |
//!
//! # Delivery
//!
//! Each sink has a bounded queue ([`AuditLayerBuilder::queue_capacity`])
//! and a worker thread that writes in batches. Emitting never does I/O and
//! never waits: a full queue drops the record and counts it (or, with
//! [`Overflow::Block`], waits for room). Failing writes are retried with
//! capped backoff while the records stay queued.
//! [`AuditHandle::flush`] waits for everything emitted before it;
//! [`AuditHandle::shutdown`] drains, joins and returns, within its
//! deadline, a [`Report`] in which `emitted == written + dropped + failed`
//! for every sink.
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `sqlite` | yes | [`DatabaseSink`] and [`Store`] on SQLite (bundled) |
//! | `postgres`, `mysql` | | the same on PostgreSQL, MySQL/MariaDB (pure-Rust drivers) |
//! | `http` | | [`http`]: the query API router and the request-context layer |
//! | `config` | | `AuditConfig`: a TOML/YAML file and `FABRIC_AUDIT_*` variables |
//! | `tracing-appender` | | [`WriterSink::from_make_writer`]: any `MakeWriter`, such as a rolling appender, as a sink |
//! | `metrics` | | the pipeline's counters through the `metrics` facade |
//! | `nats` | | [`NatsSink`] to NATS JetStream and, with a database, [`NatsCollector`] (`fabric-audit collect`) |
//! | `cli` | | the `fabric-audit` binary |
//!
//! # Layout
//!
//! - `macros`: [`audit!`].
//! - `layer`: [`AuditLayer`], its builder and filters.
//! - `record`: [`AuditRecord`] and its JSON form.
//! - `delivery`: queues, workers, flush barriers (private).
//! - `sink`: the [`Sink`] trait, the [`FileSink`], the [`WriterSink`] and
//!   [`sinks::from_fn`].
//! - `handle`, `report`: [`AuditHandle`] and its [`Report`].
//! - `db`: the database sink, migrations, retention and the [`Store`].
//! - `http`, `config`: the query API and the settings.

#![cfg_attr(docsrs, feature(doc_cfg))]

// First: `cfg_db!` is used by what follows.
#[macro_use]
mod cfg;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use crate::config::{AuditConfig, TokenConfig};
cfg_db! {
    pub use crate::db::{
        migrate, purge, purge_signed, schema_sql, AuditQuery, Cursor, DatabaseSink,
        DatabaseSinkBuilder, Imported, ImportedFile, Page, RecordFile, Store, StoreBuilder, Total,
    };
}
pub use crate::delivery::Overflow;
pub use crate::error::{Error, Result};
pub use crate::handle::AuditHandle;
pub use crate::layer::{exclude_audit, AuditFilter, AuditLayer, AuditLayerBuilder, ExcludeAudit};
#[cfg(all(feature = "nats", db))]
pub use crate::nats::{NatsCollector, NatsCollectorBuilder, Progress};
#[cfg(feature = "nats")]
pub use crate::nats::{NatsSink, NatsSinkBuilder, NatsStream};
pub use crate::principal::Principal;
pub use crate::record::{AuditRecord, DetailValue, RecordBuilder};
pub use crate::report::{CopyReport, Report, SinkReport};
pub use crate::retention::Retention;
pub use crate::sink::{Batch, ChainHead, FileSink, FileSinkBuilder, Sink, SinkError, WriterSink};

#[allow(dead_code)] // the sinks start using it with the chained streams
mod chain;
#[cfg(feature = "config")]
mod config;
cfg_db! {
    mod db;
}
mod delivery;
mod error;
mod handle;
#[cfg(all(feature = "http", db))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(
        feature = "http",
        any(feature = "sqlite", feature = "postgres", feature = "mysql")
    )))
)]
pub mod http;
mod layer;
mod macros;
#[cfg(feature = "nats")]
mod nats;
mod principal;
mod quiet;
mod record;
mod report;
mod retention;
mod sink;

/// Sinks made from closures: [`sinks::from_fn`].
pub mod sinks {
    pub use crate::sink::{from_fn, FromFn};
}

/// Signed checkpoints of the hash chains: the keys that sign them and
/// verify them.
///
/// Each sink's chain is checkpointed by its worker (see
/// [`AuditLayerBuilder::checkpoint_key`]): a record of action
/// [`verify::CHECKPOINT_ACTION`] that states the `seq` and hash of the
/// record before it and, when a [`SigningKey`](checkpoint::SigningKey) is
/// configured, carries the same as a C2SP signed note signed with
/// Ed25519. `fabric-audit keygen` makes a key;
/// [`verify::Verifier::keys`] checks the signatures.
pub mod checkpoint {
    pub use crate::chain::checkpoint::{PublicKey, SigningKey};
}

/// What `audit!` expands to; not public API.
#[doc(hidden)]
pub mod __private;
pub mod verify;
