DROP TRIGGER audit_events_no_overwrite;
DROP TRIGGER audit_event_flags_no_overwrite;
DROP TRIGGER audit_events_no_delete;
DROP TRIGGER audit_event_flags_no_delete;

CREATE TABLE audit_purge (active INTEGER NOT NULL);
INSERT INTO audit_purge (active) VALUES (0);
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN (SELECT active FROM audit_purge) = 0
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_event_flags_no_delete BEFORE DELETE ON audit_event_flags
WHEN (SELECT active FROM audit_purge) = 0
BEGIN SELECT RAISE(ABORT, 'audit_event_flags is append-only'); END;
