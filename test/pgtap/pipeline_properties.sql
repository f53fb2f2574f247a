-- Pipelines, run by hand: whatever the batches, the order and the
-- re-deliveries, the sessions a pipeline keeps equal sessions() over the
-- distinct events, and every event is accounted for exactly once.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS sessionize;
RESET client_min_messages;
BEGIN;
SELECT plan(27);
SET LOCAL timezone = 'UTC';
SELECT setseed(0.25);

-- 6,000 distinct events of 150 users: visits of clicks a few minutes apart,
-- some visits separated by less than the gap from the next, so that late
-- events bridge sessions; event kinds for per-type counts.
CREATE TEMP TABLE distinct_events AS
SELECT row_number() OVER () AS event_no, user_id, ts, kind
FROM (SELECT (random() * 149)::int AS user_id,
			 timestamptz '2024-02-01' + (random() * 2 * 86400) * interval '1 second' AS ts,
			 (ARRAY['play', 'skip', 'like'])[1 + (random() * 2)::int] AS kind
	  FROM generate_series(1, 6000)) e;
-- 20% re-delivered, everything in random order (30% and more out of order).
CREATE TEMP TABLE deliveries AS
SELECT row_number() OVER (ORDER BY random()) AS arrival, user_id, ts, kind
FROM (SELECT user_id, ts, kind FROM distinct_events
	  UNION ALL
	  SELECT user_id, ts, kind FROM distinct_events WHERE random() < 0.2) d;

CREATE TABLE stream_in (id bigserial, user_id int, ts timestamptz, kind text);
SELECT sessionize.create_pipeline('prop', 'stream_in', 'user_id', 'ts', '20 minutes',
								  fingerprint_exclude => '{id}', type_column => 'kind');

-- Feed the deliveries in ragged chunks, running batches of random size in between.
CREATE FUNCTION pg_temp.feed(pipeline text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	fed bigint := 0;
	total bigint := (SELECT count(*) FROM deliveries);
	chunk int;
BEGIN
	WHILE fed < total LOOP
		chunk := 1 + (random() * 900)::int;
		INSERT INTO stream_in (user_id, ts, kind)
		SELECT user_id, ts, kind FROM deliveries WHERE arrival > fed AND arrival <= fed + chunk ORDER BY arrival;
		fed := fed + chunk;
		PERFORM sessionize.run_pipeline(pipeline, 1 + (random() * 700)::int);
	END LOOP;
	WHILE (SELECT consumed FROM sessionize.run_pipeline(pipeline, 500)) > 0 LOOP
	END LOOP;
END $$;
SELECT pg_temp.feed('prop');

-- 1. Batch equals stream.
SELECT set_eq(
	$$ SELECT key, session_start, last_event_at, events FROM sessionize.prop_sessions $$,
	$$ SELECT user_id, (s).started_at, (s).ended_at, (s).events
	   FROM (SELECT user_id, unnest(sessionize.sessions(ts, '20 minutes')) AS s FROM distinct_events GROUP BY user_id) x $$,
	'the pipeline''s sessions equal sessions() over the distinct events');

-- 2. Each session expires one gap after its last event.
SELECT is_empty($$ SELECT key FROM sessionize.prop_sessions WHERE expires_at <> last_event_at + interval '20 minutes' $$,
				'expires_at is last event + gap');

-- 3. Per-type counts add up to the events of each session and match the events.
SELECT set_eq(
	$$ SELECT s.key, s.session_start, c.key AS kind, c.value::bigint
	   FROM sessionize.prop_sessions s, jsonb_each_text(s.type_counts) c $$,
	$$ SELECT s.key, s.session_start, e.kind, count(*)
	   FROM sessionize.prop_sessions s JOIN distinct_events e
		 ON e.user_id = s.key AND e.ts BETWEEN s.session_start AND s.last_event_at
	   GROUP BY 1, 2, 3 $$,
	'per-type counts equal the kinds of the session''s events');

-- 4-5. Every delivery is accounted for once: merged + duplicate + late + dead.
SELECT results_eq(
	$$ SELECT consumed, merged, duplicates, late, dead_lettered FROM sessionize.pipeline_state WHERE pipeline = 'prop' $$,
	$$ SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM distinct_events),
			  (SELECT count(*) FROM deliveries) - (SELECT count(*) FROM distinct_events), 0::bigint, 0::bigint $$,
	'consumed = merged + duplicates, with the true numbers');
SELECT is((SELECT count(*) FROM stream_in), 0::bigint, 'the staging table is drained');

-- 6. The change log ends at each session's current revision.
SELECT is_empty(
	$$ SELECT s.key FROM sessionize.prop_sessions s
	   WHERE s.revision <> (SELECT max(c.revision) FROM sessionize.prop_changes c
							WHERE c.key = s.key AND c.session_start = s.session_start) $$,
	'the last change of each session carries its revision');

-- 7. Replaying every delivery changes nothing: all duplicates.
INSERT INTO stream_in (user_id, ts, kind) SELECT user_id, ts, kind FROM deliveries;
SELECT is((SELECT duplicates FROM sessionize.run_pipeline('prop', 100000)), (SELECT count(*) FROM deliveries),
		  'a full replay is all duplicates');

-- 8-9. Poison events go to the dead-letter table; the rest of the batch lands.
INSERT INTO stream_in (user_id, ts, kind) VALUES (NULL, '2024-02-01 10:00', 'play'), (7, NULL, 'play'),
	(7, 'infinity', 'play'), (7, '2030-01-01 00:00', 'play');
SELECT results_eq($$ SELECT merged, dead_lettered FROM sessionize.run_pipeline('prop') $$,
				  $$ VALUES (1::bigint, 3::bigint) $$, 'three poison events dead-lettered, one merged');
SELECT bag_eq($$ SELECT error FROM sessionize.dead_letter WHERE pipeline = 'prop' $$,
			  $$ VALUES ('key is null'), ('event time is null'), ('event time is not finite') $$,
			  'each dead letter says why');

-- 10-11. An event that breaks the merge itself (its session would end past
-- the greatest timestamp) is dead-lettered alone; its batch still lands.
INSERT INTO stream_in (user_id, ts, kind) VALUES (8, '294276-12-31 23:50:00+00', 'play'), (8, '2030-01-02 00:00', 'play');
SELECT results_eq($$ SELECT merged, dead_lettered FROM sessionize.run_pipeline('prop') $$,
				  $$ VALUES (1::bigint, 1::bigint) $$, 'an event the merge rejects is dead-lettered alone');
SELECT is((SELECT error FROM sessionize.dead_letter WHERE pipeline = 'prop' AND event ->> 'user_id' = '8'),
		  'timestamp out of range', 'with the merge''s error');

-- 12-14. A failure that is not the events' fault (here a trigger that
-- refuses every write) fails the whole batch: nothing is dead-lettered,
-- nothing consumed, and the events wait for the retry.
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'sessions are read-only today';
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON sessionize.prop_stored_sessions FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();
INSERT INTO stream_in (user_id, ts, kind) VALUES (9, '2030-01-03 00:00', 'play');
SELECT throws_ok($$ SELECT sessionize.run_pipeline('prop') $$, 'P0001', 'sessions are read-only today',
				 'a batch that fails for another reason fails as a whole');
SELECT is((SELECT count(*) FROM stream_in WHERE user_id = 9), 1::bigint, 'its events stay in the staging table');
SELECT is((SELECT count(*) FROM sessionize.dead_letter WHERE event ->> 'user_id' = '9'), 0::bigint,
		  'and none of them is dead-lettered');
DROP TRIGGER refuse ON sessionize.prop_stored_sessions;

-- 15-18. With allowed_lateness: late events are set aside, sessions become final.
CREATE TABLE bounded_in (user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('bounded', 'bounded_in', 'user_id', 'ts', '10 minutes', allowed_lateness => '30 minutes');
INSERT INTO bounded_in VALUES (1, '2024-03-01 10:00'), (1, '2024-03-01 10:05'), (2, '2024-03-01 12:00'),
							  (7, '2024-03-01 11:15');
SELECT sessionize.run_pipeline('bounded');
INSERT INTO bounded_in VALUES (1, '2024-03-01 10:08'), (3, '2024-03-01 11:45');
SELECT results_eq($$ SELECT merged, late FROM sessionize.run_pipeline('bounded') $$,
				  $$ VALUES (1::bigint, 1::bigint) $$,
				  'an event expiring before the watermark is late; one within it merges');
SELECT is((SELECT count(*) FROM sessionize.bounded_late WHERE event ->> 'ts' LIKE '2024-03-01T10:08%'), 1::bigint,
		  'the late event is kept in the late table');
SELECT set_eq($$ SELECT key FROM sessionize.bounded_sessions_final $$, $$ VALUES (1), (7) $$,
			  'sessions expired before the watermark are final');
SELECT set_eq($$ SELECT key, status FROM sessionize.bounded_sessions_live $$, $$ VALUES (2, 'open'), (3, 'idle') $$,
			  'the others are open or idle');
-- 11:22 + 10 minutes is after the watermark 11:30, but 11:22 is within the
-- final session of key 7 (11:15, expired 11:25): it would change it.
INSERT INTO bounded_in VALUES (7, '2024-03-01 11:22');
SELECT results_eq($$ SELECT merged, late FROM sessionize.run_pipeline('bounded') $$,
				  $$ VALUES (0::bigint, 1::bigint) $$,
				  'an event that would change a final session is late');
SELECT results_eq($$ SELECT reason FROM sessionize.bounded_late WHERE event ->> 'user_id' = '7' $$,
				  $$ VALUES ('an event at 2024-03-01T11:22:00+00:00 would change a final session (it expired at 2024-03-01T11:25:00+00:00, before the watermark 2024-03-01T11:30:00+00:00)') $$,
				  'with the reason');
SELECT results_eq($$ SELECT last_event_at, events, status FROM sessionize.bounded_sessions WHERE key = 7 $$,
				  $$ VALUES (timestamptz '2024-03-01 11:15', 1::bigint, 'final') $$,
				  'and the final session is unchanged');

-- Final sessions never change, whatever arrives: events of 100 users arrive
-- up to 90 minutes after their time, against a lateness of 1 hour, in ragged
-- batches; after each batch every session that was final is still there,
-- unchanged.  The sessions equal sessions() over the events not set aside.
CREATE TABLE late_in (id bigserial, user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('lateprop', 'late_in', 'user_id', 'ts', '20 minutes',
								  allowed_lateness => '1 hour', fingerprint_exclude => '{id}');
CREATE TEMP TABLE late_deliveries AS
SELECT row_number() OVER (ORDER BY ts + random() * interval '90 minutes') AS arrival, user_id, ts
FROM (SELECT (random() * 99)::int AS user_id,
			 timestamptz '2024-04-01' + (random() * 86400) * interval '1 second' AS ts
	  FROM generate_series(1, 5000)) e;
CREATE TEMP TABLE final_changed (n bigint);
CREATE FUNCTION pg_temp.feed_late() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	fed bigint := 0;
	total bigint := (SELECT count(*) FROM late_deliveries);
	chunk int;
BEGIN
	WHILE fed < total LOOP
		chunk := 1 + (random() * 200)::int;
		INSERT INTO late_in (user_id, ts)
		SELECT user_id, ts FROM late_deliveries WHERE arrival > fed AND arrival <= fed + chunk ORDER BY arrival;
		fed := fed + chunk;
		CREATE TEMP TABLE final_before AS
		SELECT key, session_start, last_event_at, events FROM sessionize.lateprop_sessions_final;
		PERFORM sessionize.run_pipeline('lateprop', 1 + (random() * 300)::int);
		INSERT INTO final_changed
		SELECT count(*) FROM (SELECT * FROM final_before
							  EXCEPT SELECT key, session_start, last_event_at, events FROM sessionize.lateprop_sessions_final) gone;
		DROP TABLE final_before;
	END LOOP;
	WHILE (SELECT consumed FROM sessionize.run_pipeline('lateprop', 500)) > 0 LOOP
	END LOOP;
END $$;
SELECT pg_temp.feed_late();
SELECT is((SELECT sum(n) FROM final_changed), 0::numeric, 'no final session ever changed or went away');
SELECT cmp_ok((SELECT count(*) FROM sessionize.lateprop_late WHERE reason LIKE '%would change a final session%'), '>', 0::bigint,
			  'events reaching back into final sessions occurred, and were set aside');
SELECT set_eq(
	$$ SELECT key, session_start, last_event_at, events FROM sessionize.lateprop_sessions $$,
	$$ SELECT user_id, (s).started_at, (s).ended_at, (s).events
	   FROM (SELECT user_id, unnest(sessionize.sessions(ts, '20 minutes')) AS s
			 FROM (SELECT DISTINCT user_id, ts FROM late_deliveries
				   EXCEPT ALL
				   SELECT (event ->> 'user_id')::int, (event ->> 'ts')::timestamptz FROM sessionize.lateprop_late) merged
			 GROUP BY user_id) x $$,
	'the sessions equal sessions() over the events that were not late');
SELECT results_eq($$ SELECT consumed, merged + duplicates + late, dead_lettered FROM sessionize.pipeline_state WHERE pipeline = 'lateprop' $$,
				  $$ SELECT count(*), count(*), 0::bigint FROM late_deliveries $$,
				  'every delivery is merged, a duplicate or late');

-- 26. Garbled logical-replication messages are errors, never a crash: random
-- bytes after each message type, and plausible headers with random tuples.
CREATE TEMP TABLE fuzz_row (a int, b text, c timestamptz);
SELECT lives_ok($fuzz$
	DO $$
	DECLARE
		message bytea;
		kind text;
		relation bytea;
		-- the relation message pgoutput would send for fuzz_row
		valid_relation bytea := convert_to('R', 'UTF8') || '\x00000001'::bytea || convert_to('pg_temp', 'UTF8') || '\x00'::bytea
								|| convert_to('fuzz_row', 'UTF8') || '\x00'::bytea || convert_to('d', 'UTF8')
								|| (SELECT int2send(count(*)::int2) || string_agg('\x00'::bytea || convert_to(attname, 'UTF8') || '\x00'::bytea
																		  || int4send(atttypid::int) || int4send(atttypmod), ''::bytea ORDER BY attnum)
									FROM pg_attribute WHERE attrelid = 'pg_temp.fuzz_row'::regclass AND attnum > 0);
	BEGIN
		PERFORM setseed(0.5);
		FOR i IN 1..5000 LOOP
			kind := (ARRAY['I', 'U', 'D', 'B', 'C', 'R', 'T', 'O'])[1 + (random() * 7)::int];
			IF random() < 0.5 THEN
				message := substr(convert_to(kind, 'UTF8') || decode(md5(random()::text) || md5(random()::text), 'hex'),
								  1, 1 + (random() * 40)::int);
			ELSE
				message := convert_to(kind, 'UTF8') || '\x00000001'::bytea
						   || convert_to((ARRAY['N', 'K', 'O'])[1 + (random() * 2)::int], 'UTF8')
						   || int2send((random() * 5)::int::int2)
						   || substr(decode(md5(random()::text) || md5(random()::text), 'hex'), 1, (random() * 30)::int);
			END IF;
			relation := CASE WHEN random() < 0.7 THEN valid_relation
							 ELSE substr(valid_relation, 1, (random() * length(valid_relation))::int)
								  || decode(md5(random()::text), 'hex') END;
			BEGIN
				PERFORM sessionize.sessionize_pgoutput_message(message);
				PERFORM sessionize.sessionize_pgoutput_problem(message, NULL::pg_temp.fuzz_row, relation);
				PERFORM sessionize.sessionize_pgoutput_row(message, NULL::pg_temp.fuzz_row, relation);
			EXCEPTION WHEN data_exception OR protocol_violation OR datatype_mismatch OR invalid_text_representation THEN
				NULL;
			END;
		END LOOP;
	END $$
$fuzz$, 'garbled pgoutput messages give clean errors, never a crash');

-- 27. Dropping a pipeline drops its tables and forgets its fingerprints.
SELECT sessionize.drop_pipeline('prop');
SELECT is((SELECT count(*) FROM pg_class WHERE relname LIKE 'prop\_%' AND relnamespace = 'sessionize'::regnamespace)
		  + (SELECT count(*) FROM sessionize.seen_fingerprints WHERE namespace = 'pipeline:prop'),
		  0::bigint, 'drop_pipeline leaves nothing behind');

SELECT * FROM finish();
ROLLBACK;
