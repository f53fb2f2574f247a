-- Multi-slot upserts: the A/B campaign example, overflow, conflicts and every
-- error path.
SET timezone = 'UTC';

SELECT sessionize.create_slot_table('campaign_sends', '{id,campaign}', '{int,text}', 'timestamptz', 'int',
									value_name => 'sent', slot_key_name => 'date');
SELECT column_name, data_type FROM information_schema.columns
WHERE table_name = 'campaign_sends' ORDER BY ordinal_position;

-- Messages (id 1, A, 12:00, 100), (2, B, 12:00, 100), (1, A, 13:00, 1000).
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), timestamptz '2024-05-01 12:00', 100);
SELECT sessionize.slot_upsert('campaign_sends', ROW(2, 'B'), timestamptz '2024-05-01 12:00', 100);
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), timestamptz '2024-05-01 13:00', 1000);
SELECT * FROM campaign_sends ORDER BY id;

-- Re-delivering the third message changes nothing.
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), timestamptz '2024-05-01 13:00', 1000);
SELECT * FROM campaign_sends ORDER BY id;

-- An earlier message arriving late takes slot 1; the rest move up and the
-- last one overflows into the side table.  computed covers them all.
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), '2024-05-01 11:00', 5);
SELECT * FROM campaign_sends ORDER BY id;
SELECT * FROM campaign_sends_overflow ORDER BY id, date;

-- The set-based form; literals are cast to the column types.
SELECT * FROM sessionize.slot_upsert_many('campaign_sends',
	ARRAY[ROW(3, 'C'), ROW(3, 'C'), ROW(1, 'A')],
	ARRAY['2024-05-01 12:00', '2024-05-01 12:00', '2024-05-01 14:00']::timestamptz[],
	ARRAY[1, 1, 7]);
SELECT * FROM campaign_sends ORDER BY id;
SELECT * FROM campaign_sends_overflow ORDER BY id, date;

-- The same slot key with another value is a conflict, never summed.
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), timestamptz '2024-05-01 13:00', 999);
SELECT computed FROM campaign_sends WHERE id = 1;

-- Recording conflicts instead, with min, max and last combines and a single key column.
SELECT sessionize.create_slot_table('public.scores', '{player}', '{text}', 'int', 'numeric',
									slots => 1, combine => 'max', on_conflict => 'record');
SELECT sessionize.slot_upsert('scores', 'ann', 1, 10.5), sessionize.slot_upsert('scores', 'ann', 2, 7),
	   sessionize.slot_upsert('scores', 'ann', 2, 8), sessionize.slot_upsert('scores', 'ann', 2, 7);
SELECT * FROM scores;
SELECT * FROM scores_overflow;
SELECT player, slot_key, stored_value, offered_value FROM scores_conflicts;
SELECT sessionize.create_slot_table('lows', '{k}', '{int}', 'int', 'int', combine => 'min');
SELECT sessionize.create_slot_table('latest', '{k}', '{int}', 'date', 'text', combine => 'last');
SELECT sessionize.slot_upsert('lows', 1, 5, 30), sessionize.slot_upsert('lows', 1, 3, 40), sessionize.slot_upsert('lows', 1, 4, 20);
SELECT sessionize.slot_upsert('latest', 1, date '2024-01-02', 'b'), sessionize.slot_upsert('latest', 1, date '2024-01-03', 'c'),
	   sessionize.slot_upsert('latest', 1, date '2024-01-01', 'a');
SELECT computed FROM lows;
SELECT computed FROM latest;

-- A NULL value is a value: stored, re-delivered as a no-op, skipped by sum.
SELECT sessionize.slot_upsert('campaign_sends', ROW(4, 'D'), timestamptz '2024-05-01 12:00', NULL::int),
	   sessionize.slot_upsert('campaign_sends', ROW(4, 'D'), timestamptz '2024-05-01 12:00', NULL::int),
	   sessionize.slot_upsert('campaign_sends', ROW(4, 'D'), timestamptz '2024-05-01 13:00', 3);
SELECT * FROM campaign_sends WHERE id = 4;

-- Hostile names are quoted, never executed.
SELECT sessionize.create_slot_table('"evil; DROP TABLE campaign_sends; --"', ARRAY['k" int); DROP TABLE campaign_sends; --'],
									'{int}', 'int', 'int', value_name => 'v"; DROP TABLE x', slot_key_name => 's''q');
SELECT sessionize.slot_upsert('"evil; DROP TABLE campaign_sends; --"', 1, 1, 1);
SELECT count(*) AS campaign_rows_still_there FROM campaign_sends;
SELECT column_name FROM information_schema.columns
WHERE table_name = 'evil; DROP TABLE campaign_sends; --' ORDER BY ordinal_position;

-- Bad input: each is a clear error.
SELECT sessionize.create_slot_table('t1', '{k}', '{int}', 'int', 'int', slots => 0);
SELECT sessionize.create_slot_table('t1', '{k}', '{int}', 'int', 'int', combine => 'avg');
SELECT sessionize.create_slot_table('t1', '{k}', '{int}', 'int', 'int', on_conflict => 'ignore');
SELECT sessionize.create_slot_table('t1', '{k}', '{int}', 'int', 'text');
SELECT sessionize.create_slot_table('t1', '{k}', '{int}', 'int', 'json', combine => 'max');
SELECT sessionize.create_slot_table('t1', '{k,j}', '{int}', 'int', 'int');
SELECT sessionize.create_slot_table('t1', '{}', '{}', 'int', 'int');
SELECT sessionize.create_slot_table('a.b.c', '{k}', '{int}', 'int', 'int');
SELECT sessionize.create_slot_table(NULL, '{k}', '{int}', 'int', 'int');
SELECT sessionize.create_slot_table('campaign_sends', '{k}', '{int}', 'int', 'int');
SELECT sessionize.slot_upsert('campaign_sends', NULL::int, timestamptz '2024-05-01 12:00', 1);
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, NULL::text), timestamptz '2024-05-01 12:00', 1);
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), NULL::timestamptz, 1);
SELECT sessionize.slot_upsert('campaign_sends', 1, timestamptz '2024-05-01 12:00', 1);
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), 'not a time', 1);
SELECT sessionize.slot_upsert('campaign_sends', ROW(1, 'A'), timestamptz '2024-05-01 12:00', 'lots');
SELECT sessionize.slot_upsert('campaign_sends', ROW('x', 'A'), timestamptz '2024-05-01 12:00', 1);
SELECT sessionize.slot_upsert('pg_class', 1, 1, 1);
SELECT sessionize.slot_upsert(NULL, 1, 1, 1);
SELECT * FROM sessionize.slot_upsert_many('campaign_sends', ARRAY[ROW(1, 'A')], ARRAY[timestamptz '2024-05-01 12:00', timestamptz '2024-05-01 13:00'], ARRAY[1]);
SELECT * FROM sessionize.slot_upsert_many('campaign_sends', ROW(1, 'A'), ARRAY[timestamptz '2024-05-01 12:00'], ARRAY[1]);
SELECT * FROM sessionize.slot_upsert_many('campaign_sends', ARRAY[ROW(1, 'A')], ARRAY[NULL::timestamptz], ARRAY[1]);
SELECT * FROM sessionize.slot_upsert_many('campaign_sends', NULL::record[], ARRAY[timestamptz '2024-05-01 12:00'], ARRAY[1]);
