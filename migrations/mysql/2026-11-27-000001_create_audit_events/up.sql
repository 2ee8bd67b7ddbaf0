-- Audit records. Time is microseconds since the Unix epoch (UTC). Indexed
-- text columns are VARCHAR(255) (InnoDB cannot index TEXT whole).
CREATE TABLE audit_events (
    id            CHAR(36)     NOT NULL PRIMARY KEY,
    timestamp_us  BIGINT       NOT NULL,
    action        VARCHAR(255) NOT NULL,
    actor_id      VARCHAR(255),
    actor_type    VARCHAR(255),
    actor_email   TEXT,
    actor_name    TEXT,
    actor_flags   TEXT         NOT NULL,
    resource_type VARCHAR(255),
    resource_id   VARCHAR(255),
    detail        LONGTEXT     NOT NULL,
    request_id    VARCHAR(255),
    client_ip     VARCHAR(255),
    user_agent    TEXT,
    INDEX audit_events_time (timestamp_us, id),
    INDEX audit_events_actor (actor_id, timestamp_us, id),
    INDEX audit_events_resource (resource_type, resource_id, timestamp_us, id),
    INDEX audit_events_action (action, timestamp_us, id)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE audit_event_flags (
    flag          VARCHAR(255) NOT NULL,
    timestamp_us  BIGINT       NOT NULL,
    event_id      CHAR(36)     NOT NULL,
    PRIMARY KEY (flag, timestamp_us, event_id),
    INDEX audit_event_flags_time (timestamp_us)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- Append-only: the retention purge sets @fabric_audit_purge = 1 in its
-- session; anything else is refused.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_events is append-only';
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events FOR EACH ROW
    BEGIN
        IF COALESCE(@fabric_audit_purge, 0) <> 1 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_events is append-only';
        END IF;
    END;
CREATE TRIGGER audit_event_flags_no_update BEFORE UPDATE ON audit_event_flags FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_event_flags is append-only';
CREATE TRIGGER audit_event_flags_no_delete BEFORE DELETE ON audit_event_flags FOR EACH ROW
    BEGIN
        IF COALESCE(@fabric_audit_purge, 0) <> 1 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_event_flags is append-only';
        END IF;
    END;
