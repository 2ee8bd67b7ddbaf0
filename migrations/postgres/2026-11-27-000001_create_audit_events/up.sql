-- Audit records. Time is microseconds since the Unix epoch (UTC): one
-- unambiguous type on every backend (to_timestamp(timestamp_us / 1e6)
-- reads it as a timestamptz). Text is compared byte by byte (COLLATE "C"),
-- as on SQLite and MySQL here, so that the ordering of ids for paging and
-- the range that serves an action prefix are the same everywhere.
CREATE TABLE audit_events (
    id            TEXT COLLATE "C"    NOT NULL PRIMARY KEY,  -- UUID v7, lower-case, sorts by time
    timestamp_us  BIGINT  NOT NULL,
    action        TEXT COLLATE "C"    NOT NULL,
    actor_id      TEXT COLLATE "C",
    actor_type    TEXT COLLATE "C",
    actor_email   TEXT COLLATE "C",
    actor_name    TEXT COLLATE "C",
    actor_flags   TEXT COLLATE "C"    NOT NULL,              -- JSON array of strings
    resource_type TEXT COLLATE "C",
    resource_id   TEXT COLLATE "C",
    detail        TEXT COLLATE "C"    NOT NULL,              -- JSON object
    request_id    TEXT COLLATE "C",
    client_ip     TEXT COLLATE "C",
    user_agent    TEXT COLLATE "C"
);
CREATE INDEX audit_events_time ON audit_events (timestamp_us, id);
CREATE INDEX audit_events_actor ON audit_events (actor_id, timestamp_us, id);
CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id, timestamp_us, id);
CREATE INDEX audit_events_action ON audit_events (action, timestamp_us, id);

CREATE TABLE audit_event_flags (
    flag          TEXT COLLATE "C" NOT NULL,
    timestamp_us  BIGINT  NOT NULL,
    event_id      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (flag, timestamp_us, event_id)
);
CREATE INDEX audit_event_flags_time ON audit_event_flags (timestamp_us);

-- Append-only. The real control is privileges (see the README: the
-- application's role gets SELECT and INSERT only); these triggers stop
-- accidents. The retention purge sets fabric_audit.purge with SET LOCAL.
CREATE FUNCTION fabric_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('fabric_audit.purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION fabric_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION fabric_audit_append_only();
CREATE TRIGGER audit_event_flags_append_only BEFORE UPDATE OR DELETE ON audit_event_flags
    FOR EACH ROW EXECUTE FUNCTION fabric_audit_append_only();
CREATE TRIGGER audit_event_flags_no_truncate BEFORE TRUNCATE ON audit_event_flags
    FOR EACH STATEMENT EXECUTE FUNCTION fabric_audit_append_only();
