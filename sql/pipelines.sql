-- Pipelines run by hand: a documentation-grade walk-through and every error
-- path of the set-up functions.
SET timezone = 'UTC';
\set SHOW_CONTEXT never

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
-- the backlog of one pipeline; NULL for NULL, an error for an unknown one
SELECT * FROM sessionize.pipeline_waiting('plays');
SELECT sessionize.pipeline_backlog(NULL), sessionize.pipeline_waiting(NULL);
SELECT sessionize.pipeline_waiting('no_such_pipeline');

-- Paused pipelines keep their data; run_pipeline still works by hand.
SELECT sessionize.pause_pipeline('plays');
SELECT state FROM sessionize.pipelines WHERE name = 'plays';
SELECT sessionize.resume_pipeline('plays');
SELECT sessionize.alter_pipeline('plays', allowed_lateness => '1 hour');
SELECT allowed_lateness, dedup_window FROM sessionize.pipelines WHERE name = 'plays';
SELECT sessionize.alter_pipeline('plays', reset_allowed_lateness => true, reset_dedup_window => true);
SELECT allowed_lateness, dedup_window FROM sessionize.pipelines WHERE name = 'plays';

-- Bounded lateness: the watermark is the greatest event time minus 30
-- minutes.  An event whose session would expire before it goes to the late
-- table; sessions the watermark passed are final, and the change log says
-- they closed.  Raising the lateness and replaying merges the late event.
CREATE TABLE radio_in (id bigserial, listener int, played_at timestamptz);
SELECT sessionize.create_pipeline('radio', 'radio_in', 'listener', 'played_at', '10 minutes',
								  allowed_lateness => '30 minutes', fingerprint_exclude => '{id}');
INSERT INTO radio_in (listener, played_at) VALUES
	(1, '2024-06-01 10:00'), (1, '2024-06-01 10:05'), (2, '2024-06-01 12:00');
SELECT * FROM sessionize.run_pipeline('radio');
INSERT INTO radio_in (listener, played_at) VALUES
	(1, '2024-06-01 10:07'), (1, '2024-06-01 10:07'), (1, '2024-06-01 13:00');
SELECT * FROM sessionize.run_pipeline('radio');
SELECT event - 'id' AS event, reason FROM sessionize.radio_late;
SELECT key, session_start, change, revision, events FROM sessionize.radio_changes ORDER BY change_id;
SELECT key, session_start, events, status FROM sessionize.radio_sessions_live ORDER BY key, session_start;
SELECT key, session_start, events, status FROM sessionize.radio_sessions_final ORDER BY key, session_start;
-- all sessions, each with its status
SELECT key, session_start, events, status FROM sessionize.radio_sessions ORDER BY key, session_start;
SELECT consumed, merged, duplicates, late, dead_lettered, watermark FROM sessionize.pipeline_status WHERE name = 'radio';
SELECT sessionize.alter_pipeline('radio', allowed_lateness => '10 hours');
SELECT sessionize.replay_late('radio');
SELECT key, session_start, last_event_at, events, revision, status FROM sessionize.radio_sessions ORDER BY key, session_start;
SELECT count(*) AS late_left FROM sessionize.radio_late;
SELECT consumed, merged, duplicates, late, dead_lettered, watermark FROM sessionize.pipeline_status WHERE name = 'radio';
SELECT sessionize.drop_pipeline('radio');

-- Events that land as JSON documents: key, time and type are fields of a
-- jsonb column, checked event by event.  The fingerprint is the document's,
-- so a re-delivery with another id and receipt time is a duplicate.
CREATE TABLE landing (id bigserial, received_at timestamptz DEFAULT now(), doc jsonb);
SELECT sessionize.create_pipeline('docs', 'landing', 'user', 'at', '30 minutes',
								  type_column => 'kind', payload_column => 'doc');
INSERT INTO landing (doc) VALUES
	('{"user": "ann", "at": "2024-06-01 10:00+00", "kind": "view"}'),
	('{"user": "ann", "at": "2024-06-01 10:10+00", "kind": "buy"}'),
	('{"kind": "buy", "at": "2024-06-01 10:10+00", "user": "ann"}'),
	('{"user": 42, "at": "2024-06-01T11:00:00Z"}'),
	('{"user": "bob", "at": "yesterday-ish"}'),
	('{"user": "bob", "at": 1717236000}'),
	('{"user": {"id": 1}, "at": "2024-06-01 10:00+00"}'),
	('{"at": "2024-06-01 10:00+00"}'),
	('{"user": "bob", "at": "infinity"}'),
	('["not", "an", "object"]'),
	(NULL);
SELECT * FROM sessionize.run_pipeline('docs');
SELECT key, session_start, last_event_at, events, type_counts FROM sessionize.docs_sessions ORDER BY key, session_start;
SELECT event ->> 'doc' AS doc, error FROM sessionize.dead_letter WHERE pipeline = 'docs' ORDER BY id;
SELECT sessionize.drop_pipeline('docs');
-- Field names are data, whatever they hold.
SELECT sessionize.create_pipeline('odd', 'landing', 'us%er', 'at', '30 minutes', payload_column => 'doc');
INSERT INTO landing (doc) VALUES ('{"us%er": [1], "at": "2024-06-01 10:00+00"}');
SELECT consumed, dead_lettered FROM sessionize.run_pipeline('odd');
SELECT error FROM sessionize.dead_letter WHERE pipeline = 'odd';
SELECT sessionize.drop_pipeline('odd');

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
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', source_kind => 'kafka');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', updates_as_events => true);
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', payload_column => 'nothing');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', payload_column => 'action');
SELECT sessionize.create_pipeline('plays_stored', 'plays_in', 'listener', 'played_at', '30 minutes');
-- Who may create a pipeline, and whose rights it runs with: the owner of
-- the source by default, or run_as; the creator must be a member of it.
CREATE ROLE regress_sessionize_admin;
CREATE ROLE regress_sessionize_other;
GRANT EXECUTE ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name, boolean, text, text) TO regress_sessionize_admin;
SET ROLE regress_sessionize_admin;
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', run_as => 'regress_sessionize_other');
RESET ROLE;
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', run_as => 'regress_sessionize_other');
ALTER TABLE plays_in OWNER TO regress_sessionize_other;
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', run_as => current_user);
ALTER TABLE plays_in OWNER TO CURRENT_USER;
REVOKE ALL ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name, boolean, text, text) FROM regress_sessionize_admin;
DROP ROLE regress_sessionize_admin, regress_sessionize_other;
BEGIN;
INSERT INTO plays_in (listener, played_at) VALUES (1, '2024-06-02 10:00');
SELECT sessionize.create_pipeline('p2', 'plays_in', 'listener', 'played_at', '30 minutes', source_kind => 'logical');
ROLLBACK;
SELECT sessionize.sessionize_pgoutput_row(NULL, NULL::plays_in, NULL) IS NULL AS no_message_no_row;
SELECT sessionize.run_pipeline('nothing');
SELECT sessionize.run_pipeline('plays', 0);
SELECT sessionize.pause_pipeline('nothing');
SELECT sessionize.resume_pipeline('nothing');
SELECT sessionize.alter_pipeline('nothing');
SELECT sessionize.alter_pipeline('plays', dedup_window => '1 year');
SELECT sessionize.drop_pipeline('nothing');
SELECT sessionize.replay_late('nothing');
SELECT sessionize.replay_late('plays', 0);

-- Creating pipelines is for the roles an administrator grants it to; the
-- other pipeline functions are everybody's, and check the caller's rights.
SELECT has_function_privilege('public', 'sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name, boolean, text, text)', 'EXECUTE') AS public_may_create,
	   has_function_privilege('public', 'sessionize.drop_pipeline(text)', 'EXECUTE') AS public_may_drop,
	   has_function_privilege('public', 'sessionize.replay_late(text, integer)', 'EXECUTE') AS public_may_replay;
CREATE ROLE regress_sessionize_stranger;
SET ROLE regress_sessionize_stranger;
SELECT sessionize.drop_pipeline('plays');
SELECT * FROM sessionize.run_pipeline('plays');
SELECT sessionize.replay_late('plays');
SELECT count(*) AS pipelines_seen FROM sessionize.pipeline_status;
SELECT count(*) FROM sessionize.plays_sessions;
RESET ROLE;
DROP ROLE regress_sessionize_stranger;

SELECT sessionize.drop_pipeline('plays');
SELECT count(*) AS pipeline_tables_left FROM pg_class WHERE relname LIKE 'plays\_%' AND relnamespace = 'sessionize'::regnamespace;
