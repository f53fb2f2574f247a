/*-------------------------------------------------------------------------
 *
 * measures.c
 *	  Session measures: the mergeable states of count, sum, min, max, first,
 *	  last, bool_or, bool_and and approx_count_distinct.
 *
 * A measure's state is a function of the set of values it was given, so
 * that a session's measures are the same whatever the order and the grouping
 * in which its events arrive: the pipeline adds a batch's events to stored
 * states, and the SQL aggregates (measure_aggregates.c) add rows and combine
 * partial states, with this one code.
 *
 * - count, sum, bool_or, bool_and: the usual, nulls ignored; a sum of
 *	 smallint or integer is a bigint (overflow is an error), of bigint or
 *	 numeric a numeric, as PostgreSQL's sum() gives.
 * - min, max: by the type's default btree order.
 * - first, last: the value at the earliest (latest) time; among values of
 *	 the same time, the least (greatest) by the type's btree order, so that
 *	 ties never depend on arrival.  Rows with a null value or time are
 *	 ignored.
 * - approx_count_distinct: a HyperLogLog sketch of 2^12 registers (standard
 *	 error 1.04 / 64 = 1.6%) over the type's 64-bit extended hash; up to 128
 *	 distinct hashes are kept as a sorted list, whose count is exact.  The
 *	 sketch is a function of the set of hashes: merging two sketches gives
 *	 the sketch of the union.  Serialized: format byte, then either the
 *	 list (mode 'e', count, hashes in network order) or the registers (mode
 *	 'd'); deserialization checks every field.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/int.h"
#include "port/pg_bswap.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/typcache.h"

#include "sessionize.h"

#define SKETCH_FORMAT 1
#define SKETCH_PRECISION 12
#define SKETCH_REGISTERS (1 << SKETCH_PRECISION)
#define SKETCH_MAX_RANK (64 - SKETCH_PRECISION + 1)
#define SKETCH_LIST_MAX 128

struct DistinctSketch
{
	int			count;			/* hashes in the list; -1: registers */
	int			capacity;		/* of hashes: most sessions see a few */
	uint64	   *hashes;
	uint8	   *registers;
};

static const char *const measure_names[] = {
	[MEASURE_COUNT_ROWS] = "count",
	[MEASURE_COUNT] = "count",
	[MEASURE_SUM] = "sum",
	[MEASURE_MIN] = "min",
	[MEASURE_MAX] = "max",
	[MEASURE_FIRST] = "first",
	[MEASURE_LAST] = "last",
	[MEASURE_BOOL_OR] = "bool_or",
	[MEASURE_BOOL_AND] = "bool_and",
	[MEASURE_APPROX_COUNT_DISTINCT] = "approx_count_distinct",
};

/* DistinctSketch --------------------------------------------------------- */

DistinctSketch *
distinct_sketch_create(void)
{
	DistinctSketch *sketch = palloc(sizeof(DistinctSketch));

	sketch->count = 0;
	sketch->capacity = 0;
	sketch->hashes = NULL;
	sketch->registers = NULL;
	return sketch;
}

static void
sketch_set_register(DistinctSketch *sketch, uint64 hash)
{
	int			index = (int) (hash >> (64 - SKETCH_PRECISION));
	uint64		rest = hash << SKETCH_PRECISION;
	int			rank = rest == 0 ? SKETCH_MAX_RANK : 64 - pg_leftmost_one_pos64(rest);

	if (rank > sketch->registers[index])
		sketch->registers[index] = (uint8) rank;
}

/* The hashes and registers of a sketch live in the context of the sketch. */
static void
sketch_reserve(DistinctSketch *sketch, int capacity)
{
	if (capacity <= sketch->capacity)
		return;
	sketch->hashes = sketch->hashes == NULL
		? MemoryContextAlloc(GetMemoryChunkContext(sketch), sizeof(uint64) * capacity)
		: repalloc(sketch->hashes, sizeof(uint64) * capacity);
	sketch->capacity = capacity;
}

static void
sketch_to_registers(DistinctSketch *sketch)
{
	sketch->registers = MemoryContextAllocZero(GetMemoryChunkContext(sketch), SKETCH_REGISTERS);
	for (int i = 0; i < sketch->count; i++)
		sketch_set_register(sketch, sketch->hashes[i]);
	sketch->count = -1;
}

void
distinct_sketch_add(DistinctSketch *sketch, uint64 hash)
{
	int			low = 0;
	int			high;

	if (sketch->count < 0)
	{
		sketch_set_register(sketch, hash);
		return;
	}
	high = sketch->count;
	while (low < high)
	{
		int			middle = (low + high) / 2;

		if (sketch->hashes[middle] < hash)
			low = middle + 1;
		else
			high = middle;
	}
	if (low < sketch->count && sketch->hashes[low] == hash)
		return;
	if (sketch->count == SKETCH_LIST_MAX)
	{
		sketch_to_registers(sketch);
		sketch_set_register(sketch, hash);
		return;
	}
	if (sketch->count == sketch->capacity)
		sketch_reserve(sketch, Min(Max(4, 2 * sketch->capacity), SKETCH_LIST_MAX));
	memmove(&sketch->hashes[low + 1], &sketch->hashes[low], sizeof(uint64) * (sketch->count - low));
	sketch->hashes[low] = hash;
	sketch->count++;
}

void
distinct_sketch_merge(DistinctSketch *sketch, const DistinctSketch *other)
{
	if (other->count >= 0)
	{
		for (int i = 0; i < other->count; i++)
			distinct_sketch_add(sketch, other->hashes[i]);
		return;
	}
	if (sketch->count >= 0)
		sketch_to_registers(sketch);
	for (int i = 0; i < SKETCH_REGISTERS; i++)
		sketch->registers[i] = Max(sketch->registers[i], other->registers[i]);
}

int64
distinct_sketch_estimate(const DistinctSketch *sketch)
{
	double		m = SKETCH_REGISTERS;
	double		alpha = 0.7213 / (1.0 + 1.079 / m);
	double		sum = 0;
	int			zeros = 0;
	double		estimate;

	if (sketch->count >= 0)
		return sketch->count;
	for (int i = 0; i < SKETCH_REGISTERS; i++)
	{
		sum += ldexp(1.0, -sketch->registers[i]);
		if (sketch->registers[i] == 0)
			zeros++;
	}
	estimate = alpha * m * m / sum;
	if (estimate <= 2.5 * m && zeros > 0)
		estimate = m * log(m / zeros);
	return (int64) llround(estimate);
}

bytea *
distinct_sketch_serialize(const DistinctSketch *sketch)
{
	Size		length = sketch->count >= 0 ? 2 + 4 + 8 * (Size) sketch->count : 2 + SKETCH_REGISTERS;
	bytea	   *result = palloc(VARHDRSZ + length);
	uint8	   *data = (uint8 *) VARDATA(result);

	SET_VARSIZE(result, VARHDRSZ + length);
	data[0] = SKETCH_FORMAT;
	if (sketch->count >= 0)
	{
		uint32		count = pg_hton32((uint32) sketch->count);

		data[1] = 'e';
		memcpy(data + 2, &count, 4);
		for (int i = 0; i < sketch->count; i++)
		{
			uint64		hash = pg_hton64(sketch->hashes[i]);

			memcpy(data + 6 + 8 * i, &hash, 8);
		}
	}
	else
	{
		data[1] = 'd';
		memcpy(data + 2, sketch->registers, SKETCH_REGISTERS);
	}
	return result;
}

static void
invalid_sketch(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid distinct-count sketch"),
			 errdetail_internal("%s", detail)));
}

/* Reads a serialized sketch, which may come from anywhere: checks it all. */
DistinctSketch *
distinct_sketch_deserialize(const bytea *serialized)
{
	Size		length = VARSIZE_ANY_EXHDR(serialized);
	const uint8 *data = (const uint8 *) VARDATA_ANY(serialized);
	DistinctSketch *sketch = distinct_sketch_create();

	if (length < 2 || data[0] != SKETCH_FORMAT)
		invalid_sketch("The format byte is not 1.");
	if (data[1] == 'e')
	{
		uint32		count;

		if (length < 6)
			invalid_sketch("The list of hashes is truncated.");
		memcpy(&count, data + 2, 4);
		count = pg_ntoh32(count);
		if (count > SKETCH_LIST_MAX || length != 6 + 8 * (Size) count)
			invalid_sketch("The list of hashes has the wrong length.");
		sketch_reserve(sketch, (int) count);
		for (uint32 i = 0; i < count; i++)
		{
			uint64		hash;

			memcpy(&hash, data + 6 + 8 * i, 8);
			sketch->hashes[i] = pg_ntoh64(hash);
			if (i > 0 && sketch->hashes[i] <= sketch->hashes[i - 1])
				invalid_sketch("The hashes are not in strictly increasing order.");
		}
		sketch->count = (int) count;
	}
	else if (data[1] == 'd')
	{
		if (length != 2 + SKETCH_REGISTERS)
			invalid_sketch("The registers have the wrong length.");
		sketch->registers = MemoryContextAlloc(GetMemoryChunkContext(sketch), SKETCH_REGISTERS);
		memcpy(sketch->registers, data + 2, SKETCH_REGISTERS);
		for (int i = 0; i < SKETCH_REGISTERS; i++)
			if (sketch->registers[i] > SKETCH_MAX_RANK)
				invalid_sketch("A register is out of range.");
		sketch->count = -1;
	}
	else
		invalid_sketch("The mode is neither a list nor registers.");
	return sketch;
}

/* Measures --------------------------------------------------------------- */

const char *
measure_kind_name(MeasureKind kind)
{
	return measure_names[kind];
}

/* The type of a measure's result, for an argument of the given type. */
Oid
measure_result_type(MeasureKind kind, Oid argument_type)
{
	switch (kind)
	{
		case MEASURE_COUNT_ROWS:
		case MEASURE_COUNT:
		case MEASURE_APPROX_COUNT_DISTINCT:
			return INT8OID;
		case MEASURE_SUM:
			return argument_type == INT2OID || argument_type == INT4OID ? INT8OID : NUMERICOID;
		case MEASURE_BOOL_OR:
		case MEASURE_BOOL_AND:
			return BOOLOID;
		default:
			return argument_type;
	}
}

/*
 * Prepares what adding values of a type to a measure takes; raises an error
 * when the type does not suit the measure.
 */
void
measure_input_init(MeasureInput *input, MeasureKind kind, Oid type, Oid collation)
{
	TypeCacheEntry *entry;

	memset(input, 0, sizeof(MeasureInput));
	input->kind = kind;
	input->type = type;
	if (kind == MEASURE_COUNT_ROWS)
		return;
	/* without one from an expression, the type's: what a column of it has */
	input->collation = OidIsValid(collation) ? collation : get_typcollation(type);
	get_typlenbyvalalign(type, &input->length, &input->byval, &input->align);
	switch (kind)
	{
		case MEASURE_SUM:
			if (type != INT2OID && type != INT4OID && type != INT8OID && type != NUMERICOID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("sum of type %s is not supported", format_type_be(type)),
						 errdetail("A measure sums smallint, integer, bigint or numeric: a sum of floating-point values depends on the order of the events."),
						 errhint("Cast the value to numeric.")));
			break;
		case MEASURE_BOOL_OR:
		case MEASURE_BOOL_AND:
			if (type != BOOLOID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("%s needs a boolean, not %s", measure_names[kind], format_type_be(type))));
			break;
		case MEASURE_MIN:
		case MEASURE_MAX:
		case MEASURE_FIRST:
		case MEASURE_LAST:
			entry = lookup_type_cache(type, TYPECACHE_CMP_PROC_FINFO);
			if (!OidIsValid(entry->cmp_proc))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_FUNCTION),
						 errmsg("could not identify an ordering operator for type %s", format_type_be(type)),
						 errdetail("%s needs a type with a default btree operator class.", measure_names[kind])));
			fmgr_info_copy(&input->compare, &entry->cmp_proc_finfo, CurrentMemoryContext);
			break;
		case MEASURE_APPROX_COUNT_DISTINCT:
			entry = lookup_type_cache(type, TYPECACHE_HASH_EXTENDED_PROC_FINFO);
			if (!OidIsValid(entry->hash_extended_proc))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_FUNCTION),
						 errmsg("could not identify an extended hash function for type %s", format_type_be(type)),
						 errdetail("approx_count_distinct needs a type with a default hash operator class.")));
			fmgr_info_copy(&input->hash, &entry->hash_extended_proc_finfo, CurrentMemoryContext);
			break;
		default:
			break;
	}
}

static int
compare_values(const MeasureInput *input, Datum a, Datum b)
{
	return DatumGetInt32(FunctionCall2Coll((FmgrInfo *) &input->compare, input->collation, a, b));
}

/* Keeps a value: copied into context, or as it is when context is NULL. */
static void
keep_value(const MeasureInput *input, MeasureState *state, Datum value, MemoryContext context)
{
	if (context != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(context);

		value = datumCopy(value, input->byval, input->length);
		MemoryContextSwitchTo(old);
	}
	state->value = value;
	state->has_value = true;
}

static Datum
keep_numeric(Datum value, MemoryContext context)
{
	MemoryContext old;

	if (context == NULL)
		return value;
	old = MemoryContextSwitchTo(context);
	value = datumCopy(value, false, -1);
	MemoryContextSwitchTo(old);
	return value;
}

/* How (at, value) compares with (state's at, state's value). */
static int
compare_timed(const MeasureInput *input, const MeasureState *state, TimestampTz at, Datum value)
{
	if (at != state->at)
		return at < state->at ? -1 : 1;
	return compare_values(input, value, state->value);
}

static void
add_sum(const MeasureInput *input, MeasureState *state, Datum value, MemoryContext context)
{
	if (measure_result_type(MEASURE_SUM, input->type) == INT8OID)
	{
		int64		addend = input->type == INT2OID ? DatumGetInt16(value) : DatumGetInt32(value);
		int64		total = state->has_value ? DatumGetInt64(state->value) : 0;

		if (pg_add_s64_overflow(total, addend, &total))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("bigint out of range"),
					 errdetail("The sum of a measure overflows.")));
		state->value = Int64GetDatum(total);
		state->has_value = true;
	}
	else
	{
		Numeric		addend = input->type == INT8OID ? int64_to_numeric(DatumGetInt64(value)) : DatumGetNumeric(value);

		if (state->has_value)
		{
			MemoryContext old = MemoryContextSwitchTo(context != NULL ? context : CurrentMemoryContext);

			state->value = NumericGetDatum(numeric_add_opt_error(DatumGetNumeric(state->value), addend, NULL));
			MemoryContextSwitchTo(old);
		}
		else
			state->value = keep_numeric(NumericGetDatum(addend), context);
		state->has_value = true;
	}
}

/*
 * Adds a value (and, for first and last, its time) to a state; what the
 * state keeps is allocated in context, or, when context is NULL, in the
 * current context, with values kept as they are: the caller's values then
 * outlive the state, as a batch's events do.  Null values are ignored
 * (count(*) counts every call).
 */
void
measure_add(const MeasureInput *input, MeasureState *state, Datum value, bool isnull, TimestampTz at,
			MemoryContext context)
{
	if (input->kind == MEASURE_COUNT_ROWS)
	{
		state->value = Int64GetDatum((state->has_value ? DatumGetInt64(state->value) : 0) + 1);
		state->has_value = true;
		return;
	}
	if (isnull)
		return;
	switch (input->kind)
	{
		case MEASURE_COUNT:
			state->value = Int64GetDatum((state->has_value ? DatumGetInt64(state->value) : 0) + 1);
			state->has_value = true;
			break;
		case MEASURE_SUM:
			add_sum(input, state, value, context);
			break;
		case MEASURE_MIN:
			if (!state->has_value || compare_values(input, value, state->value) < 0)
				keep_value(input, state, value, context);
			break;
		case MEASURE_MAX:
			if (!state->has_value || compare_values(input, value, state->value) > 0)
				keep_value(input, state, value, context);
			break;
		case MEASURE_FIRST:
			if (!state->has_value || compare_timed(input, state, at, value) < 0)
			{
				keep_value(input, state, value, context);
				state->at = at;
			}
			break;
		case MEASURE_LAST:
			if (!state->has_value || compare_timed(input, state, at, value) > 0)
			{
				keep_value(input, state, value, context);
				state->at = at;
			}
			break;
		case MEASURE_BOOL_OR:
			state->value = BoolGetDatum((state->has_value && DatumGetBool(state->value)) || DatumGetBool(value));
			state->has_value = true;
			break;
		case MEASURE_BOOL_AND:
			state->value = BoolGetDatum((!state->has_value || DatumGetBool(state->value)) && DatumGetBool(value));
			state->has_value = true;
			break;
		case MEASURE_APPROX_COUNT_DISTINCT:
			{
				uint64		hash = DatumGetUInt64(FunctionCall2Coll((FmgrInfo *) &input->hash, input->collation,
																	value, UInt64GetDatum(0)));
				MemoryContext old = MemoryContextSwitchTo(context != NULL ? context : CurrentMemoryContext);

				if (state->sketch == NULL)
					state->sketch = distinct_sketch_create();
				distinct_sketch_add(state->sketch, hash);
				state->has_value = true;
				MemoryContextSwitchTo(old);
			}
			break;
		case MEASURE_COUNT_ROWS:
			break;
	}
}

/* Adds what another state holds to a state. */
void
measure_combine(const MeasureInput *input, MeasureState *state, const MeasureState *other, MemoryContext context)
{
	MemoryContext old;

	if (!other->has_value)
		return;
	switch (input->kind)
	{
		case MEASURE_COUNT_ROWS:
		case MEASURE_COUNT:
			{
				int64		total = state->has_value ? DatumGetInt64(state->value) : 0;

				if (pg_add_s64_overflow(total, DatumGetInt64(other->value), &total))
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("bigint out of range")));
				state->value = Int64GetDatum(total);
				state->has_value = true;
			}
			break;
		case MEASURE_SUM:
			if (measure_result_type(MEASURE_SUM, input->type) == INT8OID)
			{
				int64		total = state->has_value ? DatumGetInt64(state->value) : 0;

				if (pg_add_s64_overflow(total, DatumGetInt64(other->value), &total))
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("bigint out of range"),
							 errdetail("The sum of a measure overflows.")));
				state->value = Int64GetDatum(total);
				state->has_value = true;
			}
			else
			{
				if (!state->has_value)
				{
					state->value = keep_numeric(other->value, context);
					state->has_value = true;
					break;
				}
				old = MemoryContextSwitchTo(context != NULL ? context : CurrentMemoryContext);
				state->value = NumericGetDatum(numeric_add_opt_error(DatumGetNumeric(state->value),
																	 DatumGetNumeric(other->value), NULL));
				MemoryContextSwitchTo(old);
			}
			break;
		case MEASURE_FIRST:
		case MEASURE_LAST:
			measure_add(input, state, other->value, false, other->at, context);
			break;
		case MEASURE_MIN:
		case MEASURE_MAX:
		case MEASURE_BOOL_OR:
		case MEASURE_BOOL_AND:
			measure_add(input, state, other->value, false, 0, context);
			break;
		case MEASURE_APPROX_COUNT_DISTINCT:
			old = MemoryContextSwitchTo(context != NULL ? context : CurrentMemoryContext);
			if (state->sketch == NULL)
				state->sketch = distinct_sketch_create();
			distinct_sketch_merge(state->sketch, other->sketch);
			state->has_value = true;
			MemoryContextSwitchTo(old);
			break;
	}
}

/* The measure's value: count is 0 and the others null without values. */
Datum
measure_result(const MeasureInput *input, const MeasureState *state, bool *isnull)
{
	*isnull = false;
	if (input->kind == MEASURE_COUNT_ROWS || input->kind == MEASURE_COUNT)
		return state->has_value ? state->value : Int64GetDatum(0);
	if (input->kind == MEASURE_APPROX_COUNT_DISTINCT)
		return Int64GetDatum(state->sketch == NULL ? 0 : distinct_sketch_estimate(state->sketch));
	*isnull = !state->has_value;
	return state->has_value ? state->value : (Datum) 0;
}
