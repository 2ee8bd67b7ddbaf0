//! Which database errors may clear by themselves, and which mean the data.
//!
//! The drivers keep little of the server's error: diesel-async's PostgreSQL
//! and MySQL errors carry the message but neither the SQLSTATE nor the
//! MySQL error number, and a lost connection on MySQL is an `Unknown`
//! database error like any other. So errors are sorted by kind where the
//! kind says it, and by the (English) message otherwise. Whatever is not
//! known to be transient is treated as possibly the data's fault: the sink
//! then splits its batch until the one record the database refuses is
//! alone, and counts that record as failed only if the connection still
//! answers other statements (see `write::insert`).

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Fragments of the messages of faults that clear by themselves or by an
/// operator's hand (connection lost, deadlock, timeouts, a full disk, a
/// missing privilege or table), lower case. A record is never counted as
/// failed for one of these: its batch is retried.
const TRANSIENT: &[&str] = &[
    // Connections: PostgreSQL, MariaDB/MySQL (server and mysql_async), SQLite.
    "connection",
    "gone away",
    "broken pipe",
    "input/output error",
    "i/o error",
    "unexpected eof",
    "end of file",
    "timed out",
    "timeout",
    "shutdown",
    "shutting down",
    "starting up",
    "in recovery",
    "terminating",
    "cancel",
    "interrupted",
    "max_statement_time",
    // Concurrency.
    "deadlock",
    "could not serialize",
    "could not obtain lock",
    "lock wait",
    "database is locked",
    "database table is locked",
    "busy",
    "try restarting transaction",
    // MariaDB 1412: a table made or changed by a concurrent statement (a
    // migration) since this transaction began.
    "please retry transaction",
    // Resources.
    "no space",
    "disk",
    "is full",
    "out of memory",
    "too many",
    // The operator's side: privileges, schema, read-only servers.
    "permission denied",
    "command denied",
    "access denied",
    "read-only",
    "readonly",
    "read only",
    "does not exist",
    "doesn't exist",
    "no such table",
    "no such column",
    "unknown column",
];

/// Whether `error` may clear without any change to the data: retry the
/// batch as it is.
pub(crate) fn is_transient(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::ReadOnlyTransaction
            // Our inserts skip stored ids; a duplicate is a concurrent
            // writer's, and the retry skips it.
            | DatabaseErrorKind::UniqueViolation => true,
            DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::RestrictViolation
            | DatabaseErrorKind::ExclusionViolation => false,
            _ => has_transient_message(info.message()),
        },
        // Made by the client from the data: the data's fault.
        DieselError::SerializationError(_) | DieselError::QueryBuilderError(_) => false,
        _ => true,
    }
}

/// Whether `error` says the audit tables do not exist (yet): a fresh
/// database no sink has prepared.
pub(crate) fn is_missing_table(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            message.contains("no such table")
                || (message.contains("audit_event")
                    && (message.contains("does not exist") || message.contains("doesn't exist")))
        }
        _ => false,
    }
}

/// Whether `error` means the database could not be reached or did not
/// answer (rather than refused a statement): a 503 for a reader.
pub(crate) fn is_unreachable(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            [
                "connection",
                "gone away",
                "broken pipe",
                "input/output error",
                "timeout",
                "timed out",
                "shutting down",
                "starting up",
                "terminating",
                "cancel",
                "database is locked",
            ]
            .iter()
            .any(|fragment| message.contains(fragment))
        }
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

fn has_transient_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    TRANSIENT.iter().any(|fragment| message.contains(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(message: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned()))
    }

    #[test]
    fn messages_of_the_three_backends_are_sorted() {
        let transient = [
            "deadlock detected",
            "Deadlock found when trying to get lock; try restarting transaction",
            "Lock wait timeout exceeded; try restarting transaction",
            "Table definition has changed, please retry transaction",
            "canceling statement due to statement timeout",
            "Query execution was interrupted (max_statement_time exceeded)",
            "terminating connection due to administrator command",
            "Input/output error: Connection refused (os error 111)",
            "Driver error: `Connection to the server is closed.'",
            "database is locked",
            "database or disk is full",
            "could not extend file \"base/1/2\": No space left on device",
            "permission denied for table audit_events",
            "INSERT command denied to user 'app'@'localhost' for table 'audit_events'",
            "column \"x\" of relation \"audit_events\" does not exist",
            "attempt to write a readonly database",
            "sorry, too many clients already",
        ];
        for message in transient {
            assert!(is_transient(&unknown(message)), "{message}");
        }
        let data = [
            "invalid byte sequence for encoding \"UTF8\": 0x00",
            "Data too long for column 'user_agent' at row 1",
            "index row size 3016 exceeds btree version 4 maximum 2704 for index \"audit_events_action\"",
            "value too long for type character varying(255)",
            "Incorrect string value: '\\xF0\\x9F' for column 'actor_id' at row 1",
            "poison refused",
            "Got a packet bigger than 'max_allowed_packet' bytes",
        ];
        for message in data {
            assert!(!is_transient(&unknown(message)), "{message}");
        }
        let kinds = [
            (DatabaseErrorKind::ClosedConnection, true),
            (DatabaseErrorKind::UnableToSendCommand, true),
            (DatabaseErrorKind::SerializationFailure, true),
            (DatabaseErrorKind::CheckViolation, false),
            (DatabaseErrorKind::NotNullViolation, false),
        ];
        for (kind, transient) in kinds {
            let error = DieselError::DatabaseError(kind, Box::new("deadlock".to_owned()));
            assert_eq!(is_transient(&error), transient, "{kind:?}");
        }
        assert!(is_transient(&DieselError::BrokenTransactionManager));
    }

    #[test]
    fn unreachable_is_about_the_connection_only() {
        assert!(is_unreachable(&unknown(
            "Input/output error: Connection reset by peer"
        )));
        assert!(is_unreachable(&DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("eof".to_owned())
        )));
        assert!(!is_unreachable(&unknown(
            "permission denied for table audit_events"
        )));
        assert!(!is_unreachable(&DieselError::NotFound));
    }
}
