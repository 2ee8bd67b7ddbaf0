-- Retention keeps hash chains verifiable: the purge cuts a chain just
-- before one of its checkpoints (which states the hash of the record
-- before it) and records here what it removed, signed when the service
-- holds a checkpoint key, so that verification tells a prefix purged by
-- retention from one deleted by someone else.
CREATE TABLE audit_purges (
    chain        VARCHAR(255) NOT NULL,
    below_seq    BIGINT  NOT NULL,
    head         VARCHAR(255) NOT NULL,
    cutoff_us    BIGINT  NOT NULL,
    purged_at_us BIGINT  NOT NULL,
    records      BIGINT  NOT NULL,
    note         TEXT,
    PRIMARY KEY (chain, below_seq)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE TRIGGER audit_purges_no_update BEFORE UPDATE ON audit_purges FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_purges is append-only';
CREATE TRIGGER audit_purges_no_delete BEFORE DELETE ON audit_purges FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_purges is append-only';
