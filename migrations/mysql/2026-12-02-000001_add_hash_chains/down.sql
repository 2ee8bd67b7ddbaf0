ALTER TABLE audit_events
    DROP INDEX audit_events_chain,
    DROP COLUMN hash,
    DROP COLUMN seq,
    DROP COLUMN chain;
