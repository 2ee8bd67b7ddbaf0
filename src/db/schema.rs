//! The tables, as Diesel sees them: one definition for every backend.
//!
//! `audit_events` is expanded from the list of the record's fields
//! (`record::fields`); the migrations that create it are SQL and are held
//! to the same list by the tests of `db::ddl`.

/// Defines `audit_events` and [`EVENT_COLUMNS`] from the list of fields.
macro_rules! define_events_table {
    (; $({ $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
            $role:ident ( $($arg:tt)* ) })*) => {
        diesel::table! {
            /// One row per audit record.
            audit_events (id) {
                $($column -> $($sql)*,)*
            }
        }

        /// The columns of `audit_events`, in the record's order.
        pub(crate) const EVENT_COLUMNS: &[&str] = &[$(stringify!($column)),*];

        /// Whether each of [`EVENT_COLUMNS`] is `NOT NULL`.
        #[cfg(test)]
        pub(crate) const EVENT_COLUMNS_REQUIRED: &[bool] =
            &[$($crate::record::fields::__required!($($sql)*)),*];
    };
}

crate::record::fields::with_record_fields!(define_events_table!());

diesel::table! {
    /// One row per flag of a record: "has flag X" is an index range.
    audit_event_flags (flag, timestamp_us, event_id) {
        flag -> Text,
        timestamp_us -> BigInt,
        event_id -> Text,
    }
}

diesel::table! {
    /// One row per retention purge of a hash chain: what it removed.
    audit_purges (chain, below_seq) {
        chain -> Text,
        below_seq -> BigInt,
        head -> Text,
        cutoff_us -> BigInt,
        purged_at_us -> BigInt,
        records -> BigInt,
        note -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(audit_events, audit_event_flags, audit_purges);
