-- The time index carries the action too, so that the store's check of an
-- action prefix against the newest records of the other filters (see
-- `db::merge::newest_in_range`) reads index entries only. InnoDB read each
-- of those rows by primary key for its action: 4 pages of records were
-- 600 page reads, not 4. In place of the old index, not beside it: every
-- row still writes the same number of index entries, and the time order
-- (timestamp_us, id) that pages read it in is unchanged. One statement,
-- so the table is never without its time index.
ALTER TABLE audit_events
    DROP INDEX audit_events_time,
    ADD INDEX audit_events_time (timestamp_us, id, action);
