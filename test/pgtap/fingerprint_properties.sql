-- Properties of fingerprints and the dedup memory on generated events, each
-- checked against an independent computation in plain SQL.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS sessionize;
RESET client_min_messages;
BEGIN;
SELECT plan(13);
SELECT setseed(0.7);

-- A key or a string as fingerprints hash it, computed independently: its
-- bytes, each U+001F preceded by a NUL.
CREATE FUNCTION pg_temp.hashed_string(value text) RETURNS bytea LANGUAGE sql IMMUTABLE
RETURN coalesce((SELECT string_agg(CASE WHEN c = chr(31) THEN '\x001f'::bytea ELSE convert_to(c, 'UTF8') END, ''::bytea ORDER BY i)
				 FROM regexp_split_to_table(value, '') WITH ORDINALITY AS t(c, i)), ''::bytea);
-- A value: a string as above, anything else a NUL, a letter for its type
-- and its jsonb text.
CREATE FUNCTION pg_temp.hashed_value(value jsonb) RETURNS bytea LANGUAGE sql IMMUTABLE
RETURN CASE jsonb_typeof(value)
		   WHEN 'string' THEN pg_temp.hashed_string(value #>> '{}')
		   WHEN 'null' THEN '\x007a'::bytea
		   ELSE '\x00'::bytea || convert_to(CASE jsonb_typeof(value) WHEN 'number' THEN 'n' WHEN 'boolean' THEN 'b'
														   WHEN 'object' THEN 'o' ELSE 'a' END || value::text, 'UTF8') END;

-- 2,000 flat events of 3 to 12 string fields with random keys (mixed case,
-- digits, prefixes of each other) and values (empty, unicode, separators).
CREATE TEMP TABLE flat_events AS
SELECT n, jsonb_object_agg(key, value) AS event
FROM (SELECT n, k,
			 (ARRAY['e', 'E', 'aid', 'a', 'aa', 'tv', 'p', 'uid', 'url', 'ts', 'dtm', 'Z1', 'z', '_x'])[1 + (random() * 13)::int] || (k % 3)::text AS key,
			 (ARRAY['', 'pv', 'ünïcødé', 'a' || chr(31) || 'b', 'https://shop.example/p?id=' || n, '42'])[1 + (random() * 5)::int] AS value
	  FROM generate_series(1, 2000) n, generate_series(1, 3 + (random() * 9)::int) k) fields
GROUP BY n;

-- 1. Snowplow's definition, computed independently.
SELECT is_empty(
	$$ SELECT n FROM flat_events
	   WHERE sessionize.fingerprint(event) <>
			 (SELECT md5(string_agg(pg_temp.hashed_string(key) || '\x1f'::bytea || pg_temp.hashed_string(value) || '\x1f'::bytea,
									''::bytea ORDER BY key COLLATE "C"))
			  FROM jsonb_each_text(event)) $$,
	'fingerprint equals MD5 over bytewise-sorted key, U+001F, value, U+001F');
SELECT is_empty(
	$$ SELECT n FROM flat_events
	   WHERE strpos(event::text, '\u001f') = 0
		 AND sessionize.fingerprint(event) <>
			 (SELECT md5(string_agg(key || chr(31) || value || chr(31), '' ORDER BY key COLLATE "C"))
			  FROM jsonb_each_text(event)) $$,
	'without U+001F in keys and values it is exactly Snowplow''s fingerprint');

-- 2. The same with exclusions.
SELECT is_empty(
	$$ SELECT n FROM flat_events
	   WHERE sessionize.fingerprint(event, '{e0,aid1,url2}') <>
			 (SELECT coalesce(md5(string_agg(pg_temp.hashed_string(key) || '\x1f'::bytea || pg_temp.hashed_string(value) || '\x1f'::bytea,
											 ''::bytea ORDER BY key COLLATE "C")), md5(''))
			  FROM jsonb_each_text(event) WHERE key NOT IN ('e0', 'aid1', 'url2')) $$,
	'excluded keys are skipped');

-- 3. SHA-256, computed independently.
SELECT is_empty(
	$$ SELECT n FROM flat_events
	   WHERE sessionize.fingerprint(event, '{}', 'sha256') <>
			 (SELECT encode(sha256(string_agg(pg_temp.hashed_string(key) || '\x1f'::bytea || pg_temp.hashed_string(value) || '\x1f'::bytea,
											  ''::bytea ORDER BY key COLLATE "C")), 'hex')
			  FROM jsonb_each_text(event)) $$,
	'sha256 fingerprint equals SHA-256 over the same string');

-- 4. Key order of the input text never changes the fingerprint.
SELECT is_empty(
	$$ SELECT n FROM flat_events
	   WHERE sessionize.fingerprint(event) <>
			 sessionize.fingerprint((SELECT '{' || string_agg(to_json(key)::text || ':' || to_json(value)::text, ',' ORDER BY random()) || '}'
									 FROM jsonb_each_text(event))) $$,
	'shuffling the keys of the input text changes nothing');

-- 5. Typed and nested values: non-strings hash a NUL, their type and their
-- jsonb text form.
CREATE TEMP TABLE typed_events AS
SELECT n, jsonb_build_object('id', n::text, 'amount', (random() * 1000)::numeric(10, 2), 'ok', random() < 0.5,
							 'gone', NULL::text, 'items', jsonb_build_array(n, 'x', jsonb_build_object('b', 1, 'a', n)),
							 'ctx', jsonb_build_object('z', 'last', 'a', 'first')) AS event
FROM generate_series(1, 500) n;
SELECT is_empty(
	$$ SELECT n FROM typed_events
	   WHERE sessionize.fingerprint(event) <>
			 (SELECT md5(string_agg(pg_temp.hashed_string(key) || '\x1f'::bytea || pg_temp.hashed_value(value) || '\x1f'::bytea,
									''::bytea ORDER BY key COLLATE "C"))
			  FROM jsonb_each(event)) $$,
	'typed and nested values hash a NUL, their type and their jsonb text form');

-- 6. fingerprint_bytes is the MD5 fingerprint as a uuid.
SELECT is_empty(
	$$ SELECT n FROM typed_events WHERE sessionize.fingerprint_bytes(event) <> sessionize.fingerprint(event)::uuid $$,
	'fingerprint_bytes carries the same 16 bytes');

-- 7. Distinct events get distinct fingerprints.
SELECT is(
	(SELECT count(DISTINCT sessionize.fingerprint_bytes(event)) FROM flat_events),
	(SELECT count(DISTINCT event) FROM flat_events),
	'distinct events have distinct fingerprints');

-- 8-9. The dedup memory against a reference: with 20% re-deliveries in
-- random order, exactly the first copy of each event is new.
CREATE TEMP TABLE deliveries AS
SELECT row_number() OVER (ORDER BY random()) AS arrival, event
FROM (SELECT event FROM flat_events
	  UNION ALL
	  SELECT event FROM flat_events WHERE random() < 0.2) d;
CREATE TEMP TABLE verdicts AS
SELECT arrival, event, sessionize.first_seen('deliveries', sessionize.fingerprint_bytes(event)) AS first
FROM (SELECT * FROM deliveries ORDER BY arrival) d;
SELECT set_eq(
	$$ SELECT arrival FROM verdicts WHERE first $$,
	$$ SELECT min(arrival) FROM deliveries GROUP BY event $$,
	'first_seen is true exactly for the first copy of each event');
SELECT is(
	(SELECT sessionize.first_seen_many('deliveries-batch', array_agg(sessionize.fingerprint_bytes(event) ORDER BY arrival))
	 FROM deliveries),
	(SELECT array_agg(first ORDER BY arrival) FROM verdicts),
	'first_seen_many on the batch agrees with first_seen row by row');

-- 10. Everything already seen stays seen within the ttl.
SELECT is(
	(SELECT count(*) FILTER (WHERE sessionize.first_seen('deliveries', sessionize.fingerprint_bytes(event))) FROM deliveries),
	0::bigint,
	'a replay of every delivery finds nothing new');

-- 11-12. Expired entries are pruned and become new again; live ones stay.
UPDATE sessionize.seen_fingerprints SET expires_at = now() - interval '1 minute'
WHERE namespace = 'deliveries' AND get_byte(uuid_send(fingerprint), 0) < 128;
SELECT is(
	(SELECT sum(removed) FROM (SELECT sessionize.prune_seen(500) AS removed FROM generate_series(1, 10)) p),
	(SELECT count(*) FROM verdicts WHERE first AND get_byte(uuid_send(sessionize.fingerprint_bytes(event)), 0) < 128)::numeric,
	'prune_seen removes exactly the expired entries');
SELECT is(
	(SELECT array_agg(DISTINCT get_byte(uuid_send(sessionize.fingerprint_bytes(event)), 0) < 128)
	 FROM deliveries WHERE sessionize.first_seen('deliveries', sessionize.fingerprint_bytes(event))),
	ARRAY[true],
	'after expiry exactly the expired fingerprints are new again');

SELECT * FROM finish();
ROLLBACK;
