DROP TABLE audit_purge;
DROP TABLE audit_event_flags;
DROP TABLE audit_events;
