-- Pipelines run by hand: a documentation-grade walk-through and every error
-- path of the set-up functions.
SET timezone = 'UTC';

CREATE TABLE plays_in (id bigserial, listener int, played_at timestamptz, action text);
SELECT sessionize.create_pipeline('plays', 'plays_in', 'listener', 'played_at', '30 minutes',
								  fingerprint_exclude => '{id}', type_column => 'action');
INSERT INTO plays_in (listener, played_at, action) VALUES
	(1, '2024-06-01 20:00', 'play'), (1, '2024-06-01 20:04', 'skip'), (1, '2024-06-01 20:04', 'skip'),
	(1, '2024-06-01 21:00', 'play'), (2, '2024-06-01 20:30', 'play');
SELECT * FROM sessionize.run_pipeline('plays');
SELECT key, session_start, last_event_at, expires_at, events, type_counts, revision
FROM sessionize.plays_sessions ORDER BY key, session_start;

-- A late event at 20:32 bridges listener 1's two sessions into one.
INSERT INTO plays_in (listener, played_at, action) VALUES (1, '2024-06-01 20:32', 'play');
SELECT * FROM sessionize.run_pipeline('plays');
SELECT key, session_start, last_event_at, events, type_counts, revision
FROM sessionize.plays_sessions ORDER BY key, session_start;
SELECT key, session_start, change, revision, events FROM sessionize.plays_changes ORDER BY change_id;

SELECT name, state, consumed, merged, duplicates, late, dead_lettered, batches, backlog, max_event_time, watermark
FROM sessionize.pipeline_status;

-- Paused pipelines keep their data; run_pipeline still works by hand.
SELECT sessionize.pause_pipeline('plays');
SELECT state FROM sessionize.pipelines WHERE name = 'plays';
SELECT sessionize.resume_pipeline('plays');
SELECT sessionize.alter_pipeline('plays', allowed_lateness => '1 hour');
SELECT allowed_lateness, dedup_window FROM sessionize.pipelines WHERE name = 'plays';
SELECT sessionize.alter_pipeline('plays', reset_allowed_lateness => true, reset_dedup_window => true);
SELECT allowed_lateness, dedup_window FROM sessionize.pipelines WHERE name = 'plays';

-- Bad input: each is a clear error.
SELECT sessionize.create_pipeline('Plays', 'plays_in', 'listener', 'played_at', '30 minutes');
SELECT sessionize.create_pipeline('plays; drop', 'plays_in', 'listener', 'played_at', '30 minutes');
SELECT sessionize.create_pipeline('plays', 'plays_in', 'listener', 'played_at', '30 minutes');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'nobody', 'played_at', '30 minutes');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'nothing', '30 minutes');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'action', '30 minutes');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', type_column => 'nothing');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', NULL);
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '0 minutes');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '1 month');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', allowed_lateness => '-1 hour');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', dedup_window => '0 seconds');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', max_duration => '2 hours');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', run_as => 'no_such_role');
CREATE VIEW plays_view AS SELECT * FROM plays_in;
SELECT sessionize.create_pipeline('p2', 'plays_view', 'listener', 'played_at', '30 minutes');
SELECT sessionize.create_pipeline('p2', NULL, 'listener', 'played_at', '30 minutes');
SELECT sessionize.run_pipeline('nothing');
SELECT sessionize.run_pipeline('plays', 0);
SELECT sessionize.pause_pipeline('nothing');
SELECT sessionize.resume_pipeline('nothing');
SELECT sessionize.alter_pipeline('nothing');
SELECT sessionize.alter_pipeline('plays', dedup_window => '1 year');
SELECT sessionize.drop_pipeline('nothing');

-- Administration is not for everybody.
SELECT has_function_privilege('public', 'sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name)', 'EXECUTE') AS public_may_create,
	   has_function_privilege('public', 'sessionize.drop_pipeline(text)', 'EXECUTE') AS public_may_drop;

SELECT sessionize.drop_pipeline('plays');
SELECT count(*) AS pipeline_tables_left FROM pg_class WHERE relname LIKE 'plays\_%' AND relnamespace = 'sessionize'::regnamespace;
