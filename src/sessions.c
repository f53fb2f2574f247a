/*-------------------------------------------------------------------------
 *
 * sessions.c
 *	  The session semantics of sessionize, in one place.
 *
 * An event at ts with gap g keeps its session open until ts + g.  Sorted by
 * time, an event continues the current session iff ts <= expires_at (the
 * greatest ts + g so far) and, with max_duration, ts - started_at <=
 * max_duration.  Without max_duration this makes a session exactly a
 * connected piece of the union of the closed ranges [ts, ts + g], so sets of
 * sessions can be built from events in any order and merged by coalescing
 * ranges that touch.  With max_duration a session's end depends on where it
 * started, so the set keeps the events and replays them in time order.
 *
 * Gaps and durations are counted in microseconds with a day of 24 hours, the
 * way PostgreSQL compares intervals; month-based intervals have no fixed
 * length and are refused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "common/int.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "sessionize.h"

#define SESSION_SET_INITIAL_CAPACITY 16

static void session_set_grow(SessionSet *set, Size needed);
static void session_set_flush(SessionSet *set);

/*
 * Converts an interval argument to microseconds, refusing what has no fixed
 * length or is not positive.  "what" names the argument in messages.
 */
int64
sessionize_interval_usecs(const Interval *value, const char *what)
{
	int64		usecs;

	if (value->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain months or years", what),
				 errdetail("A month has no fixed length, so a %s of months is ambiguous.", what),
				 errhint("Use days, hours, minutes or seconds instead.")));

	if (pg_mul_s64_overflow((int64) value->day, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, value->time, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_INTERVAL_FIELD_OVERFLOW),
				 errmsg("%s is out of range", what)));

	if (usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be positive", what),
				 errdetail("The %s given is %s.", what,
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(value))))));
	return usecs;
}

/* Checks the gap of an event: NULL is an error. */
int64
sessionize_gap_value(Datum gap, bool isnull)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("gap must not be null"),
				 errhint("Every event needs an inactivity gap, such as interval '30 minutes'.")));
	return sessionize_interval_usecs(DatumGetIntervalP(gap), "gap");
}

/*
 * Checks the optional max_duration of an event: NULL means no limit
 * (returned as 0).  A limit shorter than the event's gap is refused, since it
 * would cut sessions that the gap says are still open.
 */
int64
sessionize_max_duration_value(Datum value, bool isnull, int64 gap)
{
	int64		max_duration;

	if (isnull)
		return 0;
	max_duration = sessionize_interval_usecs(DatumGetIntervalP(value), "max_duration");
	if (max_duration < gap)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_duration must not be shorter than gap"),
				 errhint("Pass NULL as max_duration for sessions of unlimited length.")));
	return max_duration;
}

/* Infinite event times have no session; they are refused. */
void
sessionize_check_event_time(TimestampTz ts)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("event time must be finite"),
				 errdetail("An event at infinity or -infinity cannot belong to a session.")));
}

/* ts + usecs, saturating at infinity: a session can stay open forever. */
TimestampTz
sessionize_add_usecs(TimestampTz ts, int64 usecs)
{
	TimestampTz result;

	/* END_TIMESTAMP itself is no valid time: it could not be read back */
	if (pg_add_s64_overflow(ts, usecs, &result) || result >= END_TIMESTAMP)
		return DT_NOEND;
	return result;
}

/* The number of events of two pieces of a session, or an error past int64. */
int64
sessionize_add_events(int64 a, int64 b)
{
	int64		sum;

	if (pg_add_s64_overflow(a, b, &sum))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("session event count out of range"),
				 errdetail("A session would have more than %lld events.", (long long) PG_INT64_MAX)));
	return sum;
}

/*
 * Does an event at ts, not earlier than any event of the session, continue
 * it?  max_duration 0 means no limit.
 */
bool
session_continues(const SessionInterval *session, TimestampTz ts, int64 max_duration)
{
	int64		length;

	if (ts > session->expires_at)
		return false;
	/* valid times can lie further apart than int64 counts */
	if (max_duration > 0 &&
		(pg_sub_s64_overflow(ts, session->started_at, &length) || length > max_duration))
		return false;
	return true;
}

void
session_start_with(SessionInterval *session, TimestampTz ts, int64 gap)
{
	session->started_at = ts;
	session->ended_at = ts;
	session->expires_at = sessionize_add_usecs(ts, gap);
	session->events = 1;
}

void
session_extend_with(SessionInterval *session, TimestampTz ts, int64 gap)
{
	TimestampTz expires_at = sessionize_add_usecs(ts, gap);

	if (ts > session->ended_at)
		session->ended_at = ts;
	if (expires_at > session->expires_at)
		session->expires_at = expires_at;
	session->events = sessionize_add_events(session->events, 1);
}

SessionSet *
session_set_create(MemoryContext context)
{
	SessionSet *set = MemoryContextAlloc(context, sizeof(SessionSet));

	session_set_init(set, context);
	return set;
}

/* Makes *set an empty set whose items live in context. */
void
session_set_init(SessionSet *set, MemoryContext context)
{
	memset(set, 0, sizeof(SessionSet));
	set->capacity = SESSION_SET_INITIAL_CAPACITY;
	set->items = MemoryContextAlloc(context, sizeof(SessionInterval) * set->capacity);
	set->compact = true;
}

/* Empties the set, keeping its memory, to build another key's sessions. */
void
session_set_clear(SessionSet *set)
{
	set->has_max_duration = false;
	set->max_duration = 0;
	set->count = 0;
	set->has_newest = false;
	set->compact = true;
}

/*
 * Fixes the max_duration of the set from its first event; every later event,
 * and every set merged in, must agree, since sessions cut at different
 * lengths cannot be combined.
 */
void
session_set_set_max_duration(SessionSet *set, int64 max_duration)
{
	if (!set->has_max_duration)
	{
		set->has_max_duration = true;
		set->max_duration = max_duration;
	}
	else if (set->max_duration != max_duration)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_duration must be the same for every event of a key"),
				 errhint("Pass max_duration as a constant.")));
}

static int
session_interval_compare(const void *a, const void *b)
{
	const SessionInterval *x = a;
	const SessionInterval *y = b;

	if (x->started_at != y->started_at)
		return x->started_at < y->started_at ? -1 : 1;
	return 0;
}

/*
 * Sorts the items by start; without max_duration also coalesces every run of
 * touching intervals into one, so the items become the sessions themselves.
 * The stored form of a set (session_set.c) is its compacted items.
 */
void
session_set_compact(SessionSet *set)
{
	int			kept = 0;

	session_set_flush(set);
	if (set->compact)
		return;
	qsort(set->items, set->count, sizeof(SessionInterval), session_interval_compare);
	if (set->max_duration == 0)
	{
		for (int i = 1; i < set->count; i++)
		{
			SessionInterval *current = &set->items[kept];
			SessionInterval *next = &set->items[i];

			if (next->started_at <= current->expires_at)
			{
				if (next->ended_at > current->ended_at)
					current->ended_at = next->ended_at;
				if (next->expires_at > current->expires_at)
					current->expires_at = next->expires_at;
				current->events = sessionize_add_events(current->events, next->events);
			}
			else
				set->items[++kept] = *next;
		}
		if (set->count > 0)
			set->count = kept + 1;
	}
	set->compact = true;
}

/* Makes room for one more item, coalescing first when that frees space. */
static void
session_set_reserve(SessionSet *set)
{
	if (set->count < set->capacity)
		return;
	if (set->max_duration == 0)
	{
		session_set_compact(set);
		if (set->count <= set->capacity / 2)
			return;
	}
	session_set_grow(set, (Size) set->capacity + 1);
}

/*
 * Writes an item with stores that bypass the cache.  An aggregate over many
 * groups appends to each group's array once in a long while, so an ordinary
 * store finds its line long gone and must first read it from memory, and
 * stores waiting for those reads hold up the executor's own; the items are
 * read only at the end, in order.  On other processors an ordinary store.
 */
static inline void
store_past_cache(SessionInterval *to, const SessionInterval *item)
{
#if defined(__x86_64__)
	long long  *words = (long long *) to;

	StaticAssertStmt(sizeof(SessionInterval) == 4 * sizeof(long long),
					 "a session is four 64-bit words");
	_mm_stream_si64(words, item->started_at);
	_mm_stream_si64(words + 1, item->ended_at);
	_mm_stream_si64(words + 2, item->expires_at);
	_mm_stream_si64(words + 3, item->events);
#else
	*to = *item;
#endif
}

/*
 * Moves the newest item into the array, where every function but
 * session_set_add_interval() expects it.
 */
static void
session_set_flush(SessionSet *set)
{
	SessionInterval newest;
	bool		was_compact = set->compact;

	if (!set->has_newest)
		return;
	newest = set->newest;
	set->has_newest = false;
	session_set_reserve(set);
	/* coalescing to make room changed the last item: compare anew */
	if (!was_compact && set->compact && set->count > 0)
	{
		SessionInterval *last = &set->items[set->count - 1];

		if (newest.started_at < last->started_at ||
			(set->max_duration == 0 && newest.started_at <= last->expires_at))
			set->compact = false;
	}
	if (set->stream_items)
		store_past_cache(&set->items[set->count++], &newest);
	else
		set->items[set->count++] = newest;
}

/*
 * Adds an interval.  The newest item is kept in the set itself rather than
 * in the array, so that in-order input, which mostly extends it or starts
 * the next one, reads no memory but the set's own.
 */
void
session_set_add_interval(SessionSet *set, const SessionInterval *item)
{
	SessionInterval *newest = &set->newest;
	SessionInterval previous;

	if (set->has_newest)
	{
		/* In-order input mostly extends the newest item: merge it in place. */
		if (set->max_duration == 0 &&
			item->started_at <= newest->expires_at && newest->started_at <= item->expires_at)
		{
			if (item->started_at < newest->started_at)
			{
				/* it may reach back to an earlier item now */
				newest->started_at = item->started_at;
				set->compact = false;
			}
			if (item->ended_at > newest->ended_at)
				newest->ended_at = item->ended_at;
			if (item->expires_at > newest->expires_at)
				newest->expires_at = item->expires_at;
			newest->events = sessionize_add_events(newest->events, item->events);
			return;
		}
		previous = *newest;
		session_set_flush(set);

		/*
		 * Flushing may have coalesced the array, before it appended the
		 * previous newest item: that one is its last item now.
		 */
		if (item->started_at < previous.started_at ||
			(set->max_duration == 0 && item->started_at <= previous.expires_at))
			set->compact = false;
	}
	else if (set->count > 0)
	{
		SessionInterval *last = &set->items[set->count - 1];

		if (item->started_at < last->started_at ||
			(set->max_duration == 0 && item->started_at <= last->expires_at))
			set->compact = false;
	}
	set->newest = *item;
	set->has_newest = true;
}

void
session_set_add_event(SessionSet *set, TimestampTz ts, int64 gap)
{
	SessionInterval item;

	session_start_with(&item, ts, gap);
	session_set_add_interval(set, &item);
}

/* Grows the item array to hold at least "needed" items. */
static void
session_set_grow(SessionSet *set, Size needed)
{
	Size		capacity = set->capacity;

	if (needed <= (Size) set->capacity)
		return;
	while (capacity < needed)
		capacity *= 2;
	if (capacity > PG_INT32_MAX || capacity * sizeof(SessionInterval) > MaxAllocHugeSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many events for one key")));
	set->items = repalloc_huge(set->items, sizeof(SessionInterval) * capacity);
	set->capacity = (int32) capacity;
}

/*
 * Adds the items of a set of the same key to "into": appended in bulk and
 * coalesced at once, so that combining partial states stays linear.
 */
void
session_set_merge(SessionSet *into, SessionSet *from)
{
	session_set_flush(into);
	session_set_flush(from);
	if (from->has_max_duration)
		session_set_set_max_duration(into, from->max_duration);
	if (from->count == 0)
		return;
	session_set_grow(into, (Size) into->count + from->count);
	memcpy(into->items + into->count, from->items, sizeof(SessionInterval) * from->count);
	into->count += from->count;
	into->compact = false;
	if (into->max_duration == 0)
		session_set_compact(into);
}

/*
 * Returns the sessions of the set ordered by start, in a new array allocated
 * in the current memory context, and their number in *count.  The set itself
 * keeps its meaning, so more events may be added afterwards (as a window
 * aggregate does).  With max_duration the events are replayed in time order
 * through the same session_continues() test the window functions use.
 */
SessionInterval *
session_set_sessions(SessionSet *set, int32 *count)
{
	SessionInterval *sessions;
	int32		kept = 0;

	session_set_compact(set);
	sessions = palloc_extended(sizeof(SessionInterval) * Max(set->count, 1),
							   MCXT_ALLOC_HUGE);
	if (set->max_duration == 0 || set->count == 0)
	{
		memcpy(sessions, set->items, sizeof(SessionInterval) * set->count);
		*count = set->count;
		return sessions;
	}

	sessions[0] = set->items[0];
	for (int32 i = 1; i < set->count; i++)
	{
		SessionInterval *current = &sessions[kept];
		SessionInterval *event = &set->items[i];

		if (session_continues(current, event->started_at, set->max_duration))
		{
			if (event->ended_at > current->ended_at)
				current->ended_at = event->ended_at;
			if (event->expires_at > current->expires_at)
				current->expires_at = event->expires_at;
			current->events = sessionize_add_events(current->events, event->events);
		}
		else
			sessions[++kept] = *event;
	}
	*count = kept + 1;
	return sessions;
}
