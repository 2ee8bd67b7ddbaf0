ALTER TABLE audit_events
    DROP INDEX audit_events_time,
    ADD INDEX audit_events_time (timestamp_us, id);
