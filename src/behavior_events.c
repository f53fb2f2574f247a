/*-------------------------------------------------------------------------
 *
 * behavior_events.c
 *	  The state of the behavioral aggregates (window_funnel, retention,
 *	  sequence_match/count, sequence_next_node): the events of a group, kept
 *	  as (time, steps satisfied) and, for sequence_next_node, a value.
 *
 * States merge by concatenation, and every result is computed over the events
 * sorted by (time, steps, base flag, value): a total order on what an event
 * carries, so that two events that compare equal are interchangeable and no
 * result depends on input order, batches or parallel workers.  A serialized
 * state crosses process boundaries as bytea and is checked on the way in like
 * input from anywhere.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "sessionize.h"

#define BEHAVIOR_FORMAT 1

/* the smallest serialized event: time, steps, flags */
#define BEHAVIOR_EVENT_BYTES 16

/* events of one group, so that capacities stay well within int */
#define BEHAVIOR_MAX_EVENTS (1 << 30)

BehaviorState *
behavior_state_create(MemoryContext context, BehaviorKind kind)
{
	BehaviorState *state = MemoryContextAllocZero(context, sizeof(BehaviorState));

	state->kind = kind;
	state->sorted = true;
	return state;
}

static int
compare_events(const BehaviorEvent *a, const BehaviorEvent *b)
{
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	if (a->steps != b->steps)
		return a->steps < b->steps ? -1 : 1;
	if (a->flags != b->flags)
		return a->flags < b->flags ? -1 : 1;
	return 0;
}

/* NULL values last; others bytewise, a prefix first. */
static int
compare_values(const text *a, const text *b)
{
	int			la,
				lb,
				c;

	if (a == NULL || b == NULL)
		return (a == NULL) - (b == NULL);
	la = VARSIZE_ANY_EXHDR(a);
	lb = VARSIZE_ANY_EXHDR(b);
	c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));
	if (c != 0)
		return c;
	return (la > lb) - (la < lb);
}

static void
grow(BehaviorState *state, int needed, MemoryContext context)
{
	int			capacity;

	if (state->count + needed <= state->capacity)
		return;
	if ((int64) state->count + needed > BEHAVIOR_MAX_EVENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many events in one group")));
	capacity = Max(16, state->capacity);
	while (capacity < state->count + needed)
		capacity = Min(capacity * 2, BEHAVIOR_MAX_EVENTS);
	if (state->events == NULL)
		state->events = MemoryContextAllocHuge(context, capacity * sizeof(BehaviorEvent));
	else
		state->events = repalloc_huge(state->events, capacity * sizeof(BehaviorEvent));
	if (state->kind == BEHAVIOR_NEXT_NODE)
	{
		if (state->values == NULL)
			state->values = MemoryContextAllocHuge(context, capacity * sizeof(text *));
		else
			state->values = repalloc_huge(state->values, capacity * sizeof(text *));
	}
	state->capacity = capacity;
}

/* Appends an event; value (next node only) is copied into context. */
void
behavior_state_append(BehaviorState *state, TimestampTz ts, uint32 steps, uint32 flags,
					  text *value, MemoryContext context)
{
	BehaviorEvent *event;

	grow(state, 1, context);
	event = &state->events[state->count];
	event->ts = ts;
	event->steps = steps;
	event->flags = flags;
	if (state->kind == BEHAVIOR_NEXT_NODE)
	{
		text	   *copy = NULL;

		if (value != NULL)
		{
			copy = MemoryContextAlloc(context, VARSIZE_ANY_EXHDR(value) + VARHDRSZ);
			SET_VARSIZE(copy, VARSIZE_ANY_EXHDR(value) + VARHDRSZ);
			memcpy(VARDATA(copy), VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
		}
		state->values[state->count] = copy;
		/* values take part in the order: sort them at the end */
		state->sorted = false;
	}
	else if (state->sorted && state->count > 0 &&
			 compare_events(&state->events[state->count - 1], event) > 0)
		state->sorted = false;
	state->count++;
}

/* Adds other's events to state; the two must be of one aggregate call. */
void
behavior_state_combine(BehaviorState *state, const BehaviorState *other, MemoryContext context)
{
	if (state->kind != other->kind)
		elog(ERROR, "cannot combine states of different behavioral aggregates");
	if (other->nsteps != 0)
	{
		if (state->nsteps == 0)
		{
			state->nsteps = other->nsteps;
			state->with_tz = other->with_tz;
			state->window = other->window;
			state->mode = other->mode;
			state->pattern = other->pattern;
			state->parsed = other->parsed;
		}
		else if (state->nsteps != other->nsteps || state->window != other->window ||
				 state->mode != other->mode || state->with_tz != other->with_tz ||
				 (state->pattern != NULL) != (other->pattern != NULL) ||
				 (state->pattern != NULL && strcmp(state->pattern, other->pattern) != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("every row of a group must have the same conditions, window, mode and pattern")));
	}
	state->seen |= other->seen;
	if (other->count == 0)
		return;
	grow(state, other->count, context);
	memcpy(&state->events[state->count], other->events, other->count * sizeof(BehaviorEvent));
	if (state->kind == BEHAVIOR_NEXT_NODE)
		memcpy(&state->values[state->count], other->values, other->count * sizeof(text *));
	state->count += other->count;
	state->sorted = false;
}

static int
compare_event_qsort(const void *a, const void *b)
{
	return compare_events((const BehaviorEvent *) a, (const BehaviorEvent *) b);
}

static int
compare_index_qsort(const void *a, const void *b, void *arg)
{
	const BehaviorState *state = (const BehaviorState *) arg;
	int			i = *(const int *) a;
	int			j = *(const int *) b;
	int			c = compare_events(&state->events[i], &state->events[j]);

	if (c != 0)
		return c;
	return compare_values(state->values[i], state->values[j]);
}

/* Puts the events in behavior order: (time, steps, flags, value). */
void
behavior_state_sort(BehaviorState *state)
{
	if (state->sorted)
		return;
	if (state->kind != BEHAVIOR_NEXT_NODE)
		qsort(state->events, state->count, sizeof(BehaviorEvent), compare_event_qsort);
	else
	{
		int		   *order = palloc_extended(state->count * sizeof(int) + 1, MCXT_ALLOC_HUGE);
		BehaviorEvent *events = palloc_extended(state->count * sizeof(BehaviorEvent) + 1, MCXT_ALLOC_HUGE);
		text	  **values = palloc_extended(state->count * sizeof(text *) + 1, MCXT_ALLOC_HUGE);

		for (int i = 0; i < state->count; i++)
			order[i] = i;
		qsort_arg(order, state->count, sizeof(int), compare_index_qsort, state);
		for (int i = 0; i < state->count; i++)
		{
			events[i] = state->events[order[i]];
			values[i] = state->values[order[i]];
		}
		memcpy(state->events, events, state->count * sizeof(BehaviorEvent));
		memcpy(state->values, values, state->count * sizeof(text *));
		pfree(order);
		pfree(events);
		pfree(values);
	}
	state->sorted = true;
}

/*
 * Serialized: format, kind, steps, time type, retention's seen steps,
 * window, mode, pattern (length or -1, bytes), event count, then each event's
 * time, steps and flags, and for sequence_next_node its value (length or -1,
 * bytes).
 */
bytea *
behavior_state_serialize(const BehaviorState *state)
{
	StringInfoData buffer;

	pq_begintypsend(&buffer);
	pq_sendbyte(&buffer, BEHAVIOR_FORMAT);
	pq_sendbyte(&buffer, (uint8) state->kind);
	pq_sendbyte(&buffer, (uint8) state->nsteps);
	pq_sendbyte(&buffer, state->with_tz ? 1 : 0);
	pq_sendint32(&buffer, state->seen);
	pq_sendint64(&buffer, state->window);
	pq_sendint32(&buffer, state->mode);
	if (state->pattern == NULL)
		pq_sendint32(&buffer, -1);
	else
	{
		pq_sendint32(&buffer, strlen(state->pattern));
		pq_sendbytes(&buffer, state->pattern, strlen(state->pattern));
	}
	pq_sendint32(&buffer, state->count);
	for (int i = 0; i < state->count; i++)
	{
		pq_sendint64(&buffer, state->events[i].ts);
		pq_sendint32(&buffer, state->events[i].steps);
		pq_sendint32(&buffer, state->events[i].flags);
		if (state->kind == BEHAVIOR_NEXT_NODE)
		{
			text	   *value = state->values[i];

			if (value == NULL)
				pq_sendint32(&buffer, -1);
			else
			{
				pq_sendint32(&buffer, VARSIZE_ANY_EXHDR(value));
				pq_sendbytes(&buffer, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
			}
		}
	}
	return pq_endtypsend(&buffer);
}

static void
invalid_state(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid state of a behavioral aggregate"),
			 errdetail_internal("%s", detail)));
}

/* Reads n bytes, refusing to read past the end. */
static const char *
take(StringInfo buffer, int n)
{
	const char *data;

	if (n < 0 || n > buffer->len - buffer->cursor)
		invalid_state("The state ends early.");
	data = buffer->data + buffer->cursor;
	buffer->cursor += n;
	return data;
}

static uint32
take_uint32(StringInfo buffer)
{
	uint32		value;

	memcpy(&value, take(buffer, 4), 4);
	return pg_ntoh32(value);
}

static int64
take_int64(StringInfo buffer)
{
	uint64		value;

	memcpy(&value, take(buffer, 8), 8);
	return (int64) pg_ntoh64(value);
}

/* A state of the given kind from untrusted bytes, or an error. */
BehaviorState *
behavior_state_deserialize(bytea *serialized, BehaviorKind kind, MemoryContext context)
{
	StringInfoData buffer;
	BehaviorState *state = behavior_state_create(context, kind);
	uint32		all_steps;
	int32		length;
	int32		count;

	buffer.data = VARDATA_ANY(serialized);
	buffer.len = VARSIZE_ANY_EXHDR(serialized);
	buffer.maxlen = 0;
	buffer.cursor = 0;

	if (*take(&buffer, 1) != BEHAVIOR_FORMAT)
		invalid_state("The format byte is not 1.");
	if (*take(&buffer, 1) != (char) kind)
		invalid_state("The state is of another aggregate.");
	state->nsteps = (uint8) *take(&buffer, 1);
	if (state->nsteps > BEHAVIOR_MAX_STEPS)
		invalid_state("There are more than 32 steps.");
	all_steps = state->nsteps == 32 ? PG_UINT32_MAX : (((uint32) 1) << state->nsteps) - 1;
	switch (*take(&buffer, 1))
	{
		case 0:
			state->with_tz = false;
			break;
		case 1:
			state->with_tz = true;
			break;
		default:
			invalid_state("The time type flag is neither 0 nor 1.");
	}
	state->seen = take_uint32(&buffer);
	if ((state->seen & ~all_steps) != 0)
		invalid_state("A step out of range held.");
	state->window = take_int64(&buffer);
	if (state->window < 0)
		invalid_state("The window is negative.");
	state->mode = take_uint32(&buffer);
	if (kind == BEHAVIOR_FUNNEL &&
		((state->mode & ~FUNNEL_ALL_MODES) != 0 ||
		 ((state->mode & FUNNEL_ALLOW_REENTRY) && !(state->mode & FUNNEL_STRICT_ORDER))))
		invalid_state("The funnel mode is not valid.");
	if (kind == BEHAVIOR_NEXT_NODE && state->mode > (NEXT_NODE_LAST_MATCH << NEXT_NODE_BASE_SHIFT | NEXT_NODE_BACKWARD))
		invalid_state("The direction or base is not valid.");
	if (kind != BEHAVIOR_FUNNEL && kind != BEHAVIOR_NEXT_NODE && state->mode != 0)
		invalid_state("A mode is set.");
	length = (int32) take_uint32(&buffer);
	if (length != -1)
	{
		const char *pattern = take(&buffer, length);

		if (kind != BEHAVIOR_SEQUENCE)
			invalid_state("A pattern is set.");
		if (memchr(pattern, '\0', length) != NULL)
			invalid_state("The pattern contains a zero byte.");
		state->pattern = MemoryContextAlloc(context, length + 1);
		memcpy(state->pattern, pattern, length);
		state->pattern[length] = '\0';
		if (state->nsteps == 0)
			invalid_state("A pattern is set without conditions.");
		/* the pattern is checked like one given by hand */
		state->parsed = sequence_parse_pattern(state->pattern, state->nsteps, context);
	}
	else if (kind == BEHAVIOR_SEQUENCE && state->nsteps > 0)
		invalid_state("The pattern is missing.");
	count = (int32) take_uint32(&buffer);
	if (count < 0 || count > (buffer.len - buffer.cursor) / BEHAVIOR_EVENT_BYTES)
		invalid_state("The event count does not match the length.");
	grow(state, count, context);
	for (int i = 0; i < count; i++)
	{
		BehaviorEvent *event = &state->events[i];

		event->ts = take_int64(&buffer);
		event->steps = take_uint32(&buffer);
		event->flags = take_uint32(&buffer);
		if (TIMESTAMP_NOT_FINITE(event->ts) || !IS_VALID_TIMESTAMP(event->ts))
			invalid_state("An event time is out of range.");
		if ((event->steps & ~all_steps) != 0)
			invalid_state("An event satisfies a step out of range.");
		if ((event->flags & ~(kind == BEHAVIOR_NEXT_NODE ? BEHAVIOR_EVENT_BASE : 0)) != 0)
			invalid_state("An event has unknown flags.");
		if (kind == BEHAVIOR_NEXT_NODE)
		{
			length = (int32) take_uint32(&buffer);
			if (length == -1)
				state->values[i] = NULL;
			else
			{
				const char *data = take(&buffer, length);
				text	   *value;

				if (!pg_verifymbstr(data, length, true))
					invalid_state("A value is not valid in the database encoding.");
				value = MemoryContextAlloc(context, length + VARHDRSZ);
				SET_VARSIZE(value, length + VARHDRSZ);
				memcpy(VARDATA(value), data, length);
				state->values[i] = value;
			}
		}
		state->count++;
	}
	if (buffer.cursor != buffer.len)
		invalid_state("The state has bytes left over.");
	state->sorted = (count <= 1);
	return state;
}
