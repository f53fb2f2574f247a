-- Pipelines: events land in a staging table; run_pipeline() consumes a batch,
-- dead-letters what cannot be used, drops duplicates, sets late events aside
-- and merges the rest into the pipeline's sessions, all in the caller's one
-- transaction, so that a batch is applied entirely or not at all.  The
-- background worker (src/worker.c) calls run_pipeline() like any user or
-- pg_cron job can.  Session merging is the C code of sessions(), through the
-- aggregate sessionize_merge_sessions().

CREATE TYPE sessionize.pipeline_session AS (
	started_at timestamptz,
	ended_at timestamptz,
	expires_at timestamptz,
	events bigint
);
COMMENT ON TYPE sessionize.pipeline_session IS 'a session as pipelines store it, with the time it expires';

CREATE FUNCTION sessionize.sessionize_sessions_merge_transition(internal, timestamptz, timestamptz, timestamptz, bigint)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_merge_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_pipeline_sessions_final(internal)
RETURNS sessionize.pipeline_session[]
AS 'MODULE_PATHNAME', 'sessions_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE sessionize.sessionize_merge_sessions(timestamptz, timestamptz, timestamptz, bigint) (
	SFUNC = sessionize.sessionize_sessions_merge_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_pipeline_sessions_final,
	COMBINEFUNC = sessionize.sessionize_sessions_combine,
	SERIALFUNC = sessionize.sessionize_sessions_serialize,
	DESERIALFUNC = sessionize.sessionize_sessions_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sessionize_merge_sessions(timestamptz, timestamptz, timestamptz, bigint) IS
	'merges stored sessions and new events (as one-event sessions) of a key';

-- Logical sources --------------------------------------------------------------

CREATE FUNCTION sessionize.sessionize_pgoutput_message(data bytea, OUT kind "char", OUT relation oid,
														OUT commit_lsn pg_lsn, OUT missing_values boolean)
AS 'MODULE_PATHNAME', 'pgoutput_message'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_message(bytea) IS
	'type, relation and (for BEGIN) commit LSN of a pgoutput message; whether an UPDATE''s new row misses values';

-- Decoding a logical source's rows: as the pipeline's owner, whose rights
-- the input functions and domain checks of its columns get.
CREATE FUNCTION sessionize.sessionize_pgoutput_row(data bytea, template anyelement, relation bytea)
RETURNS anyelement
AS 'MODULE_PATHNAME', 'pgoutput_row_by_name'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea) IS
	'the new tuple of a pgoutput INSERT or UPDATE message as a row of the template''s type, columns matched by name to the relation message';

CREATE FUNCTION sessionize.sessionize_pgoutput_problem(data bytea, template anyelement, relation bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'pgoutput_problem'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) IS
	'why a pgoutput change cannot be read as a row of the template''s type (its columns do not match), or NULL';

-- The source tables of logical pipelines are in two publications: one that
-- publishes inserts, and one that also publishes updates, for pipelines that
-- take updates as events.  Publishing updates makes PostgreSQL refuse UPDATE
-- and DELETE on a table without a replica identity, so a table is in the
-- second only when a pipeline asks for it.  Both must exist before any
-- pipeline's slot: pgoutput looks publications up as of the transaction it
-- decodes, and fails on one created after the slot.  A publication of these
-- names that exists already belongs to someone else: it is never adopted.
DO $$
DECLARE
	messages text := pg_catalog.current_setting('client_min_messages');
	publication record;
BEGIN
	FOR publication IN
		SELECT * FROM (VALUES ('sessionize_pipelines', 'insert'),
							  ('sessionize_pipeline_updates', 'insert, update')) p(name, publish)
	LOOP
		IF EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) publication.name) THEN
			RAISE EXCEPTION 'publication "%" already exists', publication.name
				USING ERRCODE = 'duplicate_object',
					  DETAIL = 'sessionize creates its publications itself and never adopts one that exists.',
					  HINT = 'Drop the publication (it may be left from an earlier installation of sessionize), then create the extension.';
		END IF;
		-- without wal_level = logical PostgreSQL warns; that is for create_pipeline() to say
		PERFORM pg_catalog.set_config('client_min_messages', 'error', true);
		EXECUTE pg_catalog.format('CREATE PUBLICATION %I WITH (publish = %L)', publication.name, publication.publish);
		PERFORM pg_catalog.set_config('client_min_messages', messages, true);
	END LOOP;
END $$;

-- Catalog ---------------------------------------------------------------------

CREATE TABLE sessionize.pipelines (
	name text PRIMARY KEY,
	source regclass NOT NULL,
	key_column name NOT NULL,
	time_column name NOT NULL,
	gap interval NOT NULL,
	allowed_lateness interval,
	dedup_window interval,
	fingerprint_exclude text[] NOT NULL DEFAULT '{}',
	type_column name,
	source_kind text NOT NULL DEFAULT 'table' CHECK (source_kind IN ('table', 'logical')),
	updates_as_events boolean NOT NULL DEFAULT false,
	-- a jsonb column of the source: key, time and type columns name its fields
	payload_column name,
	state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- a pipeline's incarnation: a pipeline dropped and created again is another
	id bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE NOT NULL,
	-- the role whose rights every batch runs with
	owner regrole NOT NULL,
	-- the owner may be a superuser although the source's owner is not
	allow_superuser boolean NOT NULL DEFAULT false,
	-- the zone of times read without an offset and of the days of intervals
	time_zone text NOT NULL DEFAULT 'UTC'
);
COMMENT ON TABLE sessionize.pipelines IS 'pipelines: where their events come from and how they are sessionized';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipelines', '');
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipelines_id_seq', '');

CREATE TABLE sessionize.pipeline_state (
	pipeline text PRIMARY KEY REFERENCES sessionize.pipelines ON DELETE CASCADE ON UPDATE CASCADE,
	max_event_time timestamptz,
	watermark timestamptz,
	last_event_time timestamptz,
	consumed bigint NOT NULL DEFAULT 0,
	merged bigint NOT NULL DEFAULT 0,
	duplicates bigint NOT NULL DEFAULT 0,
	late bigint NOT NULL DEFAULT 0,
	dead_lettered bigint NOT NULL DEFAULT 0,
	batches bigint NOT NULL DEFAULT 0,
	last_batch_at timestamptz,
	last_error text,
	last_error_at timestamptz,
	failures integer NOT NULL DEFAULT 0,
	-- logical sources: the last change applied, as (commit LSN of its
	-- transaction, LSN of the change), and how far the slot may be advanced
	checkpoint_commit_lsn pg_lsn,
	checkpoint_lsn pg_lsn,
	-- the rows of one COPY share an LSN: how many at checkpoint_lsn are applied
	checkpoint_lsn_row bigint,
	slot_advance_to pg_lsn,
	-- how many times alter_pipeline() added measures: a stored session keeps
	-- the version its earliest event came under (measured_since), and a
	-- measure added later than that is NULL for it
	measures_version integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE sessionize.pipeline_state IS 'progress of each pipeline, updated in the transaction of each batch';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipeline_state', '');

CREATE TABLE sessionize.dead_letter (
	id bigserial PRIMARY KEY,
	pipeline text NOT NULL,
	event jsonb NOT NULL,
	error text NOT NULL,
	failed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX dead_letter_pipeline ON sessionize.dead_letter (pipeline, failed_at);
COMMENT ON TABLE sessionize.dead_letter IS 'events a pipeline could not use, with the reason';
SELECT pg_catalog.pg_extension_config_dump('sessionize.dead_letter', '');

