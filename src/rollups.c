/*-------------------------------------------------------------------------
 *
 * rollups.c
 *	  The KPI rollups of a pipeline, moved by each batch in its transaction.
 *
 * A batch replaces stored sessions by merged ones (sink_sessions.c); the
 * rollups (46_pipeline_results.sql) take the replaced sessions with sign -1
 * and the merged ones with sign +1, per grain (hour, day) and bucket (the
 * UTC start of the hour or day a session started in).  Each rollup table
 * is a set of counters: one statement reads the rows the deltas reach by
 * their primary key, deletes those that fall to zero sessions and upserts
 * the others with their new values, so that every row equals the same
 * aggregate over the stored sessions.  Distinct users are counted when a
 * key's sessions in a bucket rise from or fall to zero.
 *
 * The statement runs as the extension's owner, like the sink's; it names
 * every object with its schema and every operator with pg_catalog's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(duration_bin);

/* Duration bins of relative width 2%: gamma = (1 + 0.02) / (1 - 0.02). */
#define DURATION_GAMMA (1.02 / 0.98)

/*
 * The bin of a duration in microseconds: -1 for none, otherwise the i with
 * gamma^(i-1) < duration <= gamma^i.
 */
static int32
rollup_duration_bin(int64 duration)
{
	if (duration <= 0)
		return -1;
	return (int32) ceil(log((double) duration) / log(DURATION_GAMMA));
}

/* sessionize_duration_bin(bigint): what the bulk fill bins with */
Datum
duration_bin(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(rollup_duration_bin(PG_GETARG_INT64(0)));
}

/* Whether a measure is summed by the rollups, and how. */
static bool
rolled_up(const PipelineMeasure *measure, bool *is_bool)
{
	*is_bool = measure->input.kind == MEASURE_BOOL_OR || measure->input.kind == MEASURE_BOOL_AND;
	return *is_bool || measure->input.kind == MEASURE_COUNT_ROWS || measure->input.kind == MEASURE_COUNT ||
		measure->input.kind == MEASURE_SUM;
}

/*
 * Appends the CTEs that move one rollup table by the deltas of CTE <cte>_delta,
 * which has its key columns and its value columns; the first value counts
 * sessions (or events), and a row without any is deleted.
 */
static void
append_counters(StringInfo sql, const char *cte, const char *table, const char **keys, int key_count,
				const char **values, int value_count)
{
	appendStringInfo(sql, ", %s_old AS (SELECT d.*, o.row", cte);
	for (int v = 0; v < value_count; v++)
		appendStringInfo(sql, ", COALESCE(o.%s, 0) AS old_%s", values[v], values[v]);
	appendStringInfo(sql, " FROM %s_delta d LEFT JOIN LATERAL (SELECT t.ctid AS row", cte);
	for (int v = 0; v < value_count; v++)
		appendStringInfo(sql, ", t.%s", values[v]);
	appendStringInfo(sql, " FROM %s t WHERE ", table);
	for (int k = 0; k < key_count; k++)
		appendStringInfo(sql, "%st.%s OPERATOR(pg_catalog.=) d.%s", k > 0 ? " AND " : "", keys[k], keys[k]);
	appendStringInfoString(sql, ") o ON true WHERE ");
	for (int v = 0; v < value_count; v++)
		appendStringInfo(sql, "%sd.%s OPERATOR(pg_catalog.<>) 0", v > 0 ? " OR " : "", values[v]);
	appendStringInfo(sql, "), %s_gone AS (DELETE FROM %s t WHERE t.ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
					 "SELECT o.row FROM %s_old o WHERE o.row IS NOT NULL"
					 " AND o.old_%s OPERATOR(pg_catalog.+) o.%s OPERATOR(pg_catalog.=) 0)))",
					 cte, table, cte, values[0], values[0]);
	appendStringInfo(sql, ", %s_set AS (INSERT INTO %s (", cte, table);
	for (int k = 0; k < key_count; k++)
		appendStringInfo(sql, "%s, ", keys[k]);
	for (int v = 0; v < value_count; v++)
		appendStringInfo(sql, "%s%s", v > 0 ? ", " : "", values[v]);
	appendStringInfoString(sql, ") SELECT ");
	for (int k = 0; k < key_count; k++)
		appendStringInfo(sql, "o.%s, ", keys[k]);
	for (int v = 0; v < value_count; v++)
		appendStringInfo(sql, "%so.old_%s OPERATOR(pg_catalog.+) o.%s", v > 0 ? ", " : "", values[v], values[v]);
	appendStringInfo(sql, " FROM %s_old o WHERE o.old_%s OPERATOR(pg_catalog.+) o.%s OPERATOR(pg_catalog.<>) 0"
					 " ON CONFLICT (", cte, values[0], values[0]);
	for (int k = 0; k < key_count; k++)
		appendStringInfo(sql, "%s%s", k > 0 ? ", " : "", keys[k]);
	appendStringInfoString(sql, ") DO UPDATE SET ");
	for (int v = 0; v < value_count; v++)
		appendStringInfo(sql, "%s%s = excluded.%s", v > 0 ? ", " : "", values[v], values[v]);
	appendStringInfoChar(sql, ')');
}

/* A rollup table of the batch's pipeline, qualified and quoted. */
static char *
rollup_table(const PipelineBatch *batch, const char *what)
{
	return psprintf("sessionize.%s", quote_identifier(psprintf("%s_kpi_%s", batch->name, what)));
}

static Datum
make_array(Datum *values, bool *nulls, int count, Oid element_type)
{
	int16		length;
	bool		byval;
	char		align;

	get_typlenbyvalalign(element_type, &length, &byval, &align);
	return PointerGetDatum(construct_md_array(values, nulls, 1, &count, (int[]) {1}, element_type,
											  length, byval, align));
}

/*
 * Moves the pipeline's rollups, if it keeps them, by what the batch does:
 * the touched stored sessions go, the merged sessions come.  Call before
 * the stored sessions are deleted or written.
 */
void
rollups_write(PipelineBatch *batch, KeyGroup *groups, int group_count, MergedSession *merged, int merged_count)
{
	const PipelineMeasures *measures = batch->measures;
	Oid			namespace = get_namespace_oid("sessionize", false);
	int			rows = merged_count;
	int			row = 0;
	int			rolled = 0;
	int		   *rolled_measures = palloc(sizeof(int) * Max(measures->count, 1));
	bool	   *rolled_bool = palloc(sizeof(bool) * Max(measures->count, 1));
	int			parameters;
	Datum	   *columns[7];
	bool	   *type_counts_null;
	Datum	  **measure_columns;
	bool	  **measure_nulls;
	Oid		   *types;
	Datum	   *values;
	StringInfoData sql;
	int			status;

	if (!OidIsValid(get_relname_relid(psprintf("%s_kpi_buckets", batch->name), namespace)))
		return;
	for (int g = 0; g < group_count; g++)
		for (int s = 0; s < groups[g].stored_count; s++)
			if (groups[g].stored[s].touched)
				rows++;
	if (rows == 0)
		return;
	for (int m = 0; m < measures->count; m++)
		if (rolled_up(&measures->items[m], &rolled_bool[rolled]))
			rolled_measures[rolled++] = m;

	for (int c = 0; c < 7; c++)
		columns[c] = palloc(sizeof(Datum) * rows);
	type_counts_null = palloc(sizeof(bool) * rows);
	measure_columns = palloc(sizeof(Datum *) * Max(rolled, 1));
	measure_nulls = palloc(sizeof(bool *) * Max(rolled, 1));
	for (int r = 0; r < rolled; r++)
	{
		measure_columns[r] = palloc(sizeof(Datum) * rows);
		measure_nulls[r] = palloc(sizeof(bool) * rows);
	}

	/* the replaced sessions with sign -1, then the merged with +1 */
	for (int g = 0; g < group_count; g++)
		for (int s = 0; s < groups[g].stored_count; s++)
		{
			StoredSession *stored = &groups[g].stored[s];

			if (!stored->touched)
				continue;
			columns[0][row] = Int32GetDatum(-1);
			columns[1][row] = groups[g].key;
			columns[2][row] = TimestampTzGetDatum(stored->session.started_at);
			columns[3][row] = Int64GetDatum(stored->session.ended_at - stored->session.started_at);
			columns[4][row] = Int32GetDatum(rollup_duration_bin(stored->session.ended_at - stored->session.started_at));
			columns[5][row] = Int64GetDatum(stored->session.events);
			columns[6][row] = PointerGetDatum(stored->type_counts);
			type_counts_null[row] = stored->type_counts == NULL;
			for (int r = 0; r < rolled; r++)
			{
				const PipelineMeasure *measure = &measures->items[rolled_measures[r]];

				measure_columns[r][row] = measure_result(&measure->input, &stored->measures[rolled_measures[r]],
														 &measure_nulls[r][row]);
				if (stored->measured_since < measure->added_in)
					measure_nulls[r][row] = true;
			}
			row++;
		}
	for (int m = 0; m < merged_count; m++, row++)
	{
		columns[0][row] = Int32GetDatum(1);
		columns[1][row] = merged[m].key;
		columns[2][row] = TimestampTzGetDatum(merged[m].session.started_at);
		columns[3][row] = Int64GetDatum(merged[m].session.ended_at - merged[m].session.started_at);
		columns[4][row] = Int32GetDatum(rollup_duration_bin(merged[m].session.ended_at - merged[m].session.started_at));
		columns[5][row] = Int64GetDatum(merged[m].session.events);
		columns[6][row] = PointerGetDatum(merged[m].type_counts);
		type_counts_null[row] = merged[m].type_counts == NULL;
		for (int r = 0; r < rolled; r++)
		{
			const PipelineMeasure *measure = &measures->items[rolled_measures[r]];

			measure_columns[r][row] = measure_result(&measure->input, &merged[m].measures[rolled_measures[r]],
													 &measure_nulls[r][row]);
			if (merged[m].measured_since < measure->added_in)
				measure_nulls[r][row] = true;
		}
	}

	parameters = 7 + rolled;
	types = palloc(sizeof(Oid) * parameters);
	values = palloc(sizeof(Datum) * parameters);
	types[0] = INT4ARRAYOID;
	values[0] = make_array(columns[0], NULL, rows, INT4OID);
	types[1] = get_array_type(batch->key_type);
	values[1] = make_array(columns[1], NULL, rows, batch->key_type);
	types[2] = TIMESTAMPTZARRAYOID;
	values[2] = make_array(columns[2], NULL, rows, TIMESTAMPTZOID);
	types[3] = INT8ARRAYOID;
	values[3] = make_array(columns[3], NULL, rows, INT8OID);
	types[4] = INT4ARRAYOID;
	values[4] = make_array(columns[4], NULL, rows, INT4OID);
	types[5] = INT8ARRAYOID;
	values[5] = make_array(columns[5], NULL, rows, INT8OID);
	types[6] = JSONBARRAYOID;
	values[6] = make_array(columns[6], type_counts_null, rows, JSONBOID);
	for (int r = 0; r < rolled; r++)
	{
		Oid			result_type = measures->items[rolled_measures[r]].result_type;

		types[7 + r] = get_array_type(result_type);
		values[7 + r] = make_array(measure_columns[r], measure_nulls[r], rows, result_type);
	}

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "WITH d AS (SELECT pg_catalog.unnest($1) AS sign, pg_catalog.unnest($2) AS key,"
						   " pg_catalog.unnest($3) AS session_start, pg_catalog.unnest($4) AS duration,"
						   " pg_catalog.unnest($5) AS bin, pg_catalog.unnest($6) AS events,"
						   " pg_catalog.unnest($7) AS type_counts");
	for (int r = 0; r < rolled; r++)
		appendStringInfo(&sql, ", pg_catalog.unnest($%d) AS m%d", 8 + r, r);
	appendStringInfoString(&sql,
						   "), g AS (SELECT r.grain, pg_catalog.date_trunc(r.grain, d.session_start, 'UTC') AS bucket, d.*"
						   " FROM d CROSS JOIN (VALUES ('hour'::pg_catalog.text), ('day'::pg_catalog.text)) r(grain))"
						   ", users_delta AS (SELECT g.grain, g.bucket, g.key, pg_catalog.sum(g.sign)::pg_catalog.int8 AS sessions"
						   " FROM g GROUP BY g.grain, g.bucket, g.key)");
	append_counters(&sql, "users", rollup_table(batch, "users"),
					(const char *[]) {"grain", "bucket", "key"}, 3, (const char *[]) {"sessions"}, 1);
	appendStringInfoString(&sql,
						   ", buckets_delta AS (SELECT g.grain, g.bucket, pg_catalog.sum(g.sign)::pg_catalog.int8 AS sessions,"
						   " COALESCE(u.users, 0)::pg_catalog.int8 AS users,"
						   " pg_catalog.sum(g.sign OPERATOR(pg_catalog.*) g.events)::pg_catalog.int8 AS events,"
						   " COALESCE(pg_catalog.sum(g.sign) FILTER (WHERE g.events OPERATOR(pg_catalog.=) 1), 0)::pg_catalog.int8 AS bounced,"
						   " pg_catalog.sum(g.sign OPERATOR(pg_catalog.*) g.duration)::pg_catalog.int8 AS duration"
						   " FROM g LEFT JOIN (SELECT o.grain, o.bucket, pg_catalog.sum(CASE WHEN o.old_sessions OPERATOR(pg_catalog.=) 0 THEN 1"
						   " WHEN o.old_sessions OPERATOR(pg_catalog.+) o.sessions OPERATOR(pg_catalog.=) 0 THEN -1 ELSE 0 END) AS users"
						   " FROM users_old o GROUP BY o.grain, o.bucket) u"
						   " ON u.grain OPERATOR(pg_catalog.=) g.grain AND u.bucket OPERATOR(pg_catalog.=) g.bucket"
						   " GROUP BY g.grain, g.bucket, u.users)");
	append_counters(&sql, "buckets", rollup_table(batch, "buckets"), (const char *[]) {"grain", "bucket"}, 2,
					(const char *[]) {"sessions", "users", "events", "bounced", "duration"}, 5);
	appendStringInfoString(&sql,
						   ", durations_delta AS (SELECT g.grain, g.bucket, g.bin, pg_catalog.sum(g.sign)::pg_catalog.int8 AS sessions"
						   " FROM g GROUP BY g.grain, g.bucket, g.bin)");
	append_counters(&sql, "durations", rollup_table(batch, "durations"),
					(const char *[]) {"grain", "bucket", "bin"}, 3, (const char *[]) {"sessions"}, 1);
	appendStringInfoString(&sql,
						   ", types_delta AS (SELECT g.grain, g.bucket, t.key AS type,"
						   " pg_catalog.sum(g.sign OPERATOR(pg_catalog.*) t.value::pg_catalog.int8)::pg_catalog.int8 AS events"
						   " FROM g CROSS JOIN LATERAL pg_catalog.jsonb_each_text(g.type_counts) t"
						   " GROUP BY g.grain, g.bucket, t.key)");
	append_counters(&sql, "types", rollup_table(batch, "types"),
					(const char *[]) {"grain", "bucket", "type"}, 3, (const char *[]) {"events"}, 1);
	if (rolled > 0)
	{
		appendStringInfoString(&sql,
							   ", measures_delta AS (SELECT g.grain, g.bucket, m.measure, pg_catalog.sum(g.sign)::pg_catalog.int8 AS sessions,"
							   " pg_catalog.sum(g.sign OPERATOR(pg_catalog.*) m.value) AS total"
							   " FROM g CROSS JOIN LATERAL (VALUES ");
		for (int r = 0; r < rolled; r++)
		{
			const char *name = quote_literal_cstr(measures->items[rolled_measures[r]].name);

			if (rolled_bool[r])
				appendStringInfo(&sql, "%s(%s::pg_catalog.text, CASE WHEN g.m%d THEN 1 WHEN NOT g.m%d THEN 0 END::pg_catalog.numeric)",
								 r > 0 ? ", " : "", name, r, r);
			else
				appendStringInfo(&sql, "%s(%s::pg_catalog.text, g.m%d::pg_catalog.numeric)", r > 0 ? ", " : "", name, r);
		}
		appendStringInfoString(&sql, ") m(measure, value) WHERE m.value IS NOT NULL GROUP BY g.grain, g.bucket, m.measure)");
		append_counters(&sql, "measures", rollup_table(batch, "measures"),
						(const char *[]) {"grain", "bucket", "measure"}, 3, (const char *[]) {"sessions", "total"}, 2);
	}
	appendStringInfoString(&sql, " SELECT pg_catalog.count(*) FROM buckets_old");

	status = SPI_execute_with_args(sql.data, parameters, types, values, NULL, false, 0);
	if (status != SPI_OK_SELECT)
		elog(ERROR, "the rollups of pipeline \"%s\" could not be moved: %s", batch->name,
			 SPI_result_code_string(status));
}
