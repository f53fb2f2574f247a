-- Privileges.  Every function of sessionize starts out not executable by
-- PUBLIC; what README documents for users is granted back.  Aggregates check
-- their support functions against their owner, so the support functions
-- need no grant.  create_pipeline() and prune_seen() are for the roles an
-- administrator grants them to; every pipeline function checks that its
-- caller has the rights of the pipeline's owner.

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA sessionize FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	sessionize.session_id(timestamptz, interval),
	sessionize.session_id(timestamptz, interval, interval),
	sessionize.session_id(timestamp, interval),
	sessionize.session_id(timestamp, interval, interval),
	sessionize.session_start(timestamptz, interval),
	sessionize.session_start(timestamptz, interval, interval),
	sessionize.session_start(timestamp, interval),
	sessionize.session_start(timestamp, interval, interval),
	sessionize.sessions(timestamptz, interval),
	sessionize.sessions(timestamptz, interval, interval),
	sessionize.sessions(timestamp, interval),
	sessionize.sessions(timestamp, interval, interval),
	sessionize.session_set(timestamptz, interval),
	sessionize.session_set(timestamptz, interval, interval),
	sessionize.merge(sessionize.session_set),
	sessionize.session_rows(sessionize.session_set),
	sessionize.first(anyelement, timestamptz),
	sessionize.last(anyelement, timestamptz),
	sessionize.approx_count_distinct(anyelement),
	sessionize.fingerprint(jsonb, text[], text),
	sessionize.fingerprint(record, text[], text),
	sessionize.fingerprint(text, text[], text),
	sessionize.fingerprint_bytes(jsonb, text[]),
	sessionize.first_seen(text, uuid, interval),
	sessionize.first_seen(text, text, interval),
	sessionize.first_seen_many(text, uuid[], interval),
	sessionize.classify_duplicate(text, text, uuid, interval),
	sessionize.create_slot_table(text, text[], regtype[], regtype, regtype, integer, text, text, text, text),
	sessionize.slot_upsert(regclass, "any", "any", "any"),
	sessionize.slot_upsert_many(regclass, "any", "any", "any"),
	sessionize.run_pipeline(text, integer),
	sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean, text),
	sessionize.pause_pipeline(text),
	sessionize.resume_pipeline(text),
	sessionize.drop_pipeline(text),
	sessionize.replay_late(text, integer),
	sessionize.pipeline_backlog(text),
	sessionize.pipeline_waiting(text),
	sessionize.sessionize_pipeline_service(bigint, text, integer),
	sessionize.set_rollups(text, boolean),
	sessionize.grant_reader(text, regrole),
	sessionize.revoke_reader(text, regrole),
	sessionize.add_profile(text, text, text[], text[], text, interval),
	sessionize.drop_profile(text, text),
	sessionize.profile(text, text, anyelement, date, date, interval, float8),
	sessionize.rebuild_profile(text, text, regclass, date, date),
	sessionize.expire_profiles(text)
TO PUBLIC;

GRANT SELECT ON sessionize.pipeline_status, sessionize.pipeline_dead_letters TO PUBLIC;

-- The behavioral aggregates (13_behavior.sql).
GRANT EXECUTE ON FUNCTION
	sessionize.window_funnel(interval, timestamptz, boolean[]),
	sessionize.window_funnel(interval, timestamp, boolean[]),
	sessionize.window_funnel(interval, text, timestamptz, boolean[]),
	sessionize.window_funnel(interval, text, timestamp, boolean[]),
	sessionize.window_funnel_events(interval, text, timestamptz, boolean[]),
	sessionize.window_funnel_events(interval, text, timestamp, boolean[]),
	sessionize.retention(boolean[]),
	sessionize.sequence_match(text, timestamptz, boolean[]),
	sessionize.sequence_match(text, timestamp, boolean[]),
	sessionize.sequence_count(text, timestamptz, boolean[]),
	sessionize.sequence_count(text, timestamp, boolean[]),
	sessionize.sequence_match_events(text, timestamptz, boolean[]),
	sessionize.sequence_match_events(text, timestamp, boolean[]),
	sessionize.sequence_next_node(text, text, timestamptz, text, boolean, boolean[]),
	sessionize.sequence_next_node(text, text, timestamp, text, boolean, boolean[])
TO PUBLIC;
