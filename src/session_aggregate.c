/*-------------------------------------------------------------------------
 *
 * session_aggregate.c
 *	  The aggregates over sessions: sessions(ts, gap [, max_duration]) ->
 *	  session[], session_set(ts, gap [, max_duration]) -> session_set,
 *	  merge(session_set), and the pipelines' sessionize_merge_sessions().
 *
 * The state is a SessionSet (sessions.c): sessions are built from events in
 * any order, so the aggregates need no sorted input, and two states merge by
 * coalescing, which gives partial and parallel aggregation.  The public
 * aggregates keep it as a session_set (session_set.c), a type Citus can ship
 * between nodes.  The pipelines' aggregate keeps an internal state that
 * crosses process boundaries as bytea; deserialization treats the bytes as
 * untrusted and checks every field.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "sessionize.h"

#define SESSION_STATE_FORMAT 1
#define SESSION_STATE_HAS_MAX_DURATION 0x01

/* The serialized state: this header, then count SessionIntervals. */
typedef struct SessionStateHeader
{
	uint8		format;
	uint8		flags;
	int32		count;
	int64		max_duration;
} SessionStateHeader;

PG_FUNCTION_INFO_V1(sessions_transition);
PG_FUNCTION_INFO_V1(sessions_combine);
PG_FUNCTION_INFO_V1(sessions_serialize);
PG_FUNCTION_INFO_V1(sessions_deserialize);
PG_FUNCTION_INFO_V1(sessions_final);
PG_FUNCTION_INFO_V1(sessions_merge_transition);
PG_FUNCTION_INFO_V1(session_set_transition);
PG_FUNCTION_INFO_V1(session_set_combine);
PG_FUNCTION_INFO_V1(session_set_sessions_final);

static Datum sessions_array(FunctionCallInfo fcinfo, SessionSet *state);

static SessionSet *
session_set_copy(MemoryContext context, SessionSet *from)
{
	SessionSet *copy = session_set_create(context);

	session_set_merge(copy, from);
	return copy;
}

/* Adds the event of arguments ts, gap [, max_duration] to a set. */
static void
add_event_arguments(FunctionCallInfo fcinfo, SessionSet *state)
{
	TimestampTz ts;
	int64		gap;
	int64		max_duration;

	if (PG_ARGISNULL(1))
		return;
	ts = PG_GETARG_TIMESTAMPTZ(1);
	sessionize_check_event_time(ts);
	gap = sessionize_gap_value(PG_GETARG_DATUM(2), PG_ARGISNULL(2));
	if (PG_NARGS() > 3)
		max_duration = sessionize_max_duration_value(PG_GETARG_DATUM(3), PG_ARGISNULL(3), gap);
	else
		max_duration = 0;
	session_set_set_max_duration(state, max_duration);
	session_set_add_event(state, ts, gap);
}

/*
 * sessions_transition(internal, ts, gap [, max_duration]): the transition of
 * sessions() up to 0.4.0, kept so that its definition works with this
 * library until ALTER EXTENSION sessionize UPDATE.
 */
Datum
sessions_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "sessions_transition");
	SessionSet *state = PG_ARGISNULL(0) ? NULL : (SessionSet *) PG_GETARG_POINTER(0);

	if (state == NULL)
		state = session_set_create(context);
	add_event_arguments(fcinfo, state);
	PG_RETURN_POINTER(state);
}

/* session_set_transition(session_set, ts, gap [, max_duration]) */
Datum
session_set_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "session_set_transition");
	Datum		result;
	SessionSet *state = session_set_state(fcinfo, 0, context, &result);

	add_event_arguments(fcinfo, state);
	PG_RETURN_DATUM(result);
}

/*
 * session_set_combine(session_set, session_set): the combine function of
 * the aggregates, and the transition of merge().
 */
Datum
session_set_combine(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "session_set_combine");
	Datum		result;
	SessionSet *state;

	if (PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	}
	if (PG_ARGISNULL(0))
	{
		/* the first set: a copy of it becomes the state */
		session_set_state(fcinfo, 1, context, &result);
		PG_RETURN_DATUM(result);
	}
	state = session_set_state(fcinfo, 0, context, &result);
	session_set_merge(state, session_set_read(PG_GETARG_DATUM(1)));
	PG_RETURN_DATUM(result);
}

/* session_set_sessions_final(session_set): the session[] of sessions() */
Datum
session_set_sessions_final(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	return sessions_array(fcinfo, session_set_read(PG_GETARG_DATUM(0)));
}

/*
 * sessions_merge_transition(state, started_at, ended_at, expires_at, events)
 *
 * Adds a stored session, or a piece of one, to the set: how pipelines merge
 * new events into the sessions they keep.  The pieces are untrusted input
 * and checked like a deserialized state.
 */
Datum
sessions_merge_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "sessions_merge_transition");
	SessionSet *state = PG_ARGISNULL(0) ? NULL : (SessionSet *) PG_GETARG_POINTER(0);
	SessionInterval item;

	if (state == NULL)
	{
		state = session_set_create(context);
		session_set_set_max_duration(state, 0);
	}
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a session to merge must not have null fields")));
	item.started_at = PG_GETARG_TIMESTAMPTZ(1);
	item.ended_at = PG_GETARG_TIMESTAMPTZ(2);
	item.expires_at = PG_GETARG_TIMESTAMPTZ(3);
	item.events = PG_GETARG_INT64(4);
	sessionize_check_event_time(item.started_at);
	sessionize_check_event_time(item.ended_at);
	if (item.started_at > item.ended_at || item.ended_at > item.expires_at || item.events < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid session to merge"),
				 errdetail("A session needs started_at <= ended_at <= expires_at and at least one event.")));
	session_set_add_interval(state, &item);
	PG_RETURN_POINTER(state);
}

Datum
sessions_combine(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "sessions_combine");
	SessionSet *into = PG_ARGISNULL(0) ? NULL : (SessionSet *) PG_GETARG_POINTER(0);
	SessionSet *from = PG_ARGISNULL(1) ? NULL : (SessionSet *) PG_GETARG_POINTER(1);

	if (from == NULL)
	{
		if (into == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(into);
	}
	if (into == NULL)
		PG_RETURN_POINTER(session_set_copy(context, from));
	session_set_merge(into, from);
	PG_RETURN_POINTER(into);
}

Datum
sessions_serialize(PG_FUNCTION_ARGS)
{
	SessionSet *state;
	SessionStateHeader header = {0};
	Size		size;
	bytea	   *result;

	sessionize_aggregate_context(fcinfo, "sessions_serialize");
	state = (SessionSet *) PG_GETARG_POINTER(0);
	session_set_compact(state);

	header.format = SESSION_STATE_FORMAT;
	header.flags = state->has_max_duration ? SESSION_STATE_HAS_MAX_DURATION : 0;
	header.count = state->count;
	header.max_duration = state->max_duration;

	size = VARHDRSZ + sizeof(header) + sizeof(SessionInterval) * (Size) state->count;
	result = palloc_extended(size, MCXT_ALLOC_HUGE);
	SET_VARSIZE(result, size);
	memcpy(VARDATA(result), &header, sizeof(header));
	memcpy(VARDATA(result) + sizeof(header), state->items,
		   sizeof(SessionInterval) * (Size) state->count);
	PG_RETURN_BYTEA_P(result);
}

static void
invalid_state(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid sessions aggregate state"),
			 errdetail("%s", detail)));
}

Datum
sessions_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *bytes = PG_GETARG_BYTEA_PP(0);
	const char *data = VARDATA_ANY(bytes);
	Size		length = VARSIZE_ANY_EXHDR(bytes);
	SessionStateHeader header;
	SessionSet *state;

	/*
	 * The result is short-lived: the combine function copies it into the
	 * aggregate context only when it has no state of its own yet.
	 */
	sessionize_aggregate_context(fcinfo, "sessions_deserialize");
	if (length < sizeof(header))
		invalid_state("The state is shorter than its header.");
	memcpy(&header, data, sizeof(header));
	if (header.format != SESSION_STATE_FORMAT)
		invalid_state("The state has an unknown format.");
	if ((header.flags & ~SESSION_STATE_HAS_MAX_DURATION) != 0)
		invalid_state("The state has unknown flags.");
	if (header.count < 0 ||
		length != sizeof(header) + sizeof(SessionInterval) * (Size) header.count)
		invalid_state("The state's length does not match its number of sessions.");
	if (header.max_duration < 0 ||
		(header.max_duration != 0 && !(header.flags & SESSION_STATE_HAS_MAX_DURATION)))
		invalid_state("The state has an invalid max_duration.");

	state = session_set_create(CurrentMemoryContext);
	state->has_max_duration = (header.flags & SESSION_STATE_HAS_MAX_DURATION) != 0;
	state->max_duration = header.max_duration;
	if (header.count > 0)
	{
		SessionSet	received = {0};

		received.count = header.count;
		received.capacity = header.count;
		received.items = palloc_extended(sizeof(SessionInterval) * (Size) header.count,
										 MCXT_ALLOC_HUGE);
		memcpy(received.items, data + sizeof(header), sizeof(SessionInterval) * (Size) header.count);
		for (int32 i = 0; i < header.count; i++)
		{
			SessionInterval *item = &received.items[i];

			if (TIMESTAMP_NOT_FINITE(item->started_at) || TIMESTAMP_NOT_FINITE(item->ended_at) ||
				item->started_at > item->ended_at || item->ended_at > item->expires_at ||
				item->events < 1)
				invalid_state("The state holds an invalid session.");
		}
		session_set_merge(state, &received);
	}
	PG_RETURN_POINTER(state);
}

/* sessions_final(internal): the sessions of an internal state as an array */
Datum
sessions_final(PG_FUNCTION_ARGS)
{
	sessionize_aggregate_context(fcinfo, "sessions_final");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	return sessions_array(fcinfo, (SessionSet *) PG_GETARG_POINTER(0));
}

/*
 * Builds the session[] result.  The element type is the composite named by
 * the final function's declared result, so the timestamp and timestamptz
 * flavours share this code (both are microseconds since 2000).  It is read
 * from the function, not the call expression, which Citus's combining on
 * the coordinator does not pass.
 */
static Datum
sessions_array(FunctionCallInfo fcinfo, SessionSet *state)
{
	SessionInterval *sessions;
	int32		count;
	Oid			array_type;
	Oid			element_type;
	TupleDesc	descriptor;
	Datum	   *elements;
	int16		element_length;
	bool		element_by_value;
	char		element_align;

	array_type = get_func_rettype(fcinfo->flinfo->fn_oid);
	element_type = get_element_type(array_type);
	if (!OidIsValid(element_type))
		elog(ERROR, "sessions_final must return an array of sessions");
	descriptor = lookup_rowtype_tupdesc_copy(element_type, -1);
	if (descriptor->natts != 3 && descriptor->natts != 4)
		elog(ERROR, "session type must have three or four attributes");
	get_typlenbyvalalign(element_type, &element_length, &element_by_value, &element_align);

	sessions = session_set_sessions(state, &count);
	elements = palloc(sizeof(Datum) * Max(count, 1));
	for (int32 i = 0; i < count; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		/* (started_at, ended_at, events), or with expires_at third for pipelines */
		values[0] = TimestampTzGetDatum(sessions[i].started_at);
		values[1] = TimestampTzGetDatum(sessions[i].ended_at);
		if (descriptor->natts == 4)
		{
			values[2] = TimestampTzGetDatum(sessions[i].expires_at);
			values[3] = Int64GetDatum(sessions[i].events);
		}
		else
			values[2] = Int64GetDatum(sessions[i].events);
		elements[i] = HeapTupleGetDatum(heap_form_tuple(descriptor, values, nulls));
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(elements, count, element_type,
										  element_length, element_by_value,
										  element_align));
}
