-- Results that must not depend on who runs a batch, when, or what else the
-- database holds.

-- Fingerprints tell JSON types apart and cannot be forged by separators;
-- objects of strings keep Snowplow's fingerprint.
SELECT sessionize.fingerprint('{"a": 1}') <> sessionize.fingerprint('{"a": "1"}') AS number_is_not_string,
	   sessionize.fingerprint('{"a": null}') <> sessionize.fingerprint('{"a": "null"}') AS null_is_not_string,
	   sessionize.fingerprint('{"a": true}') <> sessionize.fingerprint('{"a": "true"}') AS boolean_is_not_string,
	   sessionize.fingerprint('{"a": {"b": "c"}}') <> sessionize.fingerprint('{"a": "{\"b\": \"c\"}"}') AS object_is_not_string,
	   sessionize.fingerprint('{"a": [1]}') <> sessionize.fingerprint('{"a": "[1]"}') AS array_is_not_string,
	   sessionize.fingerprint('{"a": "x\u001fb\u001fy"}') <> sessionize.fingerprint('{"a": "x", "b": "y"}') AS no_forged_separator,
	   sessionize.fingerprint('{"a\u001fx": "y"}') <> sessionize.fingerprint('{"a": "x\u001fy"}') AS no_forged_key,
	   sessionize.fingerprint('{"b": "2", "a": "1"}')
		 = md5('a' || chr(31) || '1' || chr(31) || 'b' || chr(31) || '2' || chr(31)) AS snowplow_for_strings;

-- The row form renders times in UTC, whatever the session's settings.
CREATE TABLE visits (user_id int, ts timestamptz, stay interval, score float8);
INSERT INTO visits VALUES (1, '2024-03-10 12:00+00', '1 day 02:00', 0.1);
SET TimeZone = 'UTC';
SELECT sessionize.fingerprint(v) AS in_utc FROM visits v \gset
SET TimeZone = 'America/New_York';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'sql_standard';
SET extra_float_digits = -3;
SELECT sessionize.fingerprint(v) = :'in_utc' AS same_in_new_york FROM visits v;
RESET TimeZone; RESET DateStyle; RESET IntervalStyle; RESET extra_float_digits;

-- The dedup memory of a whole batch: an empty batch has an empty answer.
SELECT sessionize.first_seen_many('empty', '{}');
SELECT sessionize.first_seen_many(NULL, ARRAY[NULL::uuid]);

-- A re-delivered row is a duplicate whatever the time zone of the session
-- that runs each batch.
CREATE TABLE deliveries (user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('deliveries', 'deliveries', 'user_id', 'ts', '30 minutes');
SET TimeZone = 'UTC';
INSERT INTO deliveries VALUES (1, '2024-01-01 12:00+00');
SELECT consumed, merged, duplicates FROM sessionize.run_pipeline('deliveries');
SET TimeZone = 'Europe/Paris';
INSERT INTO deliveries VALUES (1, '2024-01-01 12:00+00');
SELECT consumed, merged, duplicates FROM sessionize.run_pipeline('deliveries');
RESET TimeZone;
SELECT sessionize.drop_pipeline('deliveries');

-- A payload time without an offset is read in the pipeline's time zone, and
-- a timestamp (without time zone) column likewise.
CREATE TABLE docs (doc jsonb);
SELECT sessionize.create_pipeline('docs', 'docs', 'user', 'at', '30 minutes', payload_column => 'doc',
								  time_zone => 'Europe/Paris');
SET TimeZone = 'America/New_York';
INSERT INTO docs VALUES ('{"user": "u1", "at": "2024-01-01 12:00"}');
SELECT count(*) FROM sessionize.run_pipeline('docs');
SET TimeZone = 'UTC';
SELECT key, session_start FROM sessionize.docs_sessions;
SELECT sessionize.drop_pipeline('docs');
CREATE TABLE local_clicks (user_id int, ts timestamp);
SELECT sessionize.create_pipeline('local_clicks', 'local_clicks', 'user_id', 'ts', '30 minutes',
								  time_zone => 'Asia/Tokyo');
INSERT INTO local_clicks VALUES (1, '2024-01-01 09:00');
SELECT count(*) FROM sessionize.run_pipeline('local_clicks');
SELECT key, session_start FROM sessionize.local_clicks_sessions;
SELECT sessionize.drop_pipeline('local_clicks');
SELECT sessionize.create_pipeline('bad_zone', 'local_clicks', 'user_id', 'ts', '30 minutes', time_zone => 'Mars/Olympus');
SELECT sessionize.create_pipeline('bad_zone', 'local_clicks', 'user_id', 'ts', '30 minutes', time_zone => NULL);
RESET TimeZone;

-- A backlog is claimed oldest event time first, through an index that
-- create_pipeline() makes: after a VACUUM reuses space, rows of 15:00 stored
-- before rows of 13:00 do not make the 13:00 ones late.
CREATE TABLE backlog (user_id int, ts timestamptz) WITH (autovacuum_enabled = off);
INSERT INTO backlog SELECT g, '2024-01-01 09:00+00' FROM generate_series(1, 100) g;
DELETE FROM backlog;
VACUUM backlog;
INSERT INTO backlog SELECT g, '2024-01-01 15:00+00' FROM generate_series(1, 50) g;
INSERT INTO backlog SELECT g, '2024-01-01 13:00+00' FROM generate_series(1, 50) g;
SELECT sessionize.create_pipeline('backlog', 'backlog', 'user_id', 'ts', '10 minutes', allowed_lateness => '1 hour');
SELECT count(*) AS indexes_on_ts FROM pg_indexes WHERE tablename = 'backlog';
SELECT consumed, late FROM sessionize.run_pipeline('backlog', 50);
SELECT consumed, late FROM sessionize.run_pipeline('backlog', 50);

-- alter_pipeline() that moves the watermark closes the sessions it makes
-- final, once each.
SELECT sessionize.alter_pipeline('backlog', allowed_lateness => '1 minute');
SELECT count(*) AS final, (SELECT count(*) FROM sessionize.backlog_changes WHERE change = 'closed') AS closed
FROM sessionize.backlog_sessions WHERE status = 'final';
SELECT sessionize.alter_pipeline('backlog', allowed_lateness => '30 seconds');
SELECT count(*) AS closed_again FROM sessionize.backlog_changes WHERE change = 'closed';
SELECT sessionize.drop_pipeline('backlog');

-- A huge max_events is a bound, not an overflow.
CREATE TABLE quiet (user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('quiet', 'quiet', 'user_id', 'ts', '10 minutes', source_kind => 'table');
SELECT consumed FROM sessionize.run_pipeline('quiet', 1000000000);
SELECT sessionize.drop_pipeline('quiet');

-- Keys compare with the column's collation; a composite key with NULL
-- fields is a key, not a NULL.
CREATE COLLATION case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE names_in (name text COLLATE case_insensitive, ts timestamptz);
SELECT sessionize.create_pipeline('names', 'names_in', 'name', 'ts', '30 minutes');
INSERT INTO names_in VALUES ('Alice', '2024-01-01 10:00+00'), ('alice', '2024-01-01 10:10+00');
SELECT merged FROM sessionize.run_pipeline('names');
SELECT count(*) AS sessions, max(events) AS events FROM sessionize.names_sessions;
SELECT sessionize.drop_pipeline('names');
CREATE TYPE pair AS (a int, b int);
CREATE TABLE pairs_in (k pair, ts timestamptz);
SELECT sessionize.create_pipeline('pairs', 'pairs_in', 'k', 'ts', '30 minutes');
INSERT INTO pairs_in VALUES (ROW(NULL, NULL), '2024-01-01 10:00+00'), (NULL, '2024-01-01 10:00+00');
SELECT merged, dead_lettered FROM sessionize.run_pipeline('pairs');
SELECT error FROM sessionize.dead_letter WHERE pipeline = 'pairs';
SELECT sessionize.drop_pipeline('pairs');

-- A pipeline whose source was dropped leaves pipeline_status readable.
CREATE TABLE gone (user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('gone', 'gone', 'user_id', 'ts', '10 minutes');
DROP TABLE gone;
SELECT name, backlog FROM sessionize.pipeline_status WHERE name = 'gone';
SELECT * FROM sessionize.run_pipeline('gone');
SELECT sessionize.drop_pipeline('gone');

-- A logical source's changes are read by column name: a column dropped and
-- added again is not confused with the one after it, and a change whose
-- columns the table no longer has is dead-lettered with the reason.
-- (Decoding through SQL sees flushed WAL only: commits here wait for it.)
SET synchronous_commit = on;
CREATE TABLE plays (user_id int, ts timestamptz, kind text, note text);
SELECT sessionize.create_pipeline('plays', 'plays', 'user_id', 'ts', '30 minutes', type_column => 'kind',
								  source_kind => 'logical');
INSERT INTO plays VALUES (1, '2024-01-01 10:00+00', 'play', 'first');
ALTER TABLE plays DROP COLUMN kind;
ALTER TABLE plays ADD COLUMN kind text;
INSERT INTO plays (user_id, ts, note, kind) VALUES (1, '2024-01-01 10:05+00', 'second', 'skip');
SELECT consumed, merged, dead_lettered FROM sessionize.run_pipeline('plays');
SELECT type_counts FROM sessionize.plays_sessions;
INSERT INTO plays (user_id, ts, note, kind) VALUES (1, '2024-01-01 10:10+00', 'third', 'play');
ALTER TABLE plays ALTER COLUMN note TYPE varchar(20);
INSERT INTO plays (user_id, ts, note, kind) VALUES (1, '2024-01-01 10:15+00', 'fourth', 'play');
SELECT consumed, merged, dead_lettered FROM sessionize.run_pipeline('plays');
SELECT error, event ? 'undecodable_change' AS kept_whole FROM sessionize.dead_letter WHERE pipeline = 'plays';
SELECT type_counts FROM sessionize.plays_sessions;
SELECT sessionize.drop_pipeline('plays');
RESET synchronous_commit;

-- A session's event count never wraps: past int64 the event is a dead letter.
CREATE TABLE counted (user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('counted', 'counted', 'user_id', 'ts', '30 minutes');
INSERT INTO counted VALUES (1, '2024-01-01 10:00+00');
SELECT merged FROM sessionize.run_pipeline('counted');
UPDATE sessionize.counted_stored_sessions SET events = 9223372036854775807;
INSERT INTO counted VALUES (1, '2024-01-01 10:05+00'), (2, '2024-01-01 10:05+00');
SELECT merged, dead_lettered FROM sessionize.run_pipeline('counted');
SELECT error FROM sessionize.dead_letter WHERE pipeline = 'counted';
SELECT sessionize.drop_pipeline('counted');

-- The window function's error shows times of the type it was given.
SELECT sessionize.session_id(ts, '1 hour') OVER (ORDER BY k)
FROM (VALUES (1, timestamp '2024-01-01 10:00'), (2, timestamp '2024-01-01 09:00')) v(k, ts);

-- A key column that changed type stops the pipeline with a clear error,
-- rather than cutting keys to the old type.
CREATE TABLE shortkeys (user_id varchar(3), ts timestamptz);
SELECT sessionize.create_pipeline('shortkeys', 'shortkeys', 'user_id', 'ts', '30 minutes');
ALTER TABLE shortkeys ALTER COLUMN user_id TYPE varchar(10);
INSERT INTO shortkeys VALUES ('abcdef', '2024-01-01 10:00+00'), ('abcXYZ', '2024-01-01 10:00+00');
SELECT * FROM sessionize.run_pipeline('shortkeys');
SELECT sessionize.drop_pipeline('shortkeys');
