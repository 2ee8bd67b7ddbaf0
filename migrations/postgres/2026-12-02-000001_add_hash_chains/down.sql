DROP INDEX audit_events_chain;
ALTER TABLE audit_events DROP COLUMN hash, DROP COLUMN seq, DROP COLUMN chain;
