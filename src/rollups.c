/*-------------------------------------------------------------------------
 *
 * rollups.c
 *	  The KPI rollups of a pipeline, moved by each batch in its transaction.
 *
 * A batch replaces stored sessions by merged ones (sink_sessions.c); the
 * rollups (46_pipeline_results.sql) take the replaced sessions with sign -1
 * and the merged ones with sign +1, per grain (hour, day) and bucket (the
 * UTC start of the hour or day a session started in).  Each rollup table
 * is a set of counters.  The differences are summed here per row (most
 * cancel: a session extended within its hour), then one statement reads
 * the rows they reach by their primary key, deletes those that fall to
 * zero sessions and upserts the others with their new values, so that
 * every row equals the same aggregate over the stored sessions.  Distinct
 * users are counted when a key's sessions in a bucket rise from or fall
 * to zero.
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
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

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

/*
 * What a batch changes in one row of a rollup table: the row's key (grain,
 * bucket, and a bin, a type or a measure) and the differences of its values.
 */
typedef struct RollupDelta
{
	int			grain;			/* 0: hour, 1: day */
	TimestampTz bucket;
	int32		bin;
	int			measure;
	char	   *type;			/* NUL-terminated; NULL but in types */
	int64		sessions;
	int64		events;
	int64		bounced;
	int64		duration;
	Datum		total;			/* numeric; measures only */
} RollupDelta;

typedef struct RollupDeltas
{
	RollupDelta *items;
	int			count;
	int			capacity;
} RollupDeltas;

static const char *const grain_names[2] = {"hour", "day"};
static const int64 grain_units[2] = {USECS_PER_HOUR, USECS_PER_DAY};

static RollupDelta *
delta_add(RollupDeltas *deltas, int grain, TimestampTz bucket)
{
	RollupDelta *delta;

	if (deltas->count == deltas->capacity)
	{
		deltas->capacity = Max(64, deltas->capacity * 2);
		deltas->items = deltas->items == NULL ? palloc(sizeof(RollupDelta) * deltas->capacity)
			: repalloc_huge(deltas->items, sizeof(RollupDelta) * deltas->capacity);
	}
	delta = &deltas->items[deltas->count++];
	memset(delta, 0, sizeof(RollupDelta));
	delta->grain = grain;
	delta->bucket = bucket;
	return delta;
}

static int
delta_order(const void *a, const void *b)
{
	const RollupDelta *x = a;
	const RollupDelta *y = b;

	if (x->grain != y->grain)
		return x->grain < y->grain ? -1 : 1;
	if (x->bucket != y->bucket)
		return x->bucket < y->bucket ? -1 : 1;
	if (x->bin != y->bin)
		return x->bin < y->bin ? -1 : 1;
	if (x->measure != y->measure)
		return x->measure < y->measure ? -1 : 1;
	if (x->type == NULL || y->type == NULL)
		return (x->type != NULL) - (y->type != NULL);
	return strcmp(x->type, y->type);
}

/* Sorts the deltas and sums those of one row; keeps rows whose sums are 0. */
static void
deltas_combine(RollupDeltas *deltas, bool totals)
{
	int			kept = 0;

	if (deltas->count == 0)
		return;
	qsort(deltas->items, deltas->count, sizeof(RollupDelta), delta_order);
	for (int i = 1; i < deltas->count; i++)
	{
		RollupDelta *into = &deltas->items[kept];
		RollupDelta *next = &deltas->items[i];

		if (delta_order(into, next) != 0)
		{
			deltas->items[++kept] = *next;
			continue;
		}
		into->sessions += next->sessions;
		into->events += next->events;
		into->bounced += next->bounced;
		into->duration += next->duration;
		if (totals)
			into->total = DirectFunctionCall2(numeric_add, into->total, next->total);
	}
	deltas->count = kept + 1;
}

/* What a batch changes in a pipeline's rollups, one list per table. */
typedef struct RollupChanges
{
	RollupDeltas buckets;
	RollupDeltas durations;
	RollupDeltas types;
	RollupDeltas measures;
	RollupDeltas key_buckets;	/* the sessions of the current key */
	const PipelineMeasures *pipeline_measures;
	int			rolled;			/* measures summed */
	const int  *rolled_measures;	/* their places in the pipeline's */
	const bool *rolled_bool;
} RollupChanges;

/* A measure's value as the rollups sum it, a numeric; false when NULL. */
static bool
rolled_value(const PipelineMeasure *measure, const MeasureState *state, bool is_bool, Datum *value)
{
	bool		isnull;
	Datum		result = measure_result(&measure->input, state, &isnull);

	if (isnull)
		return false;
	if (is_bool)
		*value = NumericGetDatum(int64_to_numeric(DatumGetBool(result) ? 1 : 0));
	else if (measure->result_type == INT8OID)
		*value = NumericGetDatum(int64_to_numeric(DatumGetInt64(result)));
	else
		*value = result;
	return true;
}

/*
 * Adds a session with its sign (-1 replaced, +1 written) to the changes, per
 * grain: UTC hours and days are whole multiples of an hour and a day since
 * the epoch of timestamps, as date_trunc(..., 'UTC') takes them.
 */
static void
add_session(RollupChanges *changes, int sign, const SessionInterval *session, Jsonb *type_counts,
			const MeasureState *states, int32 measured_since)
{
	int64		duration = session->ended_at - session->started_at;

	for (int grain = 0; grain < 2; grain++)
	{
		int64		unit = grain_units[grain];
		TimestampTz bucket = session->started_at - ((session->started_at % unit) + unit) % unit;
		RollupDelta *delta;

		delta = delta_add(&changes->buckets, grain, bucket);
		delta->sessions = sign;
		delta->events = sign * session->events;
		delta->bounced = session->events == 1 ? sign : 0;
		delta->duration = sign * duration;
		delta_add(&changes->key_buckets, grain, bucket)->sessions = sign;
		delta = delta_add(&changes->durations, grain, bucket);
		delta->bin = rollup_duration_bin(duration);
		delta->sessions = sign;
		if (type_counts != NULL)
		{
			JsonbIterator *iterator = JsonbIteratorInit(&type_counts->root);
			JsonbValue	value;
			JsonbIteratorToken token;

			delta = NULL;
			while ((token = JsonbIteratorNext(&iterator, &value, true)) != WJB_DONE)
			{
				if (token == WJB_KEY)
				{
					delta = delta_add(&changes->types, grain, bucket);
					delta->type = pnstrdup(value.val.string.val, value.val.string.len);
				}
				else if (token == WJB_VALUE && delta != NULL)
				{
					if (value.type != jbvNumeric)
						elog(ERROR, "a stored count of events per type is not a number");
					delta->events = sign * DatumGetInt64(DirectFunctionCall1(numeric_int8,
																			 NumericGetDatum(value.val.numeric)));
				}
			}
		}
		for (int r = 0; r < changes->rolled; r++)
		{
			const PipelineMeasure *measure = &changes->pipeline_measures->items[changes->rolled_measures[r]];
			Datum		value;

			if (measured_since < measure->added_in ||
				!rolled_value(measure, &states[changes->rolled_measures[r]], changes->rolled_bool[r], &value))
				continue;
			delta = delta_add(&changes->measures, grain, bucket);
			delta->measure = r;
			delta->sessions = sign;
			delta->total = sign > 0 ? value : DirectFunctionCall1(numeric_uminus, value);
		}
	}
}

/* The deltas' keys and values as array parameters of the statement. */
static void
grain_bucket_arrays(const RollupDeltas *deltas, Datum *grains, Datum *buckets)
{
	Datum	   *grain_values = palloc(sizeof(Datum) * Max(deltas->count, 1));
	Datum	   *bucket_values = palloc(sizeof(Datum) * Max(deltas->count, 1));

	for (int i = 0; i < deltas->count; i++)
	{
		grain_values[i] = CStringGetTextDatum(grain_names[deltas->items[i].grain]);
		bucket_values[i] = TimestampTzGetDatum(deltas->items[i].bucket);
	}
	*grains = sessionize_make_array(grain_values, NULL, deltas->count, TEXTOID);
	*buckets = sessionize_make_array(bucket_values, NULL, deltas->count, TIMESTAMPTZOID);
}

static Datum
int64_array(const RollupDeltas *deltas, size_t offset)
{
	Datum	   *values = palloc(sizeof(Datum) * Max(deltas->count, 1));

	for (int i = 0; i < deltas->count; i++)
		values[i] = Int64GetDatum(*(int64 *) ((char *) &deltas->items[i] + offset));
	return sessionize_make_array(values, NULL, deltas->count, INT8OID);
}

/* Keeps the deltas that change something. */
static void
drop_zero_deltas(RollupDeltas *deltas)
{
	int			kept = 0;

	for (int i = 0; i < deltas->count; i++)
		if (deltas->items[i].sessions != 0 || deltas->items[i].events != 0)
			deltas->items[kept++] = deltas->items[i];
	deltas->count = kept;
}

/*
 * Moves the pipeline's rollups, if it keeps them, by what the batch does:
 * the touched stored sessions go, the merged sessions come.  Call before
 * the stored sessions are deleted or written.  The differences are summed
 * here, so that the statement reads and writes each row it changes once.
 */
void
rollups_write(PipelineBatch *batch, KeyGroup *groups, int group_count, MergedSession *merged, int merged_count)
{
	const PipelineMeasures *measures = batch->measures;
	Oid			namespace = get_namespace_oid("sessionize", false);
	int		   *rolled_measures = palloc(sizeof(int) * Max(measures->count, 1));
	bool	   *rolled_bool = palloc(sizeof(bool) * Max(measures->count, 1));
	RollupChanges changes = {0};
	RollupDeltas users = {0};
	Datum	   *user_keys = NULL;
	int			keys_capacity = 0;
	int			next_merged = 0;
	Datum	   *column;
	Oid			types[23];
	Datum		values[23];
	StringInfoData sql;
	int			status;

	if (!OidIsValid(get_relname_relid(psprintf("%s_kpi_buckets", batch->name), namespace)))
		return;
	changes.pipeline_measures = measures;
	for (int m = 0; m < measures->count; m++)
		if (rolled_up(&measures->items[m], &rolled_bool[changes.rolled]))
			rolled_measures[changes.rolled++] = m;
	changes.rolled_measures = rolled_measures;
	changes.rolled_bool = rolled_bool;

	/*
	 * Per key: its replaced sessions, then its merged ones, which batch.c
	 * writes key by key in the order of the groups, with the group's key.
	 * A key's sessions per bucket give the rows of its users table.
	 */
	for (int g = 0; g < group_count; g++)
	{
		changes.key_buckets.count = 0;
		for (int s = 0; s < groups[g].stored_count; s++)
		{
			StoredSession *stored = &groups[g].stored[s];

			if (stored->touched)
				add_session(&changes, -1, &stored->session, stored->type_counts, stored->measures,
							stored->measured_since);
		}
		for (; next_merged < merged_count && merged[next_merged].key == groups[g].key; next_merged++)
			add_session(&changes, 1, &merged[next_merged].session, merged[next_merged].type_counts,
						merged[next_merged].measures, merged[next_merged].measured_since);
		deltas_combine(&changes.key_buckets, false);
		for (int i = 0; i < changes.key_buckets.count; i++)
		{
			if (changes.key_buckets.items[i].sessions == 0)
				continue;
			*delta_add(&users, 0, 0) = changes.key_buckets.items[i];
			if (users.count > keys_capacity)
			{
				keys_capacity = users.capacity;
				user_keys = user_keys == NULL ? palloc(sizeof(Datum) * keys_capacity)
					: repalloc_huge(user_keys, sizeof(Datum) * keys_capacity);
			}
			user_keys[users.count - 1] = groups[g].key;
		}
	}
	if (next_merged != merged_count)
		elog(ERROR, "the merged sessions of a batch are not in the order of its keys");
	if (changes.buckets.count == 0)
		return;
	deltas_combine(&changes.buckets, false);
	deltas_combine(&changes.durations, false);
	deltas_combine(&changes.types, false);
	deltas_combine(&changes.measures, true);
	drop_zero_deltas(&changes.durations);
	drop_zero_deltas(&changes.types);

	/* $1-$4 users, $5-$10 buckets, $11-$14 durations, $15-$18 types, $19-$23 measures */
	for (int p = 0; p < 23; p++)
		types[p] = INT8ARRAYOID;
	types[0] = types[4] = types[10] = types[14] = types[18] = TEXTARRAYOID;
	types[1] = types[5] = types[11] = types[15] = types[19] = TIMESTAMPTZARRAYOID;
	grain_bucket_arrays(&users, &values[0], &values[1]);
	types[2] = get_array_type(batch->key_type);
	values[2] = sessionize_make_array(user_keys, NULL, users.count, batch->key_type);
	values[3] = int64_array(&users, offsetof(RollupDelta, sessions));
	grain_bucket_arrays(&changes.buckets, &values[4], &values[5]);
	values[6] = int64_array(&changes.buckets, offsetof(RollupDelta, sessions));
	values[7] = int64_array(&changes.buckets, offsetof(RollupDelta, events));
	values[8] = int64_array(&changes.buckets, offsetof(RollupDelta, bounced));
	values[9] = int64_array(&changes.buckets, offsetof(RollupDelta, duration));
	grain_bucket_arrays(&changes.durations, &values[10], &values[11]);
	types[12] = INT4ARRAYOID;
	column = palloc(sizeof(Datum) * Max(changes.durations.count, 1));
	for (int i = 0; i < changes.durations.count; i++)
		column[i] = Int32GetDatum(changes.durations.items[i].bin);
	values[12] = sessionize_make_array(column, NULL, changes.durations.count, INT4OID);
	values[13] = int64_array(&changes.durations, offsetof(RollupDelta, sessions));
	grain_bucket_arrays(&changes.types, &values[14], &values[15]);
	types[16] = TEXTARRAYOID;
	column = palloc(sizeof(Datum) * Max(changes.types.count, 1));
	for (int i = 0; i < changes.types.count; i++)
		column[i] = CStringGetTextDatum(changes.types.items[i].type);
	values[16] = sessionize_make_array(column, NULL, changes.types.count, TEXTOID);
	values[17] = int64_array(&changes.types, offsetof(RollupDelta, events));
	grain_bucket_arrays(&changes.measures, &values[18], &values[19]);
	types[20] = TEXTARRAYOID;
	column = palloc(sizeof(Datum) * Max(changes.measures.count, 1));
	for (int i = 0; i < changes.measures.count; i++)
		column[i] = CStringGetTextDatum(measures->items[rolled_measures[changes.measures.items[i].measure]].name);
	values[20] = sessionize_make_array(column, NULL, changes.measures.count, TEXTOID);
	values[21] = int64_array(&changes.measures, offsetof(RollupDelta, sessions));
	types[22] = NUMERICARRAYOID;
	column = palloc(sizeof(Datum) * Max(changes.measures.count, 1));
	for (int i = 0; i < changes.measures.count; i++)
		column[i] = changes.measures.items[i].total;
	values[22] = sessionize_make_array(column, NULL, changes.measures.count, NUMERICOID);

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "WITH users_delta AS (SELECT pg_catalog.unnest($1) AS grain, pg_catalog.unnest($2) AS bucket,"
						   " pg_catalog.unnest($3) AS key, pg_catalog.unnest($4) AS sessions)");
	append_counters(&sql, "users", rollup_table(batch, "users"),
					(const char *[]) {"grain", "bucket", "key"}, 3, (const char *[]) {"sessions"}, 1);
	/* a key's first session in a bucket adds a user, its last one leaving takes one */
	appendStringInfoString(&sql,
						   ", buckets_delta AS (SELECT b.grain, b.bucket, b.sessions, COALESCE(u.users, 0) AS users,"
						   " b.events, b.bounced, b.duration"
						   " FROM (SELECT pg_catalog.unnest($5) AS grain, pg_catalog.unnest($6) AS bucket,"
						   " pg_catalog.unnest($7) AS sessions, pg_catalog.unnest($8) AS events,"
						   " pg_catalog.unnest($9) AS bounced, pg_catalog.unnest($10) AS duration) b"
						   " LEFT JOIN (SELECT o.grain, o.bucket, pg_catalog.sum(CASE WHEN o.old_sessions OPERATOR(pg_catalog.=) 0 THEN 1"
						   " WHEN o.old_sessions OPERATOR(pg_catalog.+) o.sessions OPERATOR(pg_catalog.=) 0 THEN -1 ELSE 0 END)::pg_catalog.int8 AS users"
						   " FROM users_old o GROUP BY o.grain, o.bucket) u"
						   " ON u.grain OPERATOR(pg_catalog.=) b.grain AND u.bucket OPERATOR(pg_catalog.=) b.bucket)");
	append_counters(&sql, "buckets", rollup_table(batch, "buckets"), (const char *[]) {"grain", "bucket"}, 2,
					(const char *[]) {"sessions", "users", "events", "bounced", "duration"}, 5);
	appendStringInfoString(&sql,
						   ", durations_delta AS (SELECT pg_catalog.unnest($11) AS grain, pg_catalog.unnest($12) AS bucket,"
						   " pg_catalog.unnest($13) AS bin, pg_catalog.unnest($14) AS sessions)");
	append_counters(&sql, "durations", rollup_table(batch, "durations"),
					(const char *[]) {"grain", "bucket", "bin"}, 3, (const char *[]) {"sessions"}, 1);
	appendStringInfoString(&sql,
						   ", types_delta AS (SELECT pg_catalog.unnest($15) AS grain, pg_catalog.unnest($16) AS bucket,"
						   " pg_catalog.unnest($17) AS type, pg_catalog.unnest($18) AS events)");
	append_counters(&sql, "types", rollup_table(batch, "types"),
					(const char *[]) {"grain", "bucket", "type"}, 3, (const char *[]) {"events"}, 1);
	appendStringInfoString(&sql,
						   ", measures_delta AS (SELECT pg_catalog.unnest($19) AS grain, pg_catalog.unnest($20) AS bucket,"
						   " pg_catalog.unnest($21) AS measure, pg_catalog.unnest($22) AS sessions,"
						   " pg_catalog.unnest($23) AS total)");
	append_counters(&sql, "measures", rollup_table(batch, "measures"),
					(const char *[]) {"grain", "bucket", "measure"}, 3, (const char *[]) {"sessions", "total"}, 2);
	appendStringInfoString(&sql, " SELECT pg_catalog.count(*) FROM buckets_old");

	status = SPI_execute_with_args(sql.data, 23, types, values, NULL, false, 0);
	if (status != SPI_OK_SELECT)
		elog(ERROR, "the rollups of pipeline \"%s\" could not be moved: %s", batch->name,
			 SPI_result_code_string(status));
}
