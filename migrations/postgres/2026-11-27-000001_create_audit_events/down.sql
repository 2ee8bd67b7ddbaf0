DROP TABLE audit_event_flags;
DROP TABLE audit_events;
DROP FUNCTION fabric_audit_append_only();
