-- Audit records. Time is microseconds since the Unix epoch (UTC): one
-- unambiguous type on every backend, ordered as numbers.
CREATE TABLE audit_events (
    id            TEXT    NOT NULL PRIMARY KEY,  -- UUID v7, lower-case, sorts by time
    timestamp_us  BIGINT  NOT NULL,
    action        TEXT    NOT NULL,
    actor_id      TEXT,
    actor_type    TEXT,
    actor_email   TEXT,
    actor_name    TEXT,
    actor_flags   TEXT    NOT NULL,              -- JSON array of strings
    resource_type TEXT,
    resource_id   TEXT,
    detail        TEXT    NOT NULL,              -- JSON object
    request_id    TEXT,
    client_ip     TEXT,
    user_agent    TEXT
);
CREATE INDEX audit_events_time ON audit_events (timestamp_us, id);
CREATE INDEX audit_events_actor ON audit_events (actor_id, timestamp_us, id);
CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id, timestamp_us, id);
CREATE INDEX audit_events_action ON audit_events (action, timestamp_us, id);

-- One row per flag of a record, so that "has flag X" is an index range.
CREATE TABLE audit_event_flags (
    flag          TEXT    NOT NULL,
    timestamp_us  BIGINT  NOT NULL,
    event_id      TEXT    NOT NULL,
    PRIMARY KEY (flag, timestamp_us, event_id)
);
CREATE INDEX audit_event_flags_time ON audit_event_flags (timestamp_us);

-- Append-only: updates are always refused, deletes only while the
-- retention purge has set `active` inside its own transaction.
CREATE TABLE audit_purge (active INTEGER NOT NULL);
INSERT INTO audit_purge (active) VALUES (0);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN (SELECT active FROM audit_purge) = 0
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_event_flags_no_update BEFORE UPDATE ON audit_event_flags
BEGIN SELECT RAISE(ABORT, 'audit_event_flags is append-only'); END;
CREATE TRIGGER audit_event_flags_no_delete BEFORE DELETE ON audit_event_flags
WHEN (SELECT active FROM audit_purge) = 0
BEGIN SELECT RAISE(ABORT, 'audit_event_flags is append-only'); END;
