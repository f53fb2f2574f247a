/*-------------------------------------------------------------------------
 *
 * behavior_aggregates.c
 *	  The SQL faces of the behavioral aggregates: window_funnel,
 *	  window_funnel_events, retention, sequence_match, sequence_count,
 *	  sequence_match_events and sequence_next_node.
 *
 * Transition functions check their arguments and append events to a
 * BehaviorState (behavior_events.c); final functions hand the sorted events
 * to funnels.c or sequences.c.  The window, mode, pattern, direction and
 * base must be the same in every row of a group, or the result would depend
 * on which row came first.  NULL conditions count as false; rows with a NULL
 * time are skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(funnel_transition);
PG_FUNCTION_INFO_V1(funnel_final);
PG_FUNCTION_INFO_V1(funnel_events_final);
PG_FUNCTION_INFO_V1(funnel_deserialize);
PG_FUNCTION_INFO_V1(retention_transition);
PG_FUNCTION_INFO_V1(retention_final);
PG_FUNCTION_INFO_V1(retention_deserialize);
PG_FUNCTION_INFO_V1(sequence_transition);
PG_FUNCTION_INFO_V1(sequence_match_final);
PG_FUNCTION_INFO_V1(sequence_count_final);
PG_FUNCTION_INFO_V1(sequence_events_final);
PG_FUNCTION_INFO_V1(sequence_deserialize);
PG_FUNCTION_INFO_V1(next_node_transition);
PG_FUNCTION_INFO_V1(next_node_final);
PG_FUNCTION_INFO_V1(next_node_deserialize);
PG_FUNCTION_INFO_V1(behavior_combine);
PG_FUNCTION_INFO_V1(behavior_serialize);

static void
not_null(FunctionCallInfo fcinfo, int argument, const char *what)
{
	if (PG_ARGISNULL(argument))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

/* Whether a text argument equals the string a state keeps. */
static bool
same_text(text *value, const char *kept)
{
	int			length = VARSIZE_ANY_EXHDR(value);

	return kept != NULL && strlen(kept) == length && memcmp(VARDATA_ANY(value), kept, length) == 0;
}

static void
setting_changed(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s must be the same in every row of a group", what),
			 errhint("Pass a constant, or group by it.")));
}

static char *
kept_text(text *value, MemoryContext context)
{
	return MemoryContextStrdup(context, text_to_cstring(value));
}

/*
 * The steps an array of conditions says held, as bits (NULL is false), and
 * the number of conditions; a NULL array is a row where none held.
 */
static uint32
read_steps(FunctionCallInfo fcinfo, int argument, int *nsteps)
{
	ArrayType  *array;
	int			n;
	bits8	   *nulls;
	char	   *data;
	uint32		steps = 0;

	*nsteps = 0;
	if (PG_ARGISNULL(argument))
		return 0;
	array = PG_GETARG_ARRAYTYPE_P(argument);
	if (ARR_ELEMTYPE(array) != BOOLOID)
		elog(ERROR, "conditions must be boolean");
	n = ArrayGetNItems(ARR_NDIM(array), ARR_DIMS(array));
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at least one condition is needed")));
	if (n > BEHAVIOR_MAX_STEPS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("at most %d conditions are allowed, %d are given", BEHAVIOR_MAX_STEPS, n),
				 errhint("Split the funnel or sequence in parts of at most %d steps.", BEHAVIOR_MAX_STEPS)));
	nulls = ARR_NULLBITMAP(array);
	data = ARR_DATA_PTR(array);
	for (int i = 0; i < n; i++)
	{
		if (nulls != NULL && (nulls[i / 8] & (1 << (i % 8))) == 0)
			continue;
		if (*data)
			steps |= ((uint32) 1) << i;
		data++;
	}
	*nsteps = n;
	return steps;
}

/* Sets or checks the number of conditions of a state. */
static void
set_nsteps(BehaviorState *state, int nsteps)
{
	if (nsteps == 0 || state->nsteps == nsteps)
		return;
	if (state->nsteps != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("every row of a group must have the same number of conditions"),
				 errdetail("A row has %d conditions, another %d.", state->nsteps, nsteps)));
	state->nsteps = nsteps;
}

static TimestampTz
event_time(FunctionCallInfo fcinfo, int argument)
{
	TimestampTz ts = PG_GETARG_TIMESTAMPTZ(argument);

	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("event time must be finite"),
				 errdetail("An event at infinity or -infinity has no place in a sequence.")));
	return ts;
}

static BehaviorState *
get_state(FunctionCallInfo fcinfo, MemoryContext context, BehaviorKind kind, int ts_argument)
{
	BehaviorState *state;

	if (!PG_ARGISNULL(0))
		return (BehaviorState *) PG_GETARG_POINTER(0);
	state = behavior_state_create(context, kind);
	if (ts_argument > 0)
		state->with_tz = get_fn_expr_argtype(fcinfo->flinfo, ts_argument) != TIMESTAMPOID;
	return state;
}

/*
 * funnel_transition(state, window, [mode,] ts, steps): both forms of
 * window_funnel and window_funnel_events.
 */
Datum
funnel_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "funnel_transition");
	bool		with_mode = (PG_NARGS() == 5);
	int			ts_argument = with_mode ? 3 : 2;
	BehaviorState *state = get_state(fcinfo, context, BEHAVIOR_FUNNEL, ts_argument);
	int64		window;
	int			nsteps;
	uint32		steps;

	not_null(fcinfo, 1, "window");
	window = funnel_window_value(PG_GETARG_INTERVAL_P(1));
	if (with_mode)
		not_null(fcinfo, 2, "mode");
	if (state->setting == NULL)
	{
		/* the first row: its window and mode are the group's */
		state->window = window;
		state->mode = with_mode ? funnel_parse_mode(text_to_cstring(PG_GETARG_TEXT_PP(2))) : 0;
		state->setting = with_mode ? kept_text(PG_GETARG_TEXT_PP(2), context) : MemoryContextStrdup(context, "");
	}
	else if (state->window != window)
		setting_changed("window");
	else if (with_mode && !same_text(PG_GETARG_TEXT_PP(2), state->setting))
		setting_changed("mode");
	if (PG_ARGISNULL(ts_argument))
		PG_RETURN_POINTER(state);
	steps = read_steps(fcinfo, ts_argument + 1, &nsteps);
	set_nsteps(state, nsteps);
	/* events of no step matter only to strict_order, which they stop */
	if (steps != 0 || (state->mode & FUNNEL_STRICT_ORDER))
		behavior_state_append(state, event_time(fcinfo, ts_argument), steps, 0, NULL, context);
	PG_RETURN_POINTER(state);
}

static void
check_kind(BehaviorState *state, BehaviorKind kind)
{
	if (state->kind != kind)
		elog(ERROR, "state of another behavioral aggregate");
}

/* funnel_final(state) -> integer */
Datum
funnel_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;

	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	state = (BehaviorState *) PG_GETARG_POINTER(0);
	check_kind(state, BEHAVIOR_FUNNEL);
	PG_RETURN_INT32(funnel_level(state, NULL));
}

/* An array of times, of the type the function returns. */
static Datum
times_array(FunctionCallInfo fcinfo, TimestampTz *times, int n)
{
	Oid			type = get_fn_expr_rettype(fcinfo->flinfo);
	Oid			element = OidIsValid(type) ? get_element_type(type) : InvalidOid;
	Datum	   *datums = palloc((n + 1) * sizeof(Datum));

	if (!OidIsValid(element))
		element = TIMESTAMPTZOID;
	for (int i = 0; i < n; i++)
		datums[i] = TimestampTzGetDatum(times[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(datums, n, element, sizeof(TimestampTz),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* funnel_events_final(state) -> the times of the deepest chain */
Datum
funnel_events_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;
	TimestampTz chain[BEHAVIOR_MAX_STEPS];
	int			level = 0;

	if (!PG_ARGISNULL(0))
	{
		state = (BehaviorState *) PG_GETARG_POINTER(0);
		check_kind(state, BEHAVIOR_FUNNEL);
		level = funnel_level(state, chain);
	}
	return times_array(fcinfo, chain, level);
}

/* retention_transition(state, conditions) */
Datum
retention_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "retention_transition");
	BehaviorState *state = get_state(fcinfo, context, BEHAVIOR_RETENTION, 0);
	int			nsteps;
	uint32		steps = read_steps(fcinfo, 1, &nsteps);

	set_nsteps(state, nsteps);
	state->seen |= steps;
	PG_RETURN_POINTER(state);
}

/* retention_final(state) -> boolean[]: [c1, c1 and c2, c1 and c3, ...] */
Datum
retention_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;
	Datum		datums[BEHAVIOR_MAX_STEPS];

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	state = (BehaviorState *) PG_GETARG_POINTER(0);
	check_kind(state, BEHAVIOR_RETENTION);
	if (state->nsteps == 0)
		PG_RETURN_NULL();
	for (int i = 0; i < state->nsteps; i++)
		datums[i] = BoolGetDatum((state->seen & 1) && (state->seen & ((uint32) 1 << i)));
	PG_RETURN_ARRAYTYPE_P(construct_array(datums, state->nsteps, BOOLOID, 1, true, TYPALIGN_CHAR));
}

/* sequence_transition(state, pattern, ts, conditions) */
Datum
sequence_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "sequence_transition");
	BehaviorState *state = get_state(fcinfo, context, BEHAVIOR_SEQUENCE, 2);
	text	   *pattern;
	int			nsteps;
	uint32		steps;

	not_null(fcinfo, 1, "pattern");
	pattern = PG_GETARG_TEXT_PP(1);
	if (state->pattern != NULL && !same_text(pattern, state->pattern))
		setting_changed("pattern");
	if (PG_ARGISNULL(2))
		PG_RETURN_POINTER(state);
	steps = read_steps(fcinfo, 3, &nsteps);
	set_nsteps(state, nsteps);
	if (state->pattern == NULL && state->nsteps > 0)
	{
		state->pattern = kept_text(pattern, context);
		state->parsed = sequence_parse_pattern(state->pattern, state->nsteps, context);
	}
	/* events that satisfy no condition are not part of the sequence */
	if (steps != 0)
		behavior_state_append(state, event_time(fcinfo, 2), steps, 0, NULL, context);
	PG_RETURN_POINTER(state);
}

/* sequence_match_final(state) -> boolean */
Datum
sequence_match_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	state = (BehaviorState *) PG_GETARG_POINTER(0);
	check_kind(state, BEHAVIOR_SEQUENCE);
	PG_RETURN_BOOL(sequence_count_matches(state, true, NULL, NULL) > 0);
}

/* sequence_count_final(state) -> bigint */
Datum
sequence_count_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;

	if (PG_ARGISNULL(0))
		PG_RETURN_INT64(0);
	state = (BehaviorState *) PG_GETARG_POINTER(0);
	check_kind(state, BEHAVIOR_SEQUENCE);
	PG_RETURN_INT64(sequence_count_matches(state, false, NULL, NULL));
}

/* sequence_events_final(state) -> the times of the first match's (?N) steps */
Datum
sequence_events_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;
	TimestampTz *times = NULL;
	int			n = 0;

	if (!PG_ARGISNULL(0))
	{
		state = (BehaviorState *) PG_GETARG_POINTER(0);
		check_kind(state, BEHAVIOR_SEQUENCE);
		if (state->parsed != NULL)
		{
			times = palloc((sequence_pattern_events(state->parsed) + 1) * sizeof(TimestampTz));
			sequence_count_matches(state, true, times, &n);
		}
	}
	return times_array(fcinfo, times, n);
}

/* next_node_transition(state, direction, base, ts, value, base_condition, steps) */
Datum
next_node_transition(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "next_node_transition");
	BehaviorState *state = get_state(fcinfo, context, BEHAVIOR_NEXT_NODE, 3);
	text	   *direction;
	text	   *base;
	int			nsteps;
	uint32		steps;

	not_null(fcinfo, 1, "direction");
	not_null(fcinfo, 2, "base");
	direction = PG_GETARG_TEXT_PP(1);
	base = PG_GETARG_TEXT_PP(2);
	if (state->setting == NULL)
	{
		state->mode = next_node_parse(text_to_cstring(direction), text_to_cstring(base));
		state->setting = kept_text(direction, context);
		state->setting2 = kept_text(base, context);
	}
	else if (!same_text(direction, state->setting) || !same_text(base, state->setting2))
		setting_changed("direction and base");
	if (PG_ARGISNULL(3))
		PG_RETURN_POINTER(state);
	steps = read_steps(fcinfo, 6, &nsteps);
	set_nsteps(state, nsteps);
	behavior_state_append(state, event_time(fcinfo, 3), steps,
						  (!PG_ARGISNULL(5) && PG_GETARG_BOOL(5)) ? BEHAVIOR_EVENT_BASE : 0,
						  PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4), context);
	PG_RETURN_POINTER(state);
}

/* next_node_final(state) -> text */
Datum
next_node_final(PG_FUNCTION_ARGS)
{
	BehaviorState *state;
	int			index;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	state = (BehaviorState *) PG_GETARG_POINTER(0);
	check_kind(state, BEHAVIOR_NEXT_NODE);
	index = next_node_index(state);
	if (index < 0 || state->values[index] == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(state->values[index]);
}

/* behavior_combine(state, state): the union of two groups' events */
Datum
behavior_combine(PG_FUNCTION_ARGS)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, "behavior_combine");
	BehaviorState *state = PG_ARGISNULL(0) ? NULL : (BehaviorState *) PG_GETARG_POINTER(0);
	BehaviorState *other = PG_ARGISNULL(1) ? NULL : (BehaviorState *) PG_GETARG_POINTER(1);

	if (other == NULL)
		PG_RETURN_POINTER(state);
	if (state == NULL)
		state = behavior_state_create(context, other->kind);
	behavior_state_combine(state, other, context);
	PG_RETURN_POINTER(state);
}

/* behavior_serialize(state) -> bytea */
Datum
behavior_serialize(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(behavior_state_serialize((BehaviorState *) PG_GETARG_POINTER(0)));
}

static Datum
deserialize(FunctionCallInfo fcinfo, BehaviorKind kind, const char *function)
{
	MemoryContext context = sessionize_aggregate_context(fcinfo, function);

	PG_RETURN_POINTER(behavior_state_deserialize(PG_GETARG_BYTEA_PP(0), kind, context));
}

/* funnel_deserialize(bytea, internal) -> state */
Datum
funnel_deserialize(PG_FUNCTION_ARGS)
{
	return deserialize(fcinfo, BEHAVIOR_FUNNEL, "funnel_deserialize");
}

/* retention_deserialize(bytea, internal) -> state */
Datum
retention_deserialize(PG_FUNCTION_ARGS)
{
	return deserialize(fcinfo, BEHAVIOR_RETENTION, "retention_deserialize");
}

/* sequence_deserialize(bytea, internal) -> state */
Datum
sequence_deserialize(PG_FUNCTION_ARGS)
{
	return deserialize(fcinfo, BEHAVIOR_SEQUENCE, "sequence_deserialize");
}

/* next_node_deserialize(bytea, internal) -> state */
Datum
next_node_deserialize(PG_FUNCTION_ARGS)
{
	return deserialize(fcinfo, BEHAVIOR_NEXT_NODE, "next_node_deserialize");
}
