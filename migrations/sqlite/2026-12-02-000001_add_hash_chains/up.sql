-- Tamper evidence: each record's place in its hash chain (the writing
-- instance and sink), its gap-free number in it, and SHA-256 of the
-- record and the previous hash (64 hex digits). Absent in records stored
-- before chains, and in records of sinks that do not chain.
ALTER TABLE audit_events ADD COLUMN chain TEXT;
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
-- Verification reads each chain in order; not unique, so that a chain
-- restarted by mistake stores its records (and verification names it).
CREATE INDEX audit_events_chain ON audit_events (chain, seq);
