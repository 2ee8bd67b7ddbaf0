-- An actor's records under an action prefix: the store merges, per action
-- under the prefix, this index's range for (actor, action), newest first
-- (see `db::merge`). Without it each action's range of the actor is found
-- only by reading every record of the actor or of the action.
CREATE INDEX audit_events_actor_action ON audit_events (actor_id, action, timestamp_us, id);
