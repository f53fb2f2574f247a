-- Fingerprints and the dedup memory: documentation-grade cases and every
-- error path.

-- Snowplow's fingerprint of a flat object of strings: keys sorted bytewise,
-- each key and value followed by U+001F, MD5 in lowercase hex.
SELECT sessionize.fingerprint('{"e": "pv", "aid": "shop", "tv": "js-2.0"}'::jsonb) AS fingerprint,
	   md5('aid' || chr(31) || 'shop' || chr(31) || 'e' || chr(31) || 'pv' || chr(31)
		   || 'tv' || chr(31) || 'js-2.0' || chr(31)) AS expected;

-- Key order in the input never matters; excluded keys are skipped.
SELECT sessionize.fingerprint('{"b": "2", "a": "1"}') = sessionize.fingerprint('{"a": "1", "b": "2"}') AS same;
SELECT sessionize.fingerprint('{"a": "1", "received_at": "2024-01-01"}', '{received_at}')
	 = sessionize.fingerprint('{"a": "1"}') AS excluded;

-- Bytewise key order: upper case sorts before lower case, "a" before "aa".
SELECT sessionize.fingerprint('{"b": "x", "B": "y", "aa": "z", "a": "w"}')
	 = md5('B' || chr(31) || 'y' || chr(31) || 'a' || chr(31) || 'w' || chr(31)
		   || 'aa' || chr(31) || 'z' || chr(31) || 'b' || chr(31) || 'x' || chr(31)) AS bytewise;

-- Non-string values hash a NUL byte, a letter for their JSON type and their
-- jsonb text form; nested values are canonical.  A U+001F inside a string
-- is preceded by a NUL.
SELECT sessionize.fingerprint('{"n": 1.50, "t": true, "z": null, "o": {"y": 1, "x": [1, "a"]}, "s": "a\u001fb"}')
	 = md5(convert_to('n' || chr(31), 'UTF8') || '\x00'::bytea || convert_to('n1.50' || chr(31), 'UTF8')
		   || convert_to('o' || chr(31), 'UTF8') || '\x00'::bytea || convert_to('o{"x": [1, "a"], "y": 1}' || chr(31), 'UTF8')
		   || convert_to('s' || chr(31) || 'a', 'UTF8') || '\x00'::bytea || convert_to(chr(31) || 'b' || chr(31), 'UTF8')
		   || convert_to('t' || chr(31), 'UTF8') || '\x00'::bytea || convert_to('btrue' || chr(31), 'UTF8')
		   || convert_to('z' || chr(31), 'UTF8') || '\x00'::bytea || convert_to('z' || chr(31), 'UTF8')) AS typed;
SELECT sessionize.fingerprint('{"o": {"y": 1, "x": 2}}') = sessionize.fingerprint('{"o": {"x": 2, "y": 1}}') AS nested_order;

-- Values that are not objects are hashed as their jsonb text.
SELECT sessionize.fingerprint('[3, 1, 2]') = md5('[3, 1, 2]') AS array_value,
	   sessionize.fingerprint('"text"') = md5('"text"') AS string_value;

-- SHA-256, and the compact 16-byte form.
SELECT sessionize.fingerprint('{"a": "1"}', '{}', 'sha256')
	 = encode(sha256(convert_to('a' || chr(31) || '1' || chr(31), 'UTF8')), 'hex') AS sha256;
SELECT sessionize.fingerprint_bytes('{"a": "1"}') = sessionize.fingerprint('{"a": "1"}')::uuid AS bytes;

-- A table row: its columns are the keys.
CREATE TABLE events (event_id text, name text, amount numeric, received_at timestamptz);
INSERT INTO events VALUES ('e1', 'purchase', 9.99, '2024-05-01 10:00+00');
SELECT sessionize.fingerprint(e, '{received_at}') = sessionize.fingerprint(to_jsonb(e), '{received_at}') AS row_form,
	   sessionize.fingerprint(e, '{received_at}')
	 = md5(convert_to('amount' || chr(31), 'UTF8') || '\x00'::bytea || convert_to('n9.99' || chr(31) || 'event_id' || chr(31) || 'e1' || chr(31)
		   || 'name' || chr(31) || 'purchase' || chr(31), 'UTF8')) AS row_expected
FROM events e;

-- NULL in, NULL out; a NULL exclude list or element excludes nothing.
SELECT sessionize.fingerprint(NULL::jsonb) IS NULL AS null_event,
	   sessionize.fingerprint_bytes(NULL) IS NULL AS null_bytes,
	   sessionize.fingerprint('{"a": "1"}', NULL) = sessionize.fingerprint('{"a": "1"}') AS null_exclude,
	   sessionize.fingerprint('{"a": "1"}', ARRAY[NULL]) = sessionize.fingerprint('{"a": "1"}') AS null_element;

-- The dedup memory: true once, then false, per namespace.
SELECT sessionize.first_seen('clicks', sessionize.fingerprint_bytes('{"id": "1"}')) AS first,
	   sessionize.first_seen('clicks', sessionize.fingerprint_bytes('{"id": "1"}')) AS again,
	   sessionize.first_seen('orders', sessionize.fingerprint_bytes('{"id": "1"}')) AS other_namespace,
	   sessionize.first_seen('clicks', sessionize.fingerprint('{"id": "1"}')) AS as_hex;
SELECT sessionize.first_seen('clicks', NULL::uuid) IS NULL AS null_fingerprint;

-- Once its entry has expired, a fingerprint is new again.
SELECT sessionize.first_seen('expiring', sessionize.fingerprint_bytes('{"id": "2"}'), '1 minute');
UPDATE sessionize.seen_fingerprints SET expires_at = now() - interval '1 second' WHERE namespace = 'expiring';
SELECT sessionize.first_seen('expiring', sessionize.fingerprint_bytes('{"id": "2"}'), '1 minute') AS new_again;
-- NULL ttl: remembered forever.
SELECT sessionize.first_seen('forever', sessionize.fingerprint_bytes('{"id": "3"}'), NULL),
	   (SELECT expires_at FROM sessionize.seen_fingerprints WHERE namespace = 'forever') IS NULL AS never_expires;

-- A batch in one statement: only the first copy of a fingerprint is new.
SELECT sessionize.first_seen_many('batch', ARRAY[
	sessionize.fingerprint_bytes('{"id": "a"}'), sessionize.fingerprint_bytes('{"id": "b"}'),
	sessionize.fingerprint_bytes('{"id": "a"}'), NULL, sessionize.fingerprint_bytes('{"id": "b"}')]);
SELECT sessionize.first_seen_many('batch', ARRAY[sessionize.fingerprint_bytes('{"id": "a"}'),
												  sessionize.fingerprint_bytes('{"id": "c"}')]);

-- Natural and synthetic duplicates by event id.
SELECT sessionize.classify_duplicate('shop', 'e1', sessionize.fingerprint_bytes('{"id": "e1", "v": "1"}')) AS first,
	   sessionize.classify_duplicate('shop', 'e1', sessionize.fingerprint_bytes('{"id": "e1", "v": "1"}')) AS redelivered,
	   sessionize.classify_duplicate('shop', 'e1', sessionize.fingerprint_bytes('{"id": "e1", "v": "2"}')) AS same_id_other_content;

-- Pruning removes expired entries only, at most batch_size at a time.
INSERT INTO sessionize.seen_fingerprints
SELECT 'prune', md5(i::text)::uuid, now() - interval '2 hours',
	   CASE WHEN i <= 5 THEN now() - interval '1 hour' ELSE now() + interval '1 hour' END
FROM generate_series(1, 8) i;
SELECT sessionize.prune_seen(3) AS first_batch, sessionize.prune_seen(3) AS second_batch, sessionize.prune_seen(3) AS nothing_left;
SELECT count(*) AS still_inside_ttl FROM sessionize.seen_fingerprints WHERE namespace = 'prune';

-- Bad input: each is a clear error.
SELECT sessionize.fingerprint('{"a": "1"}', '{}', 'sha1');
SELECT sessionize.fingerprint('{"a": "1"}', '{}', NULL);
SELECT sessionize.fingerprint('{"a": ');
SELECT sessionize.first_seen(NULL, sessionize.fingerprint_bytes('{}'));
SELECT sessionize.first_seen('clicks', sessionize.fingerprint_bytes('{}'), '0 seconds');
SELECT sessionize.first_seen('clicks', sessionize.fingerprint_bytes('{}'), '-1 hour');
SELECT sessionize.first_seen('clicks', sessionize.fingerprint_bytes('{}'), '1 month');
SELECT sessionize.first_seen('clicks', 'not a fingerprint');
SELECT sessionize.first_seen_many(NULL, ARRAY[sessionize.fingerprint_bytes('{}')]);
SELECT sessionize.first_seen_many('clicks', ARRAY[sessionize.fingerprint_bytes('{}')], '0 seconds');
SELECT sessionize.classify_duplicate(NULL, 'e1', sessionize.fingerprint_bytes('{}'));
SELECT sessionize.classify_duplicate('shop', NULL, sessionize.fingerprint_bytes('{}'));
SELECT sessionize.classify_duplicate('shop', 'e1', NULL);
SELECT sessionize.classify_duplicate('shop', 'e1', sessionize.fingerprint_bytes('{}'), '1 year');
SELECT sessionize.prune_seen(0);
SELECT sessionize.prune_seen(NULL);

-- Deep nesting is hashed, or refused by PostgreSQL's own limits; never a crash.
SELECT length(sessionize.fingerprint(jsonb_build_object('deep', repeat('[', 5000)::text || repeat(']', 5000)::text)));
SELECT length(sessionize.fingerprint((repeat('{"a":', 2000) || '1' || repeat('}', 2000))::jsonb));

-- Only administrators prune.
SELECT has_function_privilege('public', 'sessionize.prune_seen(integer)', 'EXECUTE') AS public_may_prune;
