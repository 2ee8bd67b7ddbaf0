//! The `audit_events` table: one schema and one code path for SQLite,
//! PostgreSQL and MySQL/MariaDB.

pub(crate) mod backend;
mod classify;
mod ddl;
mod import;
mod limit;
mod merge;
mod migrate;
mod purge;
pub(crate) mod query;
mod row;
mod schema;
mod sink;
mod store;
mod stored;
mod write;

#[cfg(feature = "http")]
pub(crate) use self::query::{parse_pairs, with_parameters, Given};
#[cfg(feature = "http")]
pub(crate) use self::row::EventRow;
#[cfg(feature = "http")]
pub(crate) use self::store::RowPage;
pub use self::import::{ImportedFile, RecordFile};
pub use self::query::{AuditQuery, Cursor, Page, Total};
pub use self::migrate::{migrate, schema_sql};
pub use self::purge::{purge, purge_signed};
pub use self::sink::{DatabaseSink, DatabaseSinkBuilder, Imported};
pub use self::store::{Store, StoreBuilder};
