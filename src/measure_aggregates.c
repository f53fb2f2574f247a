/*-------------------------------------------------------------------------
 *
 * measure_aggregates.c
 *	  The SQL aggregates first(value, ts), last(value, ts) and
 *	  approx_count_distinct(value): the measures of measures.c that
 *	  PostgreSQL does not have, so that the query a pipeline's measures must
 *	  equal is plain SQL.
 *
 * They are mergeable: partial states combine, and cross process boundaries
 * as bytea.  A serialized first/last state carries its value in the type's
 * binary format, with the type and collation it was built with; a
 * deserialized state is checked like input from anywhere.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "sessionize.h"

#define TIMED_VALUE_FORMAT 1

PG_FUNCTION_INFO_V1(first_transition);
PG_FUNCTION_INFO_V1(last_transition);
PG_FUNCTION_INFO_V1(timed_value_combine);
PG_FUNCTION_INFO_V1(timed_value_serialize);
PG_FUNCTION_INFO_V1(timed_value_deserialize);
PG_FUNCTION_INFO_V1(timed_value_final);
PG_FUNCTION_INFO_V1(distinct_transition);
PG_FUNCTION_INFO_V1(distinct_combine);
PG_FUNCTION_INFO_V1(distinct_serialize);
PG_FUNCTION_INFO_V1(distinct_deserialize);
PG_FUNCTION_INFO_V1(distinct_final);

/* The state of first() and last(). */
typedef struct TimedValue
{
	MeasureInput input;
	MeasureState state;
} TimedValue;

/* A read-only StringInfo over bytes (initReadOnlyStringInfo() of 16+). */
static void
read_only_buffer(StringInfo buffer, char *data, int length)
{
	buffer->data = data;
	buffer->len = length;
	buffer->maxlen = 0;
	buffer->cursor = 0;
}

static TimedValue *
timed_value_create(MemoryContext context, MeasureKind kind, Oid type, Oid collation)
{
	MemoryContext old = MemoryContextSwitchTo(context);
	TimedValue *timed = palloc0(sizeof(TimedValue));

	measure_input_init(&timed->input, kind, type, collation);
	MemoryContextSwitchTo(old);
	return timed;
}

static Datum
timed_transition(FunctionCallInfo fcinfo, MeasureKind kind, const char *function)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, function);
	TimedValue *timed = PG_ARGISNULL(0) ? NULL : (TimedValue *) PG_GETARG_POINTER(0);

	if (timed == NULL)
		timed = timed_value_create(context, kind, get_fn_expr_argtype(fcinfo->flinfo, 1), PG_GET_COLLATION());
	if (!PG_ARGISNULL(1) && !PG_ARGISNULL(2))
		measure_add(&timed->input, &timed->state, PG_GETARG_DATUM(1), false, PG_GETARG_TIMESTAMPTZ(2), context);
	PG_RETURN_POINTER(timed);
}

/* first_transition(state, value, ts) */
Datum
first_transition(PG_FUNCTION_ARGS)
{
	return timed_transition(fcinfo, MEASURE_FIRST, "first_transition");
}

/* last_transition(state, value, ts) */
Datum
last_transition(PG_FUNCTION_ARGS)
{
	return timed_transition(fcinfo, MEASURE_LAST, "last_transition");
}

/* timed_value_combine(state, state) */
Datum
timed_value_combine(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "timed_value_combine");
	TimedValue *timed = PG_ARGISNULL(0) ? NULL : (TimedValue *) PG_GETARG_POINTER(0);
	TimedValue *other = PG_ARGISNULL(1) ? NULL : (TimedValue *) PG_GETARG_POINTER(1);

	if (other == NULL)
		PG_RETURN_POINTER(timed);
	if (timed == NULL)
		timed = timed_value_create(context, other->input.kind, other->input.type, other->input.collation);
	if (timed->input.kind != other->input.kind || timed->input.type != other->input.type)
		elog(ERROR, "cannot combine states of different measures");
	measure_combine(&timed->input, &timed->state, &other->state, context);
	PG_RETURN_POINTER(timed);
}

/*
 * timed_value_serialize(state) -> bytea: format, kind, type, collation,
 * whether there is a value, its time, and the value in binary.
 */
Datum
timed_value_serialize(PG_FUNCTION_ARGS)
{
	TimedValue *timed = (TimedValue *) PG_GETARG_POINTER(0);
	StringInfoData buffer;

	pq_begintypsend(&buffer);
	pq_sendbyte(&buffer, TIMED_VALUE_FORMAT);
	pq_sendbyte(&buffer, (uint8) timed->input.kind);
	pq_sendint32(&buffer, timed->input.type);
	pq_sendint32(&buffer, timed->input.collation);
	pq_sendbyte(&buffer, timed->state.has_value ? 1 : 0);
	if (timed->state.has_value)
	{
		Oid			send;
		bool		varlena;
		bytea	   *value;

		getTypeBinaryOutputInfo(timed->input.type, &send, &varlena);
		value = OidSendFunctionCall(send, timed->state.value);
		pq_sendint64(&buffer, timed->state.at);
		pq_sendint32(&buffer, VARSIZE(value) - VARHDRSZ);
		pq_sendbytes(&buffer, VARDATA(value), VARSIZE(value) - VARHDRSZ);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buffer));
}

static void
invalid_state(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid state of first() or last()"),
			 errdetail_internal("%s", detail)));
}

/* timed_value_deserialize(bytea, internal) -> state */
Datum
timed_value_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "timed_value_deserialize");
	bytea	   *serialized = PG_GETARG_BYTEA_PP(0);
	StringInfoData buffer;
	int			kind;
	Oid			type;
	Oid			collation;
	int			has_value;
	TimedValue *timed;

	read_only_buffer(&buffer, VARDATA_ANY(serialized), VARSIZE_ANY_EXHDR(serialized));
	if (buffer.len < 11 || pq_getmsgbyte(&buffer) != TIMED_VALUE_FORMAT)
		invalid_state("The format byte is not 1.");
	kind = pq_getmsgbyte(&buffer);
	if (kind != MEASURE_FIRST && kind != MEASURE_LAST)
		invalid_state("The kind is neither first nor last.");
	type = pq_getmsgint(&buffer, 4);
	collation = pq_getmsgint(&buffer, 4);
	if (!SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(type)))
		invalid_state("The type does not exist.");
	if (OidIsValid(collation) && !SearchSysCacheExists1(COLLOID, ObjectIdGetDatum(collation)))
		invalid_state("The collation does not exist.");
	timed = timed_value_create(context, (MeasureKind) kind, type, collation);
	has_value = pq_getmsgbyte(&buffer);
	if (has_value != 0 && has_value != 1)
		invalid_state("The value flag is neither 0 nor 1.");
	if (has_value)
	{
		TimestampTz at = pq_getmsgint64(&buffer);
		int			length = pq_getmsgint(&buffer, 4);
		StringInfoData value;
		Oid			receive;
		Oid			parameter;
		MemoryContext old;

		if (length < 0 || length != buffer.len - buffer.cursor)
			invalid_state("The value has the wrong length.");
		/* receive functions expect the terminating zero a StringInfo has */
		initStringInfo(&value);
		appendBinaryStringInfo(&value, pq_getmsgbytes(&buffer, length), length);
		getTypeBinaryInputInfo(type, &receive, &parameter);
		old = MemoryContextSwitchTo(context);
		timed->state.value = OidReceiveFunctionCall(receive, &value, parameter, -1);
		MemoryContextSwitchTo(old);
		if (value.cursor != value.len)
			invalid_state("The value has bytes left over.");
		timed->state.at = at;
		timed->state.has_value = true;
	}
	pq_getmsgend(&buffer);
	PG_RETURN_POINTER(timed);
}

/* timed_value_final(state, value, ts) -> the value */
Datum
timed_value_final(PG_FUNCTION_ARGS)
{
	TimedValue *timed = PG_ARGISNULL(0) ? NULL : (TimedValue *) PG_GETARG_POINTER(0);
	Datum		result;
	bool		isnull;

	if (timed == NULL)
		PG_RETURN_NULL();
	result = measure_result(&timed->input, &timed->state, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/* approx_count_distinct ---------------------------------------------------- */

/* The state: the sketch, and how values are hashed. */
typedef struct DistinctState
{
	MeasureInput input;
	MeasureState state;
} DistinctState;

static DistinctState *
distinct_state_create(MemoryContext context, Oid type, Oid collation)
{
	MemoryContext old = MemoryContextSwitchTo(context);
	DistinctState *distinct = palloc0(sizeof(DistinctState));

	if (OidIsValid(type))
		measure_input_init(&distinct->input, MEASURE_APPROX_COUNT_DISTINCT, type, collation);
	else
		distinct->input.kind = MEASURE_APPROX_COUNT_DISTINCT;
	MemoryContextSwitchTo(old);
	return distinct;
}

/* distinct_transition(state, value) */
Datum
distinct_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "distinct_transition");
	DistinctState *distinct = PG_ARGISNULL(0) ? NULL : (DistinctState *) PG_GETARG_POINTER(0);

	if (distinct == NULL)
		distinct = distinct_state_create(context, get_fn_expr_argtype(fcinfo->flinfo, 1), PG_GET_COLLATION());
	if (!PG_ARGISNULL(1))
		measure_add(&distinct->input, &distinct->state, PG_GETARG_DATUM(1), false, 0, context);
	PG_RETURN_POINTER(distinct);
}

/* distinct_combine(state, state): a combined state only merges sketches */
Datum
distinct_combine(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "distinct_combine");
	DistinctState *distinct = PG_ARGISNULL(0) ? NULL : (DistinctState *) PG_GETARG_POINTER(0);
	DistinctState *other = PG_ARGISNULL(1) ? NULL : (DistinctState *) PG_GETARG_POINTER(1);

	if (other == NULL)
		PG_RETURN_POINTER(distinct);
	if (distinct == NULL)
		distinct = distinct_state_create(context, InvalidOid, InvalidOid);
	measure_combine(&distinct->input, &distinct->state, &other->state, context);
	PG_RETURN_POINTER(distinct);
}

/* distinct_serialize(state) -> bytea: the sketch */
Datum
distinct_serialize(PG_FUNCTION_ARGS)
{
	DistinctState *distinct = (DistinctState *) PG_GETARG_POINTER(0);
	DistinctSketch *empty = distinct_sketch_create();

	PG_RETURN_BYTEA_P(distinct_sketch_serialize(distinct->state.sketch != NULL ? distinct->state.sketch : empty));
}

/* distinct_deserialize(bytea, internal) -> state */
Datum
distinct_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "distinct_deserialize");
	DistinctState *distinct = distinct_state_create(context, InvalidOid, InvalidOid);
	MemoryContext old = MemoryContextSwitchTo(context);

	distinct->state.sketch = distinct_sketch_deserialize(PG_GETARG_BYTEA_PP(0));
	distinct->state.has_value = true;
	MemoryContextSwitchTo(old);
	PG_RETURN_POINTER(distinct);
}

/* distinct_final(state) -> bigint */
Datum
distinct_final(PG_FUNCTION_ARGS)
{
	DistinctState *distinct = PG_ARGISNULL(0) ? NULL : (DistinctState *) PG_GETARG_POINTER(0);
	bool		isnull;

	if (distinct == NULL)
		PG_RETURN_INT64(0);
	PG_RETURN_DATUM(measure_result(&distinct->input, &distinct->state, &isnull));
}
