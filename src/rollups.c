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
#include "utils/guc.h"
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

/* The columns a batch's sessions give the rollups: one row per grain. */
typedef struct RollupRows
{
	int			count;
	int			rolled;			/* measures summed */
	const int  *rolled_measures;	/* their places in the pipeline's */
	Datum	   *columns[8];		/* grain, bucket, sign, key, duration, bin, events, type_counts */
	bool	   *type_counts_null;
	Datum	  **measures;
	bool	  **measure_nulls;
} RollupRows;

/* ts rounded down to a multiple of unit microseconds since 2000-01-01 UTC */
static TimestampTz
truncate_utc(TimestampTz ts, int64 unit)
{
	return ts - ((ts % unit) + unit) % unit;
}

/*
 * Adds a session with its sign (-1 replaced, +1 written), as an hourly and
 * a daily row: UTC hours and days are whole multiples of an hour and a day
 * since the epoch of timestamps, as date_trunc(..., 'UTC') takes them.
 */
static void
add_session(RollupRows *rows, const PipelineMeasures *measures, int sign, Datum key,
			const SessionInterval *session, Jsonb *type_counts, const MeasureState *states, int32 measured_since)
{
	int64		duration = session->ended_at - session->started_at;

	for (int grain = 0; grain < 2; grain++)
	{
		int			row = rows->count++;

		rows->columns[0][row] = CStringGetTextDatum(grain == 0 ? "hour" : "day");
		rows->columns[1][row] = TimestampTzGetDatum(truncate_utc(session->started_at,
																 grain == 0 ? USECS_PER_HOUR : USECS_PER_DAY));
		rows->columns[2][row] = Int32GetDatum(sign);
		rows->columns[3][row] = key;
		rows->columns[4][row] = Int64GetDatum(duration);
		rows->columns[5][row] = Int32GetDatum(rollup_duration_bin(duration));
		rows->columns[6][row] = Int64GetDatum(session->events);
		rows->columns[7][row] = PointerGetDatum(type_counts);
		rows->type_counts_null[row] = type_counts == NULL;
		for (int r = 0; r < rows->rolled; r++)
		{
			const PipelineMeasure *measure = &measures->items[rows->rolled_measures[r]];

			rows->measures[r][row] = measure_result(&measure->input, &states[rows->rolled_measures[r]],
													&rows->measure_nulls[r][row]);
			if (measured_since < measure->added_in)
				rows->measure_nulls[r][row] = true;
		}
	}
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
	int			sessions = merged_count;
	int			capacity;
	int		   *rolled_measures = palloc(sizeof(int) * Max(measures->count, 1));
	bool	   *rolled_bool = palloc(sizeof(bool) * Max(measures->count, 1));
	RollupRows	rows = {0};
	int			parameters;
	Oid		   *types;
	Datum	   *values;
	Oid			column_types[8] = {TEXTOID, TIMESTAMPTZOID, INT4OID, batch->key_type, INT8OID, INT4OID, INT8OID,
								   JSONBOID};
	StringInfoData sql;
	int			nest_level;
	int			status;

	if (!OidIsValid(get_relname_relid(psprintf("%s_kpi_buckets", batch->name), namespace)))
		return;
	for (int g = 0; g < group_count; g++)
		for (int s = 0; s < groups[g].stored_count; s++)
			if (groups[g].stored[s].touched)
				sessions++;
	if (sessions == 0)
		return;
	for (int m = 0; m < measures->count; m++)
		if (rolled_up(&measures->items[m], &rolled_bool[rows.rolled]))
			rolled_measures[rows.rolled++] = m;
	rows.rolled_measures = rolled_measures;
	capacity = 2 * sessions;
	for (int c = 0; c < 8; c++)
		rows.columns[c] = palloc(sizeof(Datum) * capacity);
	rows.type_counts_null = palloc(sizeof(bool) * capacity);
	rows.measures = palloc(sizeof(Datum *) * Max(rows.rolled, 1));
	rows.measure_nulls = palloc(sizeof(bool *) * Max(rows.rolled, 1));
	for (int r = 0; r < rows.rolled; r++)
	{
		rows.measures[r] = palloc(sizeof(Datum) * capacity);
		rows.measure_nulls[r] = palloc(sizeof(bool) * capacity);
	}
	for (int g = 0; g < group_count; g++)
		for (int s = 0; s < groups[g].stored_count; s++)
		{
			StoredSession *stored = &groups[g].stored[s];

			if (stored->touched)
				add_session(&rows, measures, -1, groups[g].key, &stored->session, stored->type_counts,
							stored->measures, stored->measured_since);
		}
	for (int m = 0; m < merged_count; m++)
		add_session(&rows, measures, 1, merged[m].key, &merged[m].session, merged[m].type_counts,
					merged[m].measures, merged[m].measured_since);

	parameters = 8 + rows.rolled;
	types = palloc(sizeof(Oid) * parameters);
	values = palloc(sizeof(Datum) * parameters);
	for (int c = 0; c < 8; c++)
	{
		types[c] = get_array_type(column_types[c]);
		values[c] = make_array(rows.columns[c], c == 7 ? rows.type_counts_null : NULL, rows.count, column_types[c]);
	}
	for (int r = 0; r < rows.rolled; r++)
	{
		Oid			result_type = measures->items[rolled_measures[r]].result_type;

		types[8 + r] = get_array_type(result_type);
		values[8 + r] = make_array(rows.measures[r], rows.measure_nulls[r], rows.count, result_type);
	}

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "WITH g AS (SELECT pg_catalog.unnest($1) AS grain, pg_catalog.unnest($2) AS bucket,"
						   " pg_catalog.unnest($3) AS sign, pg_catalog.unnest($4) AS key,"
						   " pg_catalog.unnest($5) AS duration, pg_catalog.unnest($6) AS bin,"
						   " pg_catalog.unnest($7) AS events, pg_catalog.unnest($8) AS type_counts");
	for (int r = 0; r < rows.rolled; r++)
		appendStringInfo(&sql, ", pg_catalog.unnest($%d) AS m%d", 9 + r, r);
	appendStringInfoString(&sql,
						   ")"
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
	if (rows.rolled > 0)
	{
		appendStringInfoString(&sql,
							   ", measures_delta AS (SELECT g.grain, g.bucket, m.measure, pg_catalog.sum(g.sign)::pg_catalog.int8 AS sessions,"
							   " pg_catalog.sum(g.sign OPERATOR(pg_catalog.*) m.value) AS total"
							   " FROM g CROSS JOIN LATERAL (VALUES ");
		for (int r = 0; r < rows.rolled; r++)
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

	/*
	 * Without JIT: the planner's guess of jsonb_each_text()'s rows makes the
	 * statement look costly enough to compile, which takes longer than it
	 * runs.
	 */
	nest_level = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	status = SPI_execute_with_args(sql.data, parameters, types, values, NULL, false, 0);
	AtEOXact_GUC(false, nest_level);
	if (status != SPI_OK_SELECT)
		elog(ERROR, "the rollups of pipeline \"%s\" could not be moved: %s", batch->name,
			 SPI_result_code_string(status));
}
