DROP TRIGGER audit_purges_no_delete;
DROP TRIGGER audit_purges_no_update;
DROP TABLE audit_purges;
