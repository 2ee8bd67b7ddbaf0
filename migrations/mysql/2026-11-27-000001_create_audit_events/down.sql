DROP TABLE audit_event_flags;
DROP TABLE audit_events;
