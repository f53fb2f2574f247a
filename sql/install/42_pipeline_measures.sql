-- Session measures: aggregate calls a pipeline declares over its events
-- ("first(url) AS landing_page").  src/measure_list.c reads and checks the
-- list; src/measures.c keeps each measure's state in the pipeline's tables:
-- a column of the measure's name holds its value, and first/last keep the
-- time of the value in <name>__at, approx_count_distinct its sketch in
-- <name>__sketch.

CREATE TABLE sessionize.pipeline_measures (
	pipeline text NOT NULL REFERENCES sessionize.pipelines ON DELETE CASCADE ON UPDATE CASCADE,
	position integer NOT NULL,
	name name NOT NULL,
	aggregate text NOT NULL,
	-- SQL over the event's row, measure_row; NULL for count(*)
	argument text,
	filter text,
	argument_type regtype,
	result_type regtype NOT NULL,
	-- the pipeline's measures_version that added it; 0: created with it
	added_in integer NOT NULL DEFAULT 0,
	PRIMARY KEY (pipeline, name),
	UNIQUE (pipeline, position)
);
COMMENT ON TABLE sessionize.pipeline_measures IS 'the measures each pipeline keeps per session';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipeline_measures', '');

CREATE FUNCTION sessionize.sessionize_parse_measures(source regclass, payload_column name, owner regrole, measures text,
													 OUT names text[], OUT aggregates text[], OUT arguments text[],
													 OUT filters text[], OUT argument_types regtype[],
													 OUT result_types regtype[])
AS 'MODULE_PATHNAME', 'parse_measures'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sessionize.sessionize_parse_measures(regclass, name, regrole, text) IS
	'the measures of a list of aggregate calls, checked against the source as its owner';
