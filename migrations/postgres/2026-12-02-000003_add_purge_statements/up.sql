-- Retention keeps hash chains verifiable: the purge cuts a chain just
-- before one of its checkpoints (which states the hash of the record
-- before it) and records here what it removed, signed when the service
-- holds a checkpoint key, so that verification tells a prefix purged by
-- retention from one deleted by someone else.
CREATE TABLE audit_purges (
    chain        TEXT    COLLATE "C" NOT NULL,
    below_seq    BIGINT  NOT NULL,  -- the chain's records before this seq were purged
    head         TEXT    COLLATE "C" NOT NULL,  -- the hash of record below_seq - 1, as the checkpoint states it
    cutoff_us    BIGINT  NOT NULL,  -- records before this time had expired
    purged_at_us BIGINT  NOT NULL,
    records      BIGINT  NOT NULL,  -- how many this purge found to remove
    note         TEXT,              -- the statement signed (a C2SP signed note), when a key signs
    PRIMARY KEY (chain, below_seq)
);
CREATE TRIGGER audit_purges_append_only BEFORE UPDATE OR DELETE ON audit_purges
    FOR EACH ROW EXECUTE FUNCTION fabric_audit_append_only();
CREATE TRIGGER audit_purges_no_truncate BEFORE TRUNCATE ON audit_purges
    FOR EACH STATEMENT EXECUTE FUNCTION fabric_audit_append_only();
