/*-------------------------------------------------------------------------
 *
 * session_window.c
 *	  The window functions session_id() and session_start().
 *
 *	  session_id(ts, gap [, max_duration]) OVER (PARTITION BY k ORDER BY ts)
 *
 * One pass over the partition: the partition-local state holds the current
 * session, and each row either continues it or starts the next one, decided
 * by session_continues() in sessions.c.  The rows must arrive in ts order;
 * a row earlier than its predecessor is an error rather than a silently
 * wrong number.  Rows with a NULL ts belong to no session and return NULL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "windowapi.h"

#include "sessionize.h"

typedef struct SessionWindowState
{
	int64		next_position;	/* the row expected next */
	bool		in_session;		/* a session has begun in this partition */
	int64		session_number; /* 1-based number of the current session */
	SessionInterval session;	/* the current session */
	bool		max_duration_known;
	int64		max_duration;	/* 0 = no limit */
	bool		constant_arguments; /* gap and max_duration never change */
	int64		gap;			/* the gap read last */
} SessionWindowState;

PG_FUNCTION_INFO_V1(session_id);
PG_FUNCTION_INFO_V1(session_start);

/* An event time as the type of the window's ts argument writes it. */
static char *
event_time_text(FunctionCallInfo fcinfo, TimestampTz ts)
{
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, 0);

	if (type == TIMESTAMPOID)
		return DatumGetCString(DirectFunctionCall1(timestamp_out, TimestampGetDatum((Timestamp) ts)));
	return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(ts)));
}

/*
 * Advances the partition's state over the current row.  Returns false when
 * the row has a NULL ts and so belongs to no session.
 */
static bool
session_window_step(FunctionCallInfo fcinfo, SessionWindowState **state_out)
{
	WindowObject winobj = PG_WINDOW_OBJECT();
	SessionWindowState *state;
	int64		position = WinGetCurrentPosition(winobj);
	Datum		value;
	bool		isnull;
	TimestampTz ts;
	int64		gap;
	int64		max_duration;

	state = WinGetPartitionLocalMemory(winobj, sizeof(SessionWindowState));
	*state_out = state;
	if (position != state->next_position)
		elog(ERROR, "session window function called out of row order");
	state->next_position++;
	WinSetMarkPosition(winobj, position);

	value = WinGetFuncArgCurrent(winobj, 0, &isnull);
	if (isnull)
		return false;
	ts = DatumGetTimestampTz(value);
	sessionize_check_event_time(ts);

	/* constant arguments, as they mostly are, are read once a partition */
	if (state->constant_arguments)
		gap = state->gap;
	else
	{
		value = WinGetFuncArgCurrent(winobj, 1, &isnull);
		gap = sessionize_gap_value(value, isnull);
		max_duration = 0;
		if (PG_NARGS() > 2)
		{
			value = WinGetFuncArgCurrent(winobj, 2, &isnull);
			max_duration = sessionize_max_duration_value(value, isnull, gap);
		}
		if (!state->max_duration_known)
		{
			state->max_duration_known = true;
			state->max_duration = max_duration;
			state->constant_arguments = get_fn_expr_arg_stable(fcinfo->flinfo, 1) &&
				(PG_NARGS() <= 2 || get_fn_expr_arg_stable(fcinfo->flinfo, 2));
		}
		else if (state->max_duration != max_duration)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_duration must be the same for every row of a partition"),
					 errhint("Pass max_duration as a constant.")));
		state->gap = gap;
	}

	if (!state->in_session)
	{
		state->in_session = true;
		state->session_number = 1;
		session_start_with(&state->session, ts, gap);
	}
	else if (ts < state->session.ended_at)
	{
		char	   *earlier = event_time_text(fcinfo, ts);
		char	   *later = event_time_text(fcinfo, state->session.ended_at);

		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("session window rows are not in event time order"),
				 errdetail("An event at %s follows one at %s.", earlier, later),
				 errhint("Order the window by the event time: OVER (PARTITION BY key ORDER BY ts).")));
	}
	else if (session_continues(&state->session, ts, state->max_duration))
		session_extend_with(&state->session, ts, gap);
	else
	{
		state->session_number++;
		session_start_with(&state->session, ts, gap);
	}
	return true;
}

/* session_id(ts, gap [, max_duration]): 1-based session number in the partition */
Datum
session_id(PG_FUNCTION_ARGS)
{
	SessionWindowState *state;

	if (!session_window_step(fcinfo, &state))
		PG_RETURN_NULL();
	PG_RETURN_INT64(state->session_number);
}

/* session_start(ts, gap [, max_duration]): first event time of the row's session */
Datum
session_start(PG_FUNCTION_ARGS)
{
	SessionWindowState *state;

	if (!session_window_step(fcinfo, &state))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(state->session.started_at);
}
