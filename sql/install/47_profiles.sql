-- User profiles: per key, day (in the profile's time zone) and dimension,
-- how often a key saw each value of its categorical dimensions, and count,
-- mean, variance, min and max of its numeric ones; moved by each batch in
-- its transaction (src/profiles.c), read by profile() (src/profile_serving.c).
--
-- A profile <name> of pipeline <pipeline> is three tables and two views:
--   <pipeline>_profile_<name>_days        one row per key and day: counts
--       int4[] of (value id, count) pairs, moments float8[] of (n, sx, sxx,
--       min, max) per numeric dimension;
--   <pipeline>_profile_<name>_values      the dictionary of value ids;
--   <pipeline>_profile_<name>_population  per day, the counts of all keys;
--   <pipeline>_profile_<name>             view: (key, day, dimension, value,
--       count), one row per count;
--   <pipeline>_profile_<name>_numeric     view: (key, day, dimension, n,
--       mean, variance, min, max), variance as var_pop().
-- Like the rollups, they belong to the pipeline, not to the extension;
-- only the extension writes them, the pipeline's owner reads the views and
-- profile(), and may let others do so with grant_reader().

CREATE TABLE sessionize.pipeline_profiles (
	pipeline text NOT NULL REFERENCES sessionize.pipelines ON DELETE CASCADE ON UPDATE CASCADE,
	name text NOT NULL,
	categorical text[] NOT NULL,
	"numeric" text[] NOT NULL,
	day_time_zone text NOT NULL,
	keep interval NOT NULL,
	PRIMARY KEY (pipeline, name)
);
COMMENT ON TABLE sessionize.pipeline_profiles IS 'the user profiles each pipeline keeps per key and day';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipeline_profiles', '');

CREATE FUNCTION sessionize.sessionize_profile_add_counts(a integer[], b integer[])
RETURNS integer[]
AS 'MODULE_PATHNAME', 'profile_add_counts'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_profile_add_counts(integer[], integer[]) IS
	'the sum of two arrays of (id, count) pairs of a profile';

CREATE FUNCTION sessionize.sessionize_profile_add_counts(a bigint[], b bigint[])
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'profile_add_counts'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_profile_add_counts(bigint[], bigint[]) IS
	'the sum of two arrays of (id, count) pairs of a profile''s population';

CREATE FUNCTION sessionize.sessionize_profile_add_moments(a float8[], b float8[])
RETURNS float8[]
AS 'MODULE_PATHNAME', 'profile_add_moments'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_profile_add_moments(float8[], float8[]) IS
	'two arrays of (n, sx, sxx, min, max) per numeric dimension, merged as float8_combine() merges';

CREATE FUNCTION sessionize.sessionize_profile_table(pipeline text, name text, suffix text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN format('sessionize.%I', pipeline || '_profile_' || name || suffix);

-- The views a profile's readers read: the profile's and, through them,
-- profile()'s.
CREATE FUNCTION sessionize.sessionize_profile_views(pipeline text)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(array_agg(v.name ORDER BY r.name, v.position), '{}')
	FROM sessionize.pipeline_profiles r
	CROSS JOIN LATERAL unnest(ARRAY[sessionize.sessionize_profile_table(r.pipeline, r.name, ''),
									sessionize.sessionize_profile_table(r.pipeline, r.name, '_numeric')])
		 WITH ORDINALITY AS v(name, position)
	WHERE r.pipeline = sessionize_profile_views.pipeline
$$;

CREATE FUNCTION sessionize.add_profile(pipeline text, name text, categorical text[] DEFAULT '{}',
									   "numeric" text[] DEFAULT '{}', day_time_zone text DEFAULT NULL,
									   keep interval DEFAULT '90 days')
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.add_profile(text, text, text[], text[], text, interval) IS
	'keeps a profile per key and day of a pipeline''s events: value counts of the categorical columns, count, mean, variance, min and max of the numeric ones';

CREATE FUNCTION sessionize.sessionize_add_profile(caller regrole, pipeline text, name text, categorical text[],
												  numerics text[], day_time_zone text, keep interval)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	source_pipeline sessionize.pipelines;
	dimension text;
	column_type regtype;
	days text;
	dictionary text;
	population text;
	counts_view text;
	numeric_view text;
	reader oid;
BEGIN
	IF name IS NULL OR categorical IS NULL OR numerics IS NULL OR keep IS NULL THEN
		RAISE EXCEPTION 'name, categorical, numeric and keep must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- between batches: a batch writes the profiles it sees
	source_pipeline := sessionize.sessionize_read_pipeline(caller, pipeline, true);
	-- days are the pipeline's own unless asked otherwise
	day_time_zone := coalesce(day_time_zone, source_pipeline.time_zone);
	IF name = '' OR octet_length(pipeline || '_profile_' || name || '_population') > 63 THEN
		RAISE EXCEPTION 'invalid profile name "%"', name
			USING ERRCODE = 'invalid_name',
				  DETAIL = 'The names of a profile''s tables, such as ' || pipeline || '_profile_' || name
						   || '_population, must fit in 63 bytes.';
	END IF;
	IF EXISTS (SELECT FROM sessionize.pipeline_profiles r
			   WHERE r.pipeline = sessionize_add_profile.pipeline AND r.name = sessionize_add_profile.name) THEN
		RAISE EXCEPTION 'profile "%" of pipeline "%" already exists', name, pipeline USING ERRCODE = 'duplicate_object';
	END IF;
	days := sessionize.sessionize_profile_table(pipeline, name, '_days');
	dictionary := sessionize.sessionize_profile_table(pipeline, name, '_values');
	population := sessionize.sessionize_profile_table(pipeline, name, '_population');
	counts_view := sessionize.sessionize_profile_table(pipeline, name, '');
	numeric_view := sessionize.sessionize_profile_table(pipeline, name, '_numeric');
	IF array_ndims(categorical) > 1 OR array_ndims(numerics) > 1 THEN
		RAISE EXCEPTION 'the dimensions of a profile are a one-dimensional array of names'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF cardinality(categorical) + cardinality(numerics) = 0 THEN
		RAISE EXCEPTION 'a profile needs at least one dimension' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF array_position(categorical, NULL) IS NOT NULL OR array_position(numerics, NULL) IS NOT NULL
	   OR '' = ANY (categorical) OR '' = ANY (numerics) THEN
		RAISE EXCEPTION 'the dimensions of a profile must be names, not NULL or empty' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF (SELECT count(DISTINCT d) FROM unnest(categorical) d) < cardinality(categorical)
	   OR (SELECT count(DISTINCT d) FROM unnest(numerics) d) < cardinality(numerics) THEN
		RAISE EXCEPTION 'a dimension is named twice' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- a source of columns: each dimension is one of them, numeric ones numbers
	IF source_pipeline.payload_column IS NULL THEN
		FOREACH dimension IN ARRAY categorical || numerics LOOP
			-- a domain's base type
			SELECT (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)::regtype INTO column_type
			FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
			WHERE a.attrelid = source_pipeline.source AND a.attname = dimension AND a.attnum > 0 AND NOT a.attisdropped;
			IF NOT FOUND THEN
				RAISE EXCEPTION 'column "%" of the source of pipeline "%" does not exist', dimension, pipeline
					USING ERRCODE = 'undefined_column';
			END IF;
			IF dimension = ANY (numerics) AND column_type
			   NOT IN ('smallint'::regtype, 'integer', 'bigint', 'real', 'double precision', 'numeric') THEN
				RAISE EXCEPTION 'column "%" of the source of pipeline "%" is of type %, not a number', dimension,
					pipeline, column_type
					USING ERRCODE = 'datatype_mismatch',
						  HINT = 'A numeric dimension is a column of a number type.';
			END IF;
		END LOOP;
	END IF;
	-- an unknown time zone fails here
	PERFORM now() AT TIME ZONE day_time_zone;
	IF keep <= interval '0' THEN
		RAISE EXCEPTION 'keep must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;

	INSERT INTO sessionize.pipeline_profiles (pipeline, name, categorical, "numeric", day_time_zone, keep)
	VALUES (pipeline, name, categorical, numerics, day_time_zone, keep);
	EXECUTE format('CREATE TABLE %s (key %s NOT NULL, day date NOT NULL, counts integer[] NOT NULL,'
				   ' moments float8[], PRIMARY KEY (key, day))', days, sessionize.sessionize_key_type(source_pipeline));
	-- expiry deletes by day; rows come roughly in day order, so a BRIN index is enough
	EXECUTE format('CREATE INDEX ON %s USING brin (day)', days);
	EXECUTE format('CREATE TABLE %s (id serial PRIMARY KEY, dimension text NOT NULL, value text NOT NULL,'
				   ' UNIQUE (dimension, value))', dictionary);
	EXECUTE format('CREATE TABLE %s (day date PRIMARY KEY, counts bigint[] NOT NULL)', population);
	EXECUTE format('CREATE VIEW %s AS SELECT d.key, d.day, v.dimension, v.value, c.count::bigint AS count'
				   ' FROM %s d CROSS JOIN LATERAL (SELECT d.counts[2 * i - 1] AS id, d.counts[2 * i] AS count'
				   ' FROM generate_series(1, cardinality(d.counts) / 2) i) c'
				   ' JOIN %s v ON v.id = c.id',
				   counts_view, days, dictionary);
	EXECUTE format('CREATE VIEW %s AS SELECT d.key, d.day, m.dimension, d.moments[5 * m.i - 4]::bigint AS n,'
				   ' d.moments[5 * m.i - 3] / d.moments[5 * m.i - 4] AS mean,'
				   ' d.moments[5 * m.i - 2] / d.moments[5 * m.i - 4] AS variance,'
				   ' d.moments[5 * m.i - 1] AS min, d.moments[5 * m.i] AS max'
				   ' FROM %s d CROSS JOIN LATERAL unnest(%L::text[]) WITH ORDINALITY AS m(dimension, i)'
				   ' WHERE d.moments[5 * m.i - 4] > 0',
				   numeric_view, days, numerics);
	EXECUTE format('COMMENT ON TABLE %s IS %L', days,
				   format('profile %s of pipeline %s per key and day: (value id, count) pairs and numeric moments; read it through the views or profile()', name, pipeline));
	EXECUTE format('COMMENT ON TABLE %s IS %L', dictionary, format('the values of profile %s of pipeline %s, numbered', name, pipeline));
	EXECUTE format('COMMENT ON TABLE %s IS %L', population,
				   format('the counts of all keys per day of profile %s of pipeline %s: the prior of profile()', name, pipeline));
	EXECUTE format('COMMENT ON VIEW %s IS %L', counts_view,
				   format('how often each key saw each value of the categorical dimensions of profile %s of pipeline %s, per day', name, pipeline));
	EXECUTE format('COMMENT ON VIEW %s IS %L', numeric_view,
				   format('count, mean, variance (var_pop), min and max of the numeric dimensions of profile %s of pipeline %s, per key and day', name, pipeline));
	EXECUTE format('GRANT SELECT ON %s, %s TO %s WITH GRANT OPTION', counts_view, numeric_view, source_pipeline.owner);
	-- the pipeline's readers read its new profile too
	FOR reader IN
		SELECT DISTINCT a.grantee
		FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
		WHERE c.oid = format('sessionize.%I', pipeline || '_sessions')::regclass
		  AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner AND a.grantee <> source_pipeline.owner AND a.grantee <> 0
	LOOP
		EXECUTE format('GRANT SELECT ON %s, %s TO %s', counts_view, numeric_view, reader::regrole);
	END LOOP;
END $$;

CREATE FUNCTION sessionize.drop_profile(pipeline text, name text)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.drop_profile(text, text) IS 'drops a profile of a pipeline, with its tables and views';

CREATE FUNCTION sessionize.sessionize_drop_profile(caller regrole, pipeline text, name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_read_pipeline(caller, pipeline, true);
	IF name IS NULL THEN
		RAISE EXCEPTION 'name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	DELETE FROM sessionize.pipeline_profiles r
	WHERE r.pipeline = sessionize_drop_profile.pipeline AND r.name = sessionize_drop_profile.name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'profile "%" of pipeline "%" does not exist', name, pipeline USING ERRCODE = 'undefined_object';
	END IF;
END $$;

-- A profile's tables and views go with its row, whether drop_profile() or
-- drop_pipeline() removes it.
CREATE FUNCTION sessionize.sessionize_profile_dropped()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	EXECUTE format('DROP VIEW IF EXISTS %s, %s', sessionize.sessionize_profile_table(OLD.pipeline, OLD.name, ''),
				   sessionize.sessionize_profile_table(OLD.pipeline, OLD.name, '_numeric'));
	EXECUTE format('DROP TABLE IF EXISTS %s, %s, %s', sessionize.sessionize_profile_table(OLD.pipeline, OLD.name, '_days'),
				   sessionize.sessionize_profile_table(OLD.pipeline, OLD.name, '_values'),
				   sessionize.sessionize_profile_table(OLD.pipeline, OLD.name, '_population'));
	RETURN OLD;
END $$;
CREATE TRIGGER drop_profile AFTER DELETE ON sessionize.pipeline_profiles
	FOR EACH ROW EXECUTE FUNCTION sessionize.sessionize_profile_dropped();

CREATE FUNCTION sessionize.profile(pipeline text, name text, key anyelement, from_day date, to_day date,
								   half_life interval DEFAULT NULL, prior_weight float8 DEFAULT 0)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'profile_json'
LANGUAGE C STABLE;
COMMENT ON FUNCTION sessionize.profile(text, text, anyelement, date, date, interval, float8) IS
	'the profile of a key over from_day..to_day: shares of each categorical value, smoothed toward the population by prior_weight, and n, mean, stddev, min, max of each numeric dimension; days weigh 0.5 ^ (days before to_day / half_life)';

CREATE FUNCTION sessionize.rebuild_profile(pipeline text, name text, source regclass, from_day date, to_day date)
RETURNS bigint
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.rebuild_profile(text, text, regclass, date, date) IS
	'replaces the days from_day..to_day of a profile by those of the distinct events of a table shaped like the pipeline''s source; returns the events counted';

CREATE FUNCTION sessionize.sessionize_rebuild_profile_days(pipeline sessionize.pipelines, name text, source regclass,
														   from_day date, to_day date)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rebuild_profile_days'
LANGUAGE C STRICT;
COMMENT ON FUNCTION sessionize.sessionize_rebuild_profile_days(sessionize.pipelines, text, regclass, date, date) IS
	'the body of rebuild_profile() once checked';

CREATE FUNCTION sessionize.sessionize_rebuild_profile(caller regrole, pipeline text, name text, source regclass,
													  from_day date, to_day date)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default'
AS $$
DECLARE
	found sessionize.pipelines;
	missing text;
BEGIN
	IF name IS NULL OR source IS NULL OR from_day IS NULL OR to_day IS NULL THEN
		RAISE EXCEPTION 'name, source, from_day and to_day must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT isfinite(from_day) OR NOT isfinite(to_day) OR from_day > to_day THEN
		RAISE EXCEPTION 'from_day and to_day must be finite, from_day not after to_day'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- between batches, which write the same rows
	found := sessionize.sessionize_read_pipeline(caller, pipeline, true);
	IF NOT EXISTS (SELECT FROM sessionize.pipeline_profiles r
				   WHERE r.pipeline = sessionize_rebuild_profile.pipeline AND r.name = sessionize_rebuild_profile.name) THEN
		RAISE EXCEPTION 'profile "%" of pipeline "%" does not exist', name, pipeline USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT has_table_privilege(found.owner, source, 'SELECT') THEN
		RAISE EXCEPTION 'permission denied for table %', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('The events are read with the rights of the pipeline''s owner, %s.', found.owner);
	END IF;
	-- a table of columns has those the pipeline and the profile read
	IF found.payload_column IS NULL THEN
		SELECT d.name INTO missing
		FROM (SELECT found.key_column::text UNION ALL SELECT found.time_column::text
			  UNION ALL SELECT unnest(r.categorical || r."numeric")
			  FROM sessionize.pipeline_profiles r
			  WHERE r.pipeline = found.name AND r.name = sessionize_rebuild_profile.name) d(name)
		WHERE NOT EXISTS (SELECT FROM pg_attribute a
						  WHERE a.attrelid = source AND a.attname = d.name AND a.attnum > 0 AND NOT a.attisdropped)
		LIMIT 1;
	ELSE
		SELECT d.name INTO missing
		FROM (VALUES (found.payload_column::text)) d(name)
		WHERE NOT EXISTS (SELECT FROM pg_attribute a
						  WHERE a.attrelid = source AND a.attname = d.name AND a.attnum > 0 AND NOT a.attisdropped);
	END IF;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'column "%" of table % does not exist', missing, source
			USING ERRCODE = 'undefined_column',
				  HINT = 'The table of past events has the columns of the pipeline''s source.';
	END IF;
	-- times without an offset are read in the pipeline's time zone
	PERFORM sessionize.sessionize_use_time_zone(found);
	RETURN sessionize.sessionize_rebuild_profile_days(found, name, source, from_day, to_day);
END $$;

CREATE FUNCTION sessionize.expire_profiles(pipeline text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.expire_profiles(text) IS
	'deletes the days of profiles older than their keep before the greatest event time of their pipeline (of one pipeline, or of all the caller may use); for a pg_cron job';

CREATE FUNCTION sessionize.sessionize_expire_profiles(caller regrole, pipeline text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	profile record;
	deleted bigint := 0;
	rows bigint;
BEGIN
	IF pipeline IS NOT NULL THEN
		PERFORM sessionize.sessionize_read_pipeline(caller, pipeline, false);
	END IF;
	FOR profile IN
		SELECT r.pipeline, r.name,
			   ((s.max_event_time AT TIME ZONE r.day_time_zone) - r.keep)::date AS first_kept
		FROM sessionize.pipeline_profiles r
		JOIN sessionize.pipelines p ON p.name = r.pipeline
		JOIN sessionize.pipeline_state s ON s.pipeline = r.pipeline
		WHERE (sessionize_expire_profiles.pipeline IS NULL OR r.pipeline = sessionize_expire_profiles.pipeline)
		  AND pg_has_role(caller, p.owner, 'USAGE') AND s.max_event_time IS NOT NULL
		ORDER BY r.pipeline, r.name
	LOOP
		EXECUTE format('DELETE FROM %s WHERE day < $1', sessionize.sessionize_profile_table(profile.pipeline, profile.name, '_days'))
			USING profile.first_kept;
		GET DIAGNOSTICS rows = ROW_COUNT;
		deleted := deleted + rows;
		EXECUTE format('DELETE FROM %s WHERE day < $1', sessionize.sessionize_profile_table(profile.pipeline, profile.name, '_population'))
			USING profile.first_kept;
	END LOOP;
	RETURN deleted;
END $$;

-- Readers: grant_reader() lets a role read the result views of a pipeline,
-- and those of its profiles, which profile() checks.
CREATE FUNCTION sessionize.sessionize_set_reader(caller regrole, pipeline text, reader regrole, granted boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found sessionize.pipelines;
BEGIN
	found := sessionize.sessionize_read_pipeline(caller, pipeline, false);
	IF reader IS NULL THEN
		RAISE EXCEPTION 'reader must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- the grants of the views' owner, which alter_pipeline() gives again
	-- when it makes the views anew
	EXECUTE format(CASE WHEN granted THEN 'GRANT SELECT ON %s TO %s' ELSE 'REVOKE SELECT ON %s FROM %s' END,
				   (SELECT string_agg(v.name, ', ')
					FROM unnest(ARRAY(SELECT format('sessionize.%I', r.name)
									  FROM unnest(sessionize.sessionize_result_views(found.name)) r(name))
								|| sessionize.sessionize_profile_views(found.name)) v(name)),
				   reader);
END $$;
