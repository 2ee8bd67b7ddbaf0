//! The tables, as Diesel sees them: one definition for every backend.

diesel::table! {
    /// One row per audit record.
    audit_events (id) {
        id -> Text,
        timestamp_us -> BigInt,
        action -> Text,
        actor_id -> Nullable<Text>,
        actor_type -> Nullable<Text>,
        actor_email -> Nullable<Text>,
        actor_name -> Nullable<Text>,
        actor_flags -> Text,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        detail -> Text,
        request_id -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    /// One row per flag of a record: "has flag X" is an index range.
    audit_event_flags (flag, timestamp_us, event_id) {
        flag -> Text,
        timestamp_us -> BigInt,
        event_id -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(audit_events, audit_event_flags);
