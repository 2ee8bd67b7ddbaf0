-- Tamper evidence: each record's place in its hash chain (the writing
-- instance and sink), its gap-free number in it, and SHA-256 of the
-- record and the previous hash (64 hex digits). Absent in records stored
-- before chains, and in records of sinks that do not chain.
-- Verification reads each chain in order; the index is not unique, so
-- that a chain restarted by mistake stores its records (and verification
-- names it).
ALTER TABLE audit_events
    ADD COLUMN chain VARCHAR(255),
    ADD COLUMN seq   BIGINT,
    ADD COLUMN hash  VARCHAR(255),
    ADD INDEX audit_events_chain (chain, seq);
