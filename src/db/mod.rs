//! The `audit_events` table: one schema and one code path for SQLite,
//! PostgreSQL and MySQL/MariaDB.

pub(crate) mod backend;
mod query;
mod row;
mod schema;
mod sink;
mod store;
mod write;

pub use self::query::{AuditQuery, Cursor, Page};
pub use self::sink::{migrate, purge};
pub use self::sink::{DatabaseSink, DatabaseSinkBuilder};
pub use self::store::Store;
