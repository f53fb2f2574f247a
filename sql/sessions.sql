-- Session windows: documentation-grade cases and every error path.
SET timezone = 'UTC';

CREATE TABLE clicks (user_id int, ts timestamptz);
INSERT INTO clicks VALUES
	(1, '2024-05-01 10:00'), (1, '2024-05-01 10:20'), (1, '2024-05-01 10:50'),
	(1, '2024-05-01 12:00'), (1, '2024-05-01 12:30'), (1, NULL),
	(2, '2024-05-01 09:00'), (2, '2024-05-01 09:00'), (2, '2024-05-01 09:45');

-- An exact gap continues the session (10:20 -> 10:50 is 30 minutes).
SELECT user_id, ts,
	   sessionize.session_id(ts, '30 minutes') OVER w AS session_id,
	   sessionize.session_start(ts, '30 minutes') OVER w AS session_start
FROM clicks
WINDOW w AS (PARTITION BY user_id ORDER BY ts)
ORDER BY user_id, ts;

SELECT user_id, sessionize.sessions(ts, '30 minutes') FROM clicks GROUP BY user_id ORDER BY user_id;

-- Unnested, the aggregate is a table of sessions.
SELECT user_id, s.started_at, s.ended_at, s.events, s.ended_at - s.started_at AS duration
FROM (SELECT user_id, sessionize.sessions(ts, '30 minutes') AS all_sessions
	  FROM clicks GROUP BY user_id) per_user,
	 unnest(all_sessions) s
ORDER BY user_id, s.started_at;

-- max_duration cuts a session that would run longer.
SELECT user_id, ts, sessionize.session_id(ts, '30 minutes', '40 minutes') OVER w
FROM clicks WHERE user_id = 1
WINDOW w AS (PARTITION BY user_id ORDER BY ts) ORDER BY ts;
SELECT sessionize.sessions(ts, '30 minutes', '40 minutes') FROM clicks WHERE user_id = 1;

-- Dynamic gap: each event keeps the session open for its own gap.  The 10:00
-- event with a 2-hour gap carries the session over the 10:50 -> 12:00 pause.
SELECT ts, sessionize.session_id(ts, CASE WHEN ts = '2024-05-01 10:50' THEN interval '2 hours'
										  ELSE interval '30 minutes' END) OVER (ORDER BY ts)
FROM clicks WHERE user_id = 1 AND ts IS NOT NULL ORDER BY ts;
SELECT sessionize.sessions(ts, CASE WHEN ts = '2024-05-01 10:50' THEN interval '2 hours'
									ELSE interval '30 minutes' END)
FROM clicks WHERE user_id = 1;

-- timestamp without time zone works the same way.
SELECT ts::timestamp, sessionize.session_id(ts::timestamp, '30 minutes') OVER (ORDER BY ts),
	   sessionize.session_start(ts::timestamp, '30 minutes') OVER (ORDER BY ts)
FROM clicks WHERE user_id = 1 ORDER BY ts;
SELECT sessionize.sessions(ts::timestamp, '30 minutes') FROM clicks WHERE user_id = 1;

-- No rows: NULL, like array_agg; only NULL event times: no sessions.
SELECT sessionize.sessions(ts, '30 minutes') FROM clicks WHERE false;
SELECT sessionize.sessions(ts, '30 minutes') FROM clicks WHERE ts IS NULL;

-- A gap of days counts 24 hours a day; a session may stay open forever.
SELECT sessionize.sessions(ts, '1 day') FROM clicks WHERE user_id = 1;
SELECT sessionize.sessions(ts, '100000000 days') FROM (VALUES ('294276-12-31 00:00'::timestamptz), ('2000-01-01')) e(ts);

-- Bad input: each is a clear error.
SELECT sessionize.session_id(ts, NULL) OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '0 minutes') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '-5 minutes') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '1 month') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '1 year 2 days') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '30 minutes', '10 minutes') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '30 minutes', '0 minutes') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '30 minutes', '1 month') OVER (ORDER BY ts) FROM clicks;
SELECT sessionize.session_id(ts, '30 minutes', CASE WHEN ts > '2024-05-01 11:00' THEN interval '2 hours' ELSE interval '1 hour' END)
	OVER (ORDER BY ts) FROM clicks WHERE user_id = 1;
SELECT sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts DESC) FROM clicks;
SELECT sessionize.session_start(ts, '30 minutes') OVER (ORDER BY user_id) FROM clicks WHERE user_id = 2 OR ts = '2024-05-01 10:00';
SELECT sessionize.session_id(ts, '30 minutes') OVER (ORDER BY ts) FROM (VALUES ('infinity'::timestamptz)) e(ts);
SELECT sessionize.session_id(ts, '30 minutes') OVER (ORDER BY ts) FROM (VALUES ('-infinity'::timestamptz)) e(ts);
SELECT sessionize.session_id(ts, '2147483647 days') OVER (ORDER BY ts) FROM clicks;

SELECT sessionize.sessions(ts, NULL) FROM clicks;
SELECT sessionize.sessions(ts, '0 seconds') FROM clicks;
SELECT sessionize.sessions(ts, '1 mon') FROM clicks;
SELECT sessionize.sessions(ts, '30 minutes', '1 minute') FROM clicks;
SELECT sessionize.sessions(ts, '30 minutes', CASE WHEN ts > '2024-05-01 11:00' THEN interval '2 hours' ELSE interval '1 hour' END) FROM clicks;
SELECT sessionize.sessions(ts, '30 minutes') FROM (VALUES ('infinity'::timestamptz)) e(ts);

