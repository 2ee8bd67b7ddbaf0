//! The audit schema: applying the migrations, or checking a schema the
//! application owns, and publishing its DDL.
//!
//! The database sink prepares its schema here at start-up; [`migrate`] and
//! [`schema_sql`] are the same steps for deployments that migrate before
//! the application starts, or whose own migration tool owns the schema.

use super::backend::{Backend, Conn, Role};
use super::{ddl, write};
use crate::{Error, Result};

/// Applies the audit tables' migrations to the database at `url`.
///
/// The database sink does this itself at start-up; this is for deployments
/// that migrate before the application starts (as the tables' owner, when
/// the application's role may only read and append). Blocks: from async
/// code call it inside `spawn_blocking`.
///
/// # Errors
///
/// A bad URL ([`Error::is_invalid_input`]), a database that cannot be
/// reached ([`Error::is_unavailable`]), or a migration that fails.
pub fn migrate(url: &str) -> Result<()> {
    let backend = Backend::parse(url)?;
    let mut conn = connect(&backend, Role::Migrate)?;
    write::migrate(&mut conn).map_err(|e| {
        let kind = backend.kind();
        Error::database(format!("cannot migrate the {kind} audit tables")).because(e)
    })
}

/// The audit schema of the backend `url` names, as the SQL script of its
/// embedded migrations in order: for applications whose own migration
/// tool owns the schema (with
/// [`DatabaseSinkBuilder::apply_migrations(false)`](crate::DatabaseSinkBuilder::apply_migrations)).
/// `fabric-audit migrate --print-sql` prints it.
///
/// # Errors
///
/// A URL of an unknown scheme or of a backend whose feature is off.
///
/// # Examples
///
/// ```
/// let sql = fabric_audit::schema_sql("sqlite://audit.db")?;
/// assert!(sql.contains("CREATE TABLE audit_events"));
/// # Ok::<(), fabric_audit::Error>(())
/// ```
pub fn schema_sql(url: &str) -> Result<String> {
    Ok(ddl::script(ddl::steps_of(&Backend::parse(url)?)))
}

/// A connection to `backend` for `role`; a database that cannot be reached
/// is [`Error::is_unavailable`], as it is for the [`Store`](crate::Store).
pub(crate) fn connect(backend: &Backend, role: Role) -> Result<Conn> {
    backend.connect(role).map_err(|e| {
        Error::unavailable(format!(
            "cannot connect to the {} audit database",
            backend.kind()
        ))
        .because(e)
    })
}

/// Applies the migrations (`apply`), or checks that the schema is complete.
///
/// Where the migrations cannot run but the tables answer (a role without
/// DDL privileges, whose owner migrates; tables made by another tool, which
/// diesel's migration table does not know), warns on target `fabric_audit`
/// and goes on: "already exists" or "permission denied" is no reason to
/// stop when nothing is missing.
pub(crate) fn prepare_schema(conn: &mut Conn, kind: &str, apply: bool) -> Result<()> {
    if !apply {
        return match ddl::missing(conn).as_slice() {
            [] => Ok(()),
            missing => Err(Error::database(format!(
                "the {kind} audit schema lacks {} (migrations are left to the application: \
                 create them from `fabric-audit migrate --print-sql`)",
                missing.join(", ")
            ))),
        };
    }
    match write::migrate(conn) {
        Ok(()) => Ok(()),
        Err(error) => match ddl::missing(conn).as_slice() {
            [] => {
                tracing::warn!(
                    target: "fabric_audit",
                    %error,
                    "the audit schema is complete but cannot be migrated from here; writing to it as it is"
                );
                Ok(())
            }
            missing => Err(Error::database(format!(
                "cannot prepare the {kind} audit schema, which lacks {}",
                missing.join(", ")
            ))
            .because(error)),
        },
    }
}
