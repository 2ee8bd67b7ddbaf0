DROP TABLE audit_purges;
