/*-------------------------------------------------------------------------
 *
 * profiles.c
 *	  A pipeline's user profiles: per key, day and dimension, how often each
 *	  value was seen, and the moments of numeric values, moved by each batch
 *	  in its transaction; and the same daily rows rebuilt from a table of
 *	  past events.
 *
 * A profile (47_profiles.sql) names categorical and numeric dimensions:
 * columns of the source, or fields of its payload, read from the event as
 * the batch keeps it (the source row as jsonb).  Its storage is three
 * tables:
 *
 *	 <pipeline>_profile_<name>_values	   (id, dimension, value): the
 *		dictionary, one id per distinct categorical value;
 *	 <pipeline>_profile_<name>_days		   (key, day, counts, moments): one
 *		row per key and day; counts is int4[] of (id, count) pairs in id
 *		order, moments float8[] of (n, sx, sxx, min, max) per numeric
 *		dimension in the profile's order (NULL without any);
 *	 <pipeline>_profile_<name>_population  (day, counts): int8[] pairs, the
 *		counts of all keys per day, from which the prior's shares are read.
 *
 * Mean and variance are kept as PostgreSQL's float8_accum() and
 * float8_combine() keep them (N, Sx, Sxx: Youngs-Cramer), never as naive
 * sums of squares.  Only events the batch merges count; duplicates never,
 * late events once replay_late() merges them.
 *
 * Each batch sums its events per (key, day) here, then two statements, run
 * as the extension's owner like the sinks', give new values their ids and
 * merge the sums into the rows (sessionize_profile_add_* on conflict).
 * Batches of a pipeline and rebuild_profile() take the same lock, so the
 * dictionary has one writer at a time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/typcache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(profile_add_counts);
PG_FUNCTION_INFO_V1(profile_add_moments);
PG_FUNCTION_INFO_V1(rebuild_profile_days);

/* A categorical value seen in an event, of the entry (key, day) at entry. */
typedef struct Occurrence
{
	int			entry;
	int			dimension;
	const char *value;
	int			length;
	int32		id;
} Occurrence;

/* The sums of one key and day. */
typedef struct ProfileEntry
{
	Datum		key;
	DateADT		day;
	double	   *moments;		/* PROFILE_MOMENTS per numeric dimension */
} ProfileEntry;

typedef struct ProfileSums
{
	const ProfileDefinition *profile;
	ProfileEntry *entries;
	int			count;
	int			capacity;
	int			key_start;		/* the first entry of the last key */
	Occurrence *occurrences;
	int			occurrence_count;
	int			occurrence_capacity;
} ProfileSums;

/*
 * The longest categorical value kept, in bytes: the dictionary's unique
 * index takes no entry over about 2.7kB, and a value it refused would fail
 * every retry of the batch.  Longer values are no value, as nulls are.
 */
#define PROFILE_VALUE_MAX_LENGTH 1024

/*
 * Adds x to a moments state (n, sx, sxx, min, max) as float8_accum() does.
 * A value the sums would overflow with is skipped, as a value that is not
 * finite is, where float8_accum() raises: one event must not stop a batch,
 * nor leave sums no profile can show.
 */
static void
moments_accum(double *state, double x)
{
	double		n = state[0] + 1.0;
	double		sx = state[1] + x;
	double		sxx = 0.0;

	if (state[0] > 0.0)
	{
		double		tmp = x * n - sx;

		sxx = state[2] + tmp * tmp / (n * state[0]);
	}
	if (!isfinite(sx) || !isfinite(sxx))
		return;
	if (state[0] > 0.0)
	{
		state[3] = Min(state[3], x);
		state[4] = Max(state[4], x);
	}
	else
	{
		state[3] = x;
		state[4] = x;
	}
	state[0] = n;
	state[1] = sx;
	state[2] = sxx;
}

/*
 * Merges a moments state into another as float8_combine() does.  A state
 * the sums would overflow with is skipped, as moments_accum() skips a value.
 */
void
profile_moments_combine(double *into, const double *other)
{
	double		n1 = into[0];
	double		n2 = other[0];
	double		tmp;
	double		sx;
	double		sxx;

	if (n2 == 0.0)
		return;
	if (n1 == 0.0)
	{
		memcpy(into, other, sizeof(double) * PROFILE_MOMENTS);
		return;
	}
	tmp = into[1] / n1 - other[1] / n2;
	sx = into[1] + other[1];
	sxx = into[2] + other[2] + n1 * n2 * tmp * tmp / (n1 + n2);
	if (!isfinite(sx) || !isfinite(sxx))
		return;
	into[0] = n1 + n2;
	into[1] = sx;
	into[2] = sxx;
	into[3] = Min(into[3], other[3]);
	into[4] = Max(into[4], other[4]);
}

/* The day of a time in a time zone, as (ts AT TIME ZONE zone)::date. */
DateADT
profile_day(text *zone, TimestampTz ts)
{
	Timestamp	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, PointerGetDatum(zone),
															  TimestampTzGetDatum(ts)));
	int64		days = local / USECS_PER_DAY;

	if (local % USECS_PER_DAY < 0)
		days--;
	return (DateADT) days;
}

/* A field of the event: a column of the source, or a field of its payload. */
static bool
event_field(Jsonb *event, const char *payload_column, const char *name, JsonbValue *value)
{
	JsonbContainer *container = &event->root;
	JsonbValue	payload;

	if (payload_column != NULL)
	{
		if (getKeyJsonValueFromContainer(container, payload_column, strlen(payload_column), &payload) == NULL ||
			payload.type != jbvBinary || !JsonContainerIsObject(payload.val.binary.data))
			return false;
		container = payload.val.binary.data;
	}
	if (!JsonContainerIsObject(container))
		return false;
	return getKeyJsonValueFromContainer(container, name, strlen(name), value) != NULL;
}

/*
 * A categorical value as text: a string as it is, a number or a boolean as
 * JSON writes it.  Nulls, objects and arrays are no value.
 */
static bool
categorical_value(const JsonbValue *value, const char **text, int *length)
{
	switch (value->type)
	{
		case jbvString:
			*text = value->val.string.val;
			*length = value->val.string.len;
			return true;
		case jbvNumeric:
			*text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(value->val.numeric)));
			*length = strlen(*text);
			return true;
		case jbvBool:
			*text = value->val.boolean ? "true" : "false";
			*length = strlen(*text);
			return true;
		default:
			return false;
	}
}

/*
 * A numeric value: a JSON number, or a string that reads as one.  Values
 * that are not finite are no value, as nulls are, and so are numbers beyond
 * the range of float8 (which numeric_float8() would raise on).
 */
static bool
numeric_value(const JsonbValue *value, double *result)
{
	if (value->type == jbvNumeric)
	{
		if (numeric_is_nan(value->val.numeric))
			return false;
		*result = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, NumericGetDatum(value->val.numeric)));
	}
	else if (value->type == jbvString)
	{
		char	   *text = pnstrdup(value->val.string.val, value->val.string.len);
		char	   *end;

		errno = 0;
		*result = strtod(text, &end);
		if (end == text || *end != '\0' || errno != 0)
			return false;
	}
	else
		return false;
	return isfinite(*result);
}

/*
 * Adds an event of key at ts to the sums.  Events come grouped by key and,
 * within a key, in time order, so that a key's day is mostly the last
 * entry's or a new one; but where a zone falls back just after midnight a
 * later time can be on the day before, so the key's earlier entries are
 * searched before a day is added (one INSERT cannot write a row twice).
 */
static void
sums_add(ProfileSums *sums, Datum key, bool same_key, TimestampTz ts, Jsonb *event)
{
	const ProfileDefinition *profile = sums->profile;
	DateADT		day = profile_day(profile->zone, ts);
	ProfileEntry *entry;
	JsonbValue	value;
	int			e = -1;

	if (!same_key || sums->count == 0)
		sums->key_start = sums->count;
	else
		for (e = sums->count - 1; e >= sums->key_start && sums->entries[e].day != day; e--)
			;
	if (e < sums->key_start)
	{
		if (sums->count == sums->capacity)
		{
			sums->capacity = Max(64, sums->capacity * 2);
			sums->entries = sums->entries == NULL ? palloc(sizeof(ProfileEntry) * sums->capacity)
				: repalloc_huge(sums->entries, sizeof(ProfileEntry) * sums->capacity);
		}
		entry = &sums->entries[sums->count++];
		entry->key = key;
		entry->day = day;
		entry->moments = palloc0(sizeof(double) * PROFILE_MOMENTS * Max(profile->numeric_count, 1));
		e = sums->count - 1;
	}
	entry = &sums->entries[e];

	for (int d = 0; d < profile->categorical_count; d++)
	{
		Occurrence *occurrence;
		const char *text;
		int			length;

		/* a value too long for the dictionary's index is no value */
		if (!event_field(event, profile->payload_column, profile->categorical[d], &value) ||
			!categorical_value(&value, &text, &length) || length > PROFILE_VALUE_MAX_LENGTH)
			continue;
		if (sums->occurrence_count == sums->occurrence_capacity)
		{
			sums->occurrence_capacity = Max(256, sums->occurrence_capacity * 2);
			sums->occurrences = sums->occurrences == NULL
				? palloc(sizeof(Occurrence) * sums->occurrence_capacity)
				: repalloc_huge(sums->occurrences, sizeof(Occurrence) * sums->occurrence_capacity);
		}
		occurrence = &sums->occurrences[sums->occurrence_count++];
		occurrence->entry = e;
		occurrence->dimension = d;
		occurrence->value = text;
		occurrence->length = length;
	}
	for (int d = 0; d < profile->numeric_count; d++)
	{
		double		x;

		if (event_field(event, profile->payload_column, profile->numeric[d], &value) && numeric_value(&value, &x))
			moments_accum(&entry->moments[PROFILE_MOMENTS * d], x);
	}
}

static int
occurrence_value_order(const void *a, const void *b)
{
	const Occurrence *x = *(Occurrence *const *) a;
	const Occurrence *y = *(Occurrence *const *) b;
	int			order;

	if (x->dimension != y->dimension)
		return x->dimension < y->dimension ? -1 : 1;
	order = memcmp(x->value, y->value, Min(x->length, y->length));
	if (order != 0)
		return order;
	return x->length < y->length ? -1 : x->length > y->length;
}

static int
occurrence_entry_order(const void *a, const void *b)
{
	const Occurrence *x = a;
	const Occurrence *y = b;

	if (x->entry != y->entry)
		return x->entry < y->entry ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* (day, id) of an occurrence, for the population's sums. */
typedef struct DayValue
{
	DateADT		day;
	int32		id;
} DayValue;

static int
day_value_order(const void *a, const void *b)
{
	const DayValue *x = a;
	const DayValue *y = b;

	if (x->day != y->day)
		return x->day < y->day ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Gives every occurrence the id of its value in the profile's dictionary,
 * adding the values it has not seen.
 */
static void
assign_ids(ProfileSums *sums)
{
	const ProfileDefinition *profile = sums->profile;
	Occurrence **sorted = palloc(sizeof(Occurrence *) * Max(sums->occurrence_count, 1));
	Datum	   *dimensions = palloc(sizeof(Datum) * Max(sums->occurrence_count, 1));
	Datum	   *values = palloc(sizeof(Datum) * Max(sums->occurrence_count, 1));
	int		   *first_of = palloc(sizeof(int) * Max(sums->occurrence_count, 1));
	int			distinct = 0;
	Oid			types[2] = {TEXTARRAYOID, TEXTARRAYOID};
	Datum		arguments[2];

	for (int i = 0; i < sums->occurrence_count; i++)
		sorted[i] = &sums->occurrences[i];
	qsort(sorted, sums->occurrence_count, sizeof(Occurrence *), occurrence_value_order);
	for (int i = 0; i < sums->occurrence_count; i++)
	{
		if (i == 0 || occurrence_value_order(&sorted[i - 1], &sorted[i]) != 0)
		{
			dimensions[distinct] = CStringGetTextDatum(profile->categorical[sorted[i]->dimension]);
			values[distinct] = PointerGetDatum(cstring_to_text_with_len(sorted[i]->value, sorted[i]->length));
			first_of[distinct++] = i;
		}
		sorted[i]->id = distinct;	/* 1-based place among the distinct, for now */
	}
	arguments[0] = sessionize_make_array(dimensions, NULL, distinct, TEXTOID);
	arguments[1] = sessionize_make_array(values, NULL, distinct, TEXTOID);
	/* only values not in the dictionary take a number of its sequence */
	if (SPI_execute_with_args(psprintf("WITH w AS (SELECT w.dimension, w.value, w.i"
									   " FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]))"
									   " WITH ORDINALITY AS w(dimension, value, i)),"
									   " known AS (SELECT w.i, v.id FROM w JOIN %1$s v"
									   " ON v.dimension OPERATOR(pg_catalog.=) w.dimension"
									   " AND v.value OPERATOR(pg_catalog.=) w.value),"
									   " added AS (INSERT INTO %1$s (dimension, value)"
									   " SELECT w.dimension, w.value FROM w"
									   " WHERE w.i OPERATOR(pg_catalog.<>) ALL (ARRAY(SELECT k.i FROM known k))"
									   " ORDER BY w.i RETURNING id, dimension, value)"
									   " SELECT k.i, k.id FROM known k UNION ALL"
									   " SELECT w.i, a.id FROM w JOIN added a"
									   " ON a.dimension OPERATOR(pg_catalog.=) w.dimension"
									   " AND a.value OPERATOR(pg_catalog.=) w.value",
									   profile->values_table),
							  2, types, arguments, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != (uint64) distinct)
		elog(ERROR, "could not number the values of profile \"%s\"", profile->name);
	{
		int32	   *ids = palloc(sizeof(int32) * Max(distinct, 1));
		bool		isnull;

		for (uint64 r = 0; r < SPI_processed; r++)
		{
			int64		place = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));

			ids[place - 1] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
		}
		SPI_freetuptable(SPI_tuptable);
		for (int i = 0; i < sums->occurrence_count; i++)
			sorted[i]->id = ids[sorted[i]->id - 1];
	}
}

/*
 * Merges the sums into the profile's days and population tables: added to
 * the rows there are, or the rows themselves where there are none (as after
 * a rebuild deleted the days it covers).
 */
static void
sums_write(ProfileSums *sums, Oid key_type)
{
	const ProfileDefinition *profile = sums->profile;
	int			n = sums->count;
	int			moment_count = PROFILE_MOMENTS * profile->numeric_count;
	Datum	   *keys = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *days = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *count_from = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *count_to = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *pairs = palloc(sizeof(Datum) * Max(2 * sums->occurrence_count, 1));
	Datum	   *moments = palloc(sizeof(Datum) * Max(n * moment_count, 1));
	DayValue   *day_values = palloc(sizeof(DayValue) * Max(sums->occurrence_count, 1));
	Datum	   *population_days;
	Datum	   *population_from;
	Datum	   *population_to;
	Datum	   *population_pairs;
	int			pair_count = 0;
	int			population_count = 0;
	int			population_pair_count = 0;
	int			next = 0;
	Oid			types[10];
	Datum		values[10];

	if (n == 0)
		return;
	if (sums->occurrence_count > 0)
		assign_ids(sums);
	qsort(sums->occurrences, sums->occurrence_count, sizeof(Occurrence), occurrence_entry_order);
	for (int e = 0; e < n; e++)
	{
		keys[e] = sums->entries[e].key;
		days[e] = DateADTGetDatum(sums->entries[e].day);
		count_from[e] = Int32GetDatum(pair_count + 1);
		while (next < sums->occurrence_count && sums->occurrences[next].entry == e)
		{
			int32		id = sums->occurrences[next].id;
			int32		count = 0;

			for (; next < sums->occurrence_count && sums->occurrences[next].entry == e &&
				 sums->occurrences[next].id == id; next++)
				count++;
			pairs[pair_count++] = Int32GetDatum(id);
			pairs[pair_count++] = Int32GetDatum(count);
		}
		count_to[e] = Int32GetDatum(pair_count);
		for (int m = 0; m < moment_count; m++)
			moments[e * moment_count + m] = Float8GetDatum(sums->entries[e].moments[m]);
	}

	for (int i = 0; i < sums->occurrence_count; i++)
	{
		day_values[i].day = sums->entries[sums->occurrences[i].entry].day;
		day_values[i].id = sums->occurrences[i].id;
	}
	qsort(day_values, sums->occurrence_count, sizeof(DayValue), day_value_order);
	population_days = palloc(sizeof(Datum) * Max(sums->occurrence_count, 1));
	population_from = palloc(sizeof(Datum) * Max(sums->occurrence_count, 1));
	population_to = palloc(sizeof(Datum) * Max(sums->occurrence_count, 1));
	population_pairs = palloc(sizeof(Datum) * Max(2 * sums->occurrence_count, 1));
	for (int i = 0; i < sums->occurrence_count;)
	{
		DateADT		day = day_values[i].day;

		population_days[population_count] = DateADTGetDatum(day);
		population_from[population_count] = Int32GetDatum(population_pair_count + 1);
		while (i < sums->occurrence_count && day_values[i].day == day)
		{
			int32		id = day_values[i].id;
			int64		count = 0;

			for (; i < sums->occurrence_count && day_values[i].day == day && day_values[i].id == id; i++)
				count++;
			population_pairs[population_pair_count++] = Int64GetDatum(id);
			population_pairs[population_pair_count++] = Int64GetDatum(count);
		}
		population_to[population_count++] = Int32GetDatum(population_pair_count);
	}

	types[0] = get_array_type(key_type);
	values[0] = sessionize_make_array(keys, NULL, n, key_type);
	types[1] = DATEARRAYOID;
	values[1] = sessionize_make_array(days, NULL, n, DATEOID);
	types[2] = types[3] = types[4] = INT4ARRAYOID;
	values[2] = sessionize_make_array(count_from, NULL, n, INT4OID);
	values[3] = sessionize_make_array(count_to, NULL, n, INT4OID);
	values[4] = sessionize_make_array(pairs, NULL, pair_count, INT4OID);
	types[5] = FLOAT8ARRAYOID;
	values[5] = sessionize_make_array(moments, NULL, n * moment_count, FLOAT8OID);
	types[6] = DATEARRAYOID;
	values[6] = sessionize_make_array(population_days, NULL, population_count, DATEOID);
	types[7] = types[8] = INT4ARRAYOID;
	values[7] = sessionize_make_array(population_from, NULL, population_count, INT4OID);
	values[8] = sessionize_make_array(population_to, NULL, population_count, INT4OID);
	types[9] = INT8ARRAYOID;
	values[9] = sessionize_make_array(population_pairs, NULL, population_pair_count, INT8OID);

	if (SPI_execute_with_args(psprintf("WITH r AS (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS day,"
									   " pg_catalog.unnest($3) AS c_from, pg_catalog.unnest($4) AS c_to,"
									   " pg_catalog.generate_series(0, pg_catalog.cardinality($1) OPERATOR(pg_catalog.-) 1) AS i),"
									   " days AS (INSERT INTO %1$s AS t (key, day, counts, moments)"
									   " SELECT r.key, r.day, $5[r.c_from:r.c_to], %3$s FROM r"
									   " ON CONFLICT (key, day) DO UPDATE SET"
									   " counts = sessionize.sessionize_profile_add_counts(t.counts, excluded.counts),"
									   " moments = sessionize.sessionize_profile_add_moments(t.moments, excluded.moments)),"
									   " population AS (INSERT INTO %2$s AS t (day, counts)"
									   " SELECT p.day, $10[p.c_from:p.c_to]"
									   " FROM (SELECT pg_catalog.unnest($7) AS day, pg_catalog.unnest($8) AS c_from,"
									   " pg_catalog.unnest($9) AS c_to) p"
									   " ON CONFLICT (day) DO UPDATE SET"
									   " counts = sessionize.sessionize_profile_add_counts(t.counts, excluded.counts))"
									   " SELECT 1",
									   profile->days_table, profile->population_table,
									   moment_count == 0 ? "NULL::pg_catalog.float8[]"
									   : psprintf("$6[r.i OPERATOR(pg_catalog.*) %1$d OPERATOR(pg_catalog.+) 1"
												  " : (r.i OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.*) %1$d]",
												  moment_count)),
							  10, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not write profile \"%s\"", profile->name);
}

/* Reads the definitions of a pipeline's profiles. */
ProfileDefinition *
profile_definitions(const char *pipeline, const char *only, int *count)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(pipeline), only != NULL ? CStringGetTextDatum(only) : (Datum) 0};
	char		nulls[2] = {' ', only != NULL ? ' ' : 'n'};
	ProfileDefinition *profiles;
	SPITupleTable *rows;

	/* until ALTER EXTENSION sessionize UPDATE, a database has no profiles */
	if (!OidIsValid(get_relname_relid("pipeline_profiles", get_namespace_oid("sessionize", false))))
	{
		*count = 0;
		return NULL;
	}
	if (SPI_execute_with_args("SELECT r.name::pg_catalog.text, r.categorical, r.numeric, r.day_time_zone,"
							  " p.payload_column::pg_catalog.text"
							  " FROM sessionize.pipeline_profiles r JOIN sessionize.pipelines p"
							  " ON p.name OPERATOR(pg_catalog.=) r.pipeline"
							  " WHERE r.pipeline OPERATOR(pg_catalog.=) $1"
							  " AND ($2 IS NULL OR r.name OPERATOR(pg_catalog.=) $2) ORDER BY r.name",
							  2, types, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the profiles of pipeline \"%s\"", pipeline);
	rows = SPI_tuptable;
	*count = (int) SPI_processed;
	profiles = palloc0(sizeof(ProfileDefinition) * Max(*count, 1));
	for (int p = 0; p < *count; p++)
	{
		ProfileDefinition *profile = &profiles[p];
		Datum		columns[5];
		bool		column_nulls[5];
		Datum	   *names;
		int			name_count;

		heap_deform_tuple(rows->vals[p], rows->tupdesc, columns, column_nulls);
		profile->name = TextDatumGetCString(columns[0]);
		deconstruct_array(DatumGetArrayTypeP(columns[1]), TEXTOID, -1, false, TYPALIGN_INT, &names, NULL,
						  &name_count);
		profile->categorical_count = name_count;
		profile->categorical = palloc(sizeof(char *) * Max(name_count, 1));
		for (int d = 0; d < name_count; d++)
			profile->categorical[d] = TextDatumGetCString(names[d]);
		deconstruct_array(DatumGetArrayTypeP(columns[2]), TEXTOID, -1, false, TYPALIGN_INT, &names, NULL,
						  &name_count);
		profile->numeric_count = name_count;
		profile->numeric = palloc(sizeof(char *) * Max(name_count, 1));
		for (int d = 0; d < name_count; d++)
			profile->numeric[d] = TextDatumGetCString(names[d]);
		profile->zone = DatumGetTextPCopy(columns[3]);
		profile->payload_column = column_nulls[4] ? NULL : TextDatumGetCString(columns[4]);
		profile->days_table = quote_qualified_identifier("sessionize",
														 psprintf("%s_profile_%s_days", pipeline, profile->name));
		profile->values_table = quote_qualified_identifier("sessionize",
														   psprintf("%s_profile_%s_values", pipeline, profile->name));
		profile->population_table = quote_qualified_identifier("sessionize",
															   psprintf("%s_profile_%s_population", pipeline,
																		profile->name));
	}
	SPI_freetuptable(rows);
	return profiles;
}

/*
 * Adds the events a batch merged to each of its pipeline's profiles.  The
 * groups are in key order, their events in time order.
 */
void
profiles_write(PipelineBatch *batch, KeyGroup *groups, int group_count)
{
	int			profile_count;
	ProfileDefinition *profiles = profile_definitions(batch->name, NULL, &profile_count);

	for (int p = 0; p < profile_count; p++)
	{
		ProfileSums sums = {.profile = &profiles[p]};

		for (int g = 0; g < group_count; g++)
		{
			bool		same_key = false;

			for (int i = 0; i < groups[g].event_count; i++)
			{
				BatchEvent *event = groups[g].events[i];

				if (event->fate != EVENT_MERGED)
					continue;
				sums_add(&sums, groups[g].key, same_key, event->ts, event->event);
				same_key = true;
			}
		}
		sums_write(&sums, batch->key_type);
	}
}

/* An event of a table of past events, as a rebuild reads it. */
typedef struct PastEvent
{
	Datum		key;
	TimestampTz ts;
	DateADT		day;
	Jsonb	   *event;
	pg_uuid_t	fingerprint;
} PastEvent;

static FmgrInfo *past_key_compare;
static Oid	past_key_collation;

static int
past_fingerprint_order(const void *a, const void *b)
{
	return memcmp(((const PastEvent *) a)->fingerprint.data, ((const PastEvent *) b)->fingerprint.data,
				  UUID_LEN);
}

static int
past_event_order(const void *a, const void *b)
{
	const PastEvent *x = a;
	const PastEvent *y = b;
	int			order = DatumGetInt32(FunctionCall2Coll(past_key_compare, past_key_collation, x->key, y->key));

	if (order != 0)
		return order;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return past_fingerprint_order(a, b);
}

/*
 * sessionize_rebuild_profile_days(pipeline sessionize.pipelines, name text,
 *		source regclass, from_day date, to_day date) -> bigint
 *
 * Replaces the days from_day..to_day of a profile by the sums of the
 * distinct events (by fingerprint) of a table shaped like the pipeline's
 * source, read as the pipeline's owner as a batch reads its source
 * (sources.c).  Events a batch would make dead letters are left out.  The rows of those days in the population
 * table are replaced likewise.  Returns the events counted.
 */
Datum
rebuild_profile_days(PG_FUNCTION_ARGS)
{
	HeapTupleHeader pipeline = PG_GETARG_HEAPTUPLEHEADER(0);
	char	   *pipeline_name;
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			source = PG_GETARG_OID(2);
	SourcePipeline reader = {0};
	char	   *query;
	DateADT		from_day = PG_GETARG_DATEADT(3);
	DateADT		to_day = PG_GETARG_DATEADT(4);
	bool		isnull;
	Oid			owner = DatumGetObjectId(GetAttributeByName(pipeline, "owner", &isnull));
	Oid			key_type;
	int32		key_typmod;
	Oid			key_collation;
	int16		key_length;
	bool		key_byval;
	char		key_align;
	TypeCacheEntry *key_cache;
	ProfileDefinition *profile;
	int			profile_count;
	PastEvent  *events;
	int			event_count = 0;
	int			kept = 0;
	ProfileSums sums = {0};
	Oid			types[2] = {DATEOID, DATEOID};
	Datum		values[2] = {DateADTGetDatum(from_day), DateADTGetDatum(to_day)};

	pipeline_name = TextDatumGetCString(GetAttributeByName(pipeline, "name", &isnull));
	sink_key_type(pipeline_name, &key_type, &key_typmod, &key_collation);
	get_typlenbyvalalign(key_type, &key_length, &key_byval, &key_align);
	key_cache = lookup_type_cache(key_type, TYPECACHE_CMP_PROC_FINFO);
	if (!OidIsValid(key_cache->cmp_proc))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the key type %s of pipeline \"%s\" has no ordering", format_type_be(key_type),
						pipeline_name)));

	sessionize_read_source(&reader, pipeline);
	reader.source = DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(source)));
	reader.time_without_zone = reader.payload_column == NULL &&
		get_atttype(source, get_attnum(source, reader.time_column)) == TIMESTAMPOID;
	query = sessionize_source_query(&reader, SOURCE_TABLE, false);

	SPI_connect();
	profile = profile_definitions(pipeline_name, name, &profile_count);
	if (profile_count != 1)
		elog(ERROR, "profile \"%s\" of pipeline \"%s\" is gone", name, pipeline_name);
	if (sessionize_execute_as(owner, query, INT4OID, (Datum) 0, true) != SPI_OK_SELECT)
		elog(ERROR, "the events of profile \"%s\" could not be read", name);
	events = palloc(sizeof(PastEvent) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	row = SPI_tuptable->vals[r];
		TupleDesc	columns = SPI_tuptable->tupdesc;
		PastEvent  *event = &events[event_count];
		Datum		value;
		bool		ts_null;

		/* (position, key, ts, ts_text, event_type, event, fingerprint, problem) */
		SPI_getbinval(row, columns, 8, &isnull);
		if (!isnull)
			continue;
		value = SPI_getbinval(row, columns, 2, &isnull);
		if (isnull)
			continue;
		event->key = datumCopy(value, key_byval, key_length);
		value = SPI_getbinval(row, columns, 3, &ts_null);
		if (ts_null)
		{
			value = SPI_getbinval(row, columns, 4, &isnull);
			if (isnull)
				continue;
			/* read in the pipeline's time zone, which the caller set */
			value = DirectFunctionCall3(timestamptz_in, CStringGetDatum(TextDatumGetCString(value)),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		}
		event->ts = DatumGetTimestampTz(value);
		if (TIMESTAMP_NOT_FINITE(event->ts))
			continue;
		event->day = profile_day(profile->zone, event->ts);
		if (event->day < from_day || event->day > to_day)
			continue;
		value = SPI_getbinval(row, columns, 7, &isnull);
		if (isnull)
			continue;
		event->fingerprint = *DatumGetUUIDP(value);
		event->event = DatumGetJsonbPCopy(SPI_getbinval(row, columns, 6, &isnull));
		event_count++;
	}
	SPI_freetuptable(SPI_tuptable);

	/* the first copy of each fingerprint, as the batches keep it */
	qsort(events, event_count, sizeof(PastEvent), past_fingerprint_order);
	for (int i = 0; i < event_count; i++)
		if (i == 0 || past_fingerprint_order(&events[i - 1], &events[i]) != 0)
			events[kept++] = events[i];
	past_key_compare = &key_cache->cmp_proc_finfo;
	past_key_collation = key_collation;
	qsort(events, kept, sizeof(PastEvent), past_event_order);

	if (SPI_execute_with_args(psprintf("WITH d AS (DELETE FROM %1$s WHERE day OPERATOR(pg_catalog.>=) $1"
									   " AND day OPERATOR(pg_catalog.<=) $2)"
									   " DELETE FROM %2$s WHERE day OPERATOR(pg_catalog.>=) $1"
									   " AND day OPERATOR(pg_catalog.<=) $2",
									   profile->days_table, profile->population_table),
							  2, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not clear the days of profile \"%s\"", name);
	sums.profile = profile;
	for (int i = 0; i < kept; i++)
		sums_add(&sums, events[i].key,
				 i > 0 && DatumGetInt32(FunctionCall2Coll(past_key_compare, past_key_collation,
														  events[i - 1].key, events[i].key)) == 0,
				 events[i].ts, events[i].event);
	sums_write(&sums, key_type);
	SPI_finish();
	PG_RETURN_INT64(kept);
}

/*
 * Checks a pairs array (id, count, id, count, ...) of element type int4 or
 * int8, ids ascending: these arrays are read from tables anyone with the
 * extension owner's rights could write.
 */
static int
pairs_count(ArrayType *pairs, Oid element)
{
	int			items = ArrayGetNItems(ARR_NDIM(pairs), ARR_DIMS(pairs));

	if (ARR_ELEMTYPE(pairs) != element || ARR_HASNULL(pairs) || ARR_NDIM(pairs) > 1 || items % 2 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("profile counts must be a one-dimensional array of (id, count) pairs without nulls")));
	return items / 2;
}

static int64
pair_item(ArrayType *pairs, bool wide, int i)
{
	return wide ? ((int64 *) ARR_DATA_PTR(pairs))[i] : ((int32 *) ARR_DATA_PTR(pairs))[i];
}

/*
 * sessionize_profile_add_counts(int4[] | int8[], same) -> same
 *
 * The sum of two arrays of (id, count) pairs, ids ascending.
 */
Datum
profile_add_counts(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *b = PG_GETARG_ARRAYTYPE_P(1);
	Oid			element = ARR_ELEMTYPE(a);
	bool		wide = element == INT8OID;
	int			a_count;
	int			b_count;
	Datum	   *result;
	int			count = 0;
	int			i = 0;
	int			j = 0;

	if (element != INT4OID && element != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("profile counts must be integer or bigint arrays")));
	a_count = pairs_count(a, element);
	b_count = pairs_count(b, element);
	result = palloc(sizeof(Datum) * Max(2 * (a_count + b_count), 1));
	while (i < a_count || j < b_count)
	{
		int64		a_id = i < a_count ? pair_item(a, wide, 2 * i) : PG_INT64_MAX;
		int64		b_id = j < b_count ? pair_item(b, wide, 2 * j) : PG_INT64_MAX;
		int64		id = Min(a_id, b_id);
		int64		sum = 0;

		if ((i > 0 && i < a_count && a_id <= pair_item(a, wide, 2 * i - 2)) ||
			(j > 0 && j < b_count && b_id <= pair_item(b, wide, 2 * j - 2)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the ids of profile counts must ascend")));
		if (a_id == id)
			sum = pair_item(a, wide, 2 * i++ + 1);
		if ((b_id == id && pg_add_s64_overflow(sum, pair_item(b, wide, 2 * j++ + 1), &sum)) ||
			(!wide && (sum > PG_INT32_MAX || sum < PG_INT32_MIN)))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("a profile count is out of range")));
		result[count++] = wide ? Int64GetDatum(id) : Int32GetDatum((int32) id);
		result[count++] = wide ? Int64GetDatum(sum) : Int32GetDatum((int32) sum);
	}
	PG_RETURN_DATUM(sessionize_make_array(result, NULL, count, element));
}

/*
 * sessionize_profile_add_moments(float8[], float8[]) -> float8[]
 *
 * Two arrays of moments (n, sx, sxx, min, max per numeric dimension),
 * merged as float8_combine() merges.
 */
Datum
profile_add_moments(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *b = PG_GETARG_ARRAYTYPE_P(1);
	int			count = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
	double	   *state;
	Datum	   *result;

	if (ARR_ELEMTYPE(a) != FLOAT8OID || ARR_ELEMTYPE(b) != FLOAT8OID || ARR_HASNULL(a) || ARR_HASNULL(b) ||
		ARR_NDIM(a) > 1 || ARR_NDIM(b) > 1 || count % PROFILE_MOMENTS != 0 ||
		count != ArrayGetNItems(ARR_NDIM(b), ARR_DIMS(b)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("profile moments must be two float8 arrays of the same length, 5 values per dimension")));
	state = palloc(sizeof(double) * Max(count, 1));
	memcpy(state, ARR_DATA_PTR(a), sizeof(double) * count);
	result = palloc(sizeof(Datum) * Max(count, 1));
	for (int d = 0; d < count; d += PROFILE_MOMENTS)
		profile_moments_combine(&state[d], &((double *) ARR_DATA_PTR(b))[d]);
	for (int i = 0; i < count; i++)
		result[i] = Float8GetDatum(state[i]);
	PG_RETURN_DATUM(sessionize_make_array(result, NULL, count, FLOAT8OID));
}
