/*-------------------------------------------------------------------------
 *
 * session_set.c
 *	  The type session_set: a key's sessions as one compact value.
 *
 * A session_set stores the items of a SessionSet (sessions.c) after
 * compaction: without max_duration the sessions themselves with the time
 * each expires, which is what merging needs; with max_duration every event,
 * since a session's end then depends on where it started.  It is both what
 * the aggregates session_set() and merge() return and their transition
 * state, so that Citus, which combines only states it can ship as text, can
 * aggregate partially on its workers.
 *
 * As a transition state a set is an expanded object (utils/expandeddatum.h)
 * in a child of the aggregate context: the executor keeps a read/write
 * expanded datum without copying it, so adding an event costs what it costs
 * the SessionSet.  It is flattened only when stored or sent.  The sets of
 * all groups share that child context (see shared_set_context()).
 *
 * Text and binary input are untrusted: every session is checked, and sets are
 * coalesced through the SessionSet, so a stored set is always canonical.
 * The text form renders times in UTC, so it never depends on TimeZone or
 * DateStyle, and reads back to the same value in any session.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/int.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/expandeddatum.h"
#include "utils/memutils.h"

#include "sessionize.h"

#define SESSION_SET_FORMAT 1

/* The stored form: this header, then count SessionIntervals. */
typedef struct SessionSetData
{
	int32		vl_len_;		/* varlena header */
	uint8		format;
	uint8		unused[3];
	int32		count;
	int64		max_duration;	/* microseconds; 0 = no limit */
	SessionInterval items[FLEXIBLE_ARRAY_MEMBER];
} SessionSetData;

#define SESSION_SET_HEADER_SIZE offsetof(SessionSetData, items)
#define SESSION_SET_MAX_COUNT \
	((int32) Min(PG_INT32_MAX, (MaxAllocSize - SESSION_SET_HEADER_SIZE) / sizeof(SessionInterval)))

/* A set being built by an aggregate. */
typedef struct ExpandedSessionSet
{
	ExpandedObjectHeader header;
	SessionSet	set;			/* in line: one memory access less per event */
} ExpandedSessionSet;

static Size expanded_session_set_flat_size(ExpandedObjectHeader *eohptr);
static void expanded_session_set_flatten(ExpandedObjectHeader *eohptr, void *result,
										 Size allocated_size);

static const ExpandedObjectMethods expanded_session_set_methods = {
	expanded_session_set_flat_size,
	expanded_session_set_flatten
};

PG_FUNCTION_INFO_V1(session_set_in);
PG_FUNCTION_INFO_V1(session_set_out);
PG_FUNCTION_INFO_V1(session_set_recv);
PG_FUNCTION_INFO_V1(session_set_send);
PG_FUNCTION_INFO_V1(session_rows);

/* The size of the stored form of a set, which compacts it. */
static Size
session_set_flat_size(SessionSet *set)
{
	session_set_compact(set);
	return SESSION_SET_HEADER_SIZE + sizeof(SessionInterval) * (Size) set->count;
}

/* Writes the stored form of a set that session_set_flat_size() measured. */
static void
session_set_flatten(SessionSet *set, SessionSetData *flat, Size size)
{
	Assert(set->compact);
	Assert(size == SESSION_SET_HEADER_SIZE + sizeof(SessionInterval) * (Size) set->count);
	memset(flat, 0, SESSION_SET_HEADER_SIZE);
	SET_VARSIZE(flat, size);
	flat->format = SESSION_SET_FORMAT;
	flat->count = set->count;
	flat->max_duration = set->max_duration;
	memcpy(flat->items, set->items, sizeof(SessionInterval) * (Size) set->count);
}

static Size
expanded_session_set_flat_size(ExpandedObjectHeader *eohptr)
{
	return session_set_flat_size(&((ExpandedSessionSet *) eohptr)->set);
}

static void
expanded_session_set_flatten(ExpandedObjectHeader *eohptr, void *result, Size allocated_size)
{
	session_set_flatten(&((ExpandedSessionSet *) eohptr)->set, result, allocated_size);
}

/* Is this datum a set of ours that may be changed in place? */
static bool
is_writable_set(Datum value)
{
	return VARATT_IS_EXTERNAL_EXPANDED_RW(DatumGetPointer(value)) &&
		DatumGetEOHP(value)->eoh_methods == &expanded_session_set_methods;
}

/*
 * A read-only view of a set, expanded or stored.  A stored set is canonical,
 * so the view points into it and is marked compact: nothing reorders it.
 */
SessionSet *
session_set_read(Datum value)
{
	SessionSetData *flat;
	SessionSet *set;

	if (VARATT_IS_EXTERNAL_EXPANDED(DatumGetPointer(value)))
	{
		ExpandedObjectHeader *header = DatumGetEOHP(value);

		if (header->eoh_methods != &expanded_session_set_methods)
			elog(ERROR, "expanded object is not a session_set");
		return &((ExpandedSessionSet *) header)->set;
	}
	flat = (SessionSetData *) PG_DETOAST_DATUM(value);
	if (flat->format != SESSION_SET_FORMAT)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("session_set of unknown format %d", flat->format)));
	/* a damaged count would make us read past the value */
	if (VARSIZE(flat) < SESSION_SET_HEADER_SIZE || flat->count < 0 ||
		VARSIZE(flat) != SESSION_SET_HEADER_SIZE + sizeof(SessionInterval) * (Size) flat->count)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("session_set of %d sessions does not fit its %u bytes",
						flat->count, (unsigned int) VARSIZE(flat))));
	set = palloc0(sizeof(SessionSet));
	set->count = flat->count;
	set->capacity = flat->count;
	set->max_duration = flat->max_duration;
	set->has_max_duration = flat->count > 0 || flat->max_duration > 0;
	set->compact = true;
	set->items = flat->items;
	return set;
}

/*
 * The context that holds the sets of every group of one aggregate context.
 * The executor keeps a read/write expanded state without copying it only
 * when its context is a direct child of the aggregate context; a context per
 * group would do, but hash aggregation sums the memory of every child
 * context at each new group, which costs the square of the number of groups.
 * So all groups share one child context, found by its name among the
 * children: the context tree itself remembers it, and it goes when the
 * aggregate context is reset, whoever calls the function (Citus calls
 * transition functions through an FmgrInfo of its own for every row, so
 * fn_extra cannot keep it).
 *
 * Sharing is safe because the executor deletes a state only when its
 * transition function returns another pointer, and ours return the state
 * they were given whenever it is a read/write set.
 *
 * A set's header itself is allocated in the aggregate context, not in the
 * shared one: hash aggregation allocates each group's entry there just
 * before the group's first transition, so the header lands beside the entry
 * the executor has just read, and the read of the header at every later
 * event of the group costs no cache miss of its own (that miss took a fifth
 * of the time of session_set() over 100k groups).  The executor looks only
 * at the header's eoh_context, which is the shared context.
 */
#define SHARED_CONTEXT_NAME "session_set states"

static MemoryContext
shared_set_context(MemoryContext aggcontext)
{
	for (MemoryContext child = aggcontext->firstchild; child != NULL; child = child->nextchild)
		if (strcmp(child->name, SHARED_CONTEXT_NAME) == 0)
			return child;
	return AllocSetContextCreate(aggcontext, SHARED_CONTEXT_NAME, ALLOCSET_DEFAULT_SIZES);
}

/*
 * The set an aggregate keeps in argument argno, writable in place: the
 * argument itself when it is a read/write set of ours, otherwise a new set
 * holding a copy of the argument (when not null).  *datum is what the
 * aggregate function returns.
 */
SessionSet *
session_set_state(FunctionCallInfo fcinfo, int argno, MemoryContext aggcontext, Datum *datum)
{
	ExpandedSessionSet *expanded;
	MemoryContext context;

	if (!PG_ARGISNULL(argno) && is_writable_set(PG_GETARG_DATUM(argno)))
	{
		*datum = PG_GETARG_DATUM(argno);
		return &((ExpandedSessionSet *) DatumGetEOHP(*datum))->set;
	}

	context = shared_set_context(aggcontext);
	expanded = MemoryContextAlloc(aggcontext, sizeof(ExpandedSessionSet));
	EOH_init_header(&expanded->header, &expanded_session_set_methods, context);
	session_set_init(&expanded->set, context);
	/* a window aggregate reads its set back at every row */
	expanded->set.stream_items = AggCheckCallContext(fcinfo, NULL) == AGG_CONTEXT_AGGREGATE;
	if (!PG_ARGISNULL(argno))
		session_set_merge(&expanded->set, session_set_read(PG_GETARG_DATUM(argno)));
	*datum = EOHPGetRWDatum(&expanded->header);
	return &expanded->set;
}

static void
invalid_session_set(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input for type session_set"),
			 errdetail("%s", detail)));
}

/*
 * The stored set of untrusted items: each is checked, then the items go
 * through the SessionSet like any partial state, which sorts and coalesces
 * them.
 */
static SessionSetData *
session_set_from_items(SessionInterval *items, int32 count, int64 max_duration)
{
	SessionSet	received = {0};
	SessionSet *set;
	SessionSetData *flat;
	Size		size;

	if (max_duration < 0)
		invalid_session_set("max_duration must not be negative.");
	for (int32 i = 0; i < count; i++)
	{
		SessionInterval *item = &items[i];

		/*
		 * Only times PostgreSQL can print may be stored: the output and
		 * session_rows() fail on others.  A session that never expires
		 * expires at infinity.
		 */
		if (!IS_VALID_TIMESTAMP(item->started_at) || !IS_VALID_TIMESTAMP(item->ended_at))
			invalid_session_set("A session must start and end at finite times within the range of timestamptz.");
		if (!IS_VALID_TIMESTAMP(item->expires_at) && item->expires_at != DT_NOEND)
			invalid_session_set("A session must expire within the range of timestamptz or at infinity.");
		if (item->started_at > item->ended_at || item->ended_at >= item->expires_at)
			invalid_session_set("A session needs started_at <= ended_at < expires_at.");
		if (item->events < 1 || (item->events < 2 && item->started_at != item->ended_at))
			invalid_session_set("A session needs at least one event, and two when it lasts.");
		if (max_duration > 0 &&
			(item->events != 1 ||
			 item->expires_at > sessionize_add_usecs(item->started_at, max_duration)))
			invalid_session_set("With max_duration a set holds single events whose gap is at most max_duration.");
	}

	set = session_set_create(CurrentMemoryContext);
	if (count > 0 || max_duration > 0)
		session_set_set_max_duration(set, max_duration);
	received.has_max_duration = set->has_max_duration;
	received.max_duration = max_duration;
	received.count = count;
	received.capacity = count;
	received.items = items;
	session_set_merge(set, &received);

	size = session_set_flat_size(set);
	flat = palloc(size);
	session_set_flatten(set, flat, size);
	return flat;
}

/* Text form ---------------------------------------------------------------- */

static void
append_time(StringInfo out, TimestampTz ts)
{
	char		buffer[MAXDATELEN + 1];
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts))
		EncodeSpecialTimestamp(ts, buffer);
	else if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) == 0)
	{
		/* a time without a known zone would be printed without its offset */
		tm.tm_isdst = 0;
		EncodeDateTime(&tm, fsec, true, 0, NULL, USE_ISO_DATES, buffer);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	appendStringInfoString(out, buffer);
}

/*
 * {(started_at,ended_at,expires_at,events),...}, times in UTC, preceded by
 * "max_duration=<microseconds>us " when the set has one.
 */
Datum
session_set_out(PG_FUNCTION_ARGS)
{
	SessionSet *set = session_set_read(PG_GETARG_DATUM(0));
	StringInfoData out;

	session_set_compact(set);
	initStringInfo(&out);
	if (set->max_duration > 0)
		appendStringInfo(&out, "max_duration=" INT64_FORMAT "us ", set->max_duration);
	appendStringInfoChar(&out, '{');
	for (int32 i = 0; i < set->count; i++)
	{
		SessionInterval *item = &set->items[i];

		if (i > 0)
			appendStringInfoChar(&out, ',');
		appendStringInfoChar(&out, '(');
		append_time(&out, item->started_at);
		appendStringInfoChar(&out, ',');
		append_time(&out, item->ended_at);
		appendStringInfoChar(&out, ',');
		append_time(&out, item->expires_at);
		appendStringInfo(&out, "," INT64_FORMAT ")", item->events);
	}
	appendStringInfoChar(&out, '}');
	PG_RETURN_CSTRING(out.data);
}

/*
 * Reads min_digits to max_digits decimal digits; false also when the number
 * does not fit in int64.  19 digits hold any int64 the output writes.
 */
static bool
read_number(const char **cursor, int min_digits, int max_digits, int64 *value)
{
	const char *p = *cursor;
	int			digits = 0;

	*value = 0;
	while (digits < max_digits && *p >= '0' && *p <= '9')
	{
		if (pg_mul_s64_overflow(*value, 10, value) ||
			pg_add_s64_overflow(*value, *p - '0', value))
			return false;
		p++;
		digits++;
	}
	*cursor = p;
	return digits >= min_digits;
}

static bool
expect_char(const char **cursor, char c)
{
	if (**cursor != c)
		return false;
	(*cursor)++;
	return true;
}

/*
 * Reads a time as the output writes it, YYYY-MM-DD HH:MI:SS[.ffffff] with an
 * offset (+HH, -HH, +HH:MI) and an optional " BC", or "infinity" where
 * allowed.  Nothing depends on the session's settings, and words such as
 * 'now' are refused, so the input function is immutable.
 */
static TimestampTz
read_time(const char **cursor, bool allow_infinity)
{
	const char *p = *cursor;
	int64		year,
				month,
				day,
				hour,
				minute,
				second,
				fraction = 0,
				offset_hours,
				offset_minutes = 0;
	int			fraction_digits = 0;
	int			offset_sign;
	struct pg_tm tm = {0};
	int			tz;
	TimestampTz result;

	if (allow_infinity && strncmp(p, "infinity", 8) == 0)
	{
		*cursor = p + 8;
		return DT_NOEND;
	}
	if (!read_number(&p, 4, 9, &year) || !expect_char(&p, '-') ||
		!read_number(&p, 2, 2, &month) || !expect_char(&p, '-') ||
		!read_number(&p, 2, 2, &day) || !expect_char(&p, ' ') ||
		!read_number(&p, 2, 2, &hour) || !expect_char(&p, ':') ||
		!read_number(&p, 2, 2, &minute) || !expect_char(&p, ':') ||
		!read_number(&p, 2, 2, &second))
		invalid_session_set("A time must be written YYYY-MM-DD HH:MI:SS with an offset, such as 2024-01-01 10:00:00+00.");
	if (*p == '.')
	{
		p++;
		while (*p >= '0' && *p <= '9')
		{
			if (fraction_digits == 6)
				invalid_session_set("A time has at most six digits after the second.");
			fraction = fraction * 10 + (*p - '0');
			fraction_digits++;
			p++;
		}
		if (fraction_digits == 0)
			invalid_session_set("A decimal point must be followed by digits.");
		for (int i = fraction_digits; i < 6; i++)
			fraction *= 10;
	}
	if (*p != '+' && *p != '-')
		invalid_session_set("A time must carry its offset from UTC, such as +00.");
	offset_sign = *p == '-' ? -1 : 1;
	p++;
	if (!read_number(&p, 2, 2, &offset_hours) ||
		(*p == ':' && (p++, !read_number(&p, 2, 2, &offset_minutes))))
		invalid_session_set("An offset from UTC is written +HH or +HH:MI.");
	if (strncmp(p, " BC", 3) == 0)
	{
		p += 3;
		year = -(year - 1);
	}
	if (month < 1 || month > 12 || day < 1 ||
		day > day_tab[isleap(year)][month - 1] ||
		hour > 23 || minute > 59 || second > 59 ||
		offset_hours > 15 || offset_minutes > 59)
		invalid_session_set("A time is out of range.");

	tm.tm_year = (int) year;
	tm.tm_mon = (int) month;
	tm.tm_mday = (int) day;
	tm.tm_hour = (int) hour;
	tm.tm_min = (int) minute;
	tm.tm_sec = (int) second;
	/* PostgreSQL counts time zones in seconds west of UTC */
	tz = -offset_sign * (int) (offset_hours * SECS_PER_HOUR + offset_minutes * SECS_PER_MINUTE);
	if (tm2timestamp(&tm, (fsec_t) fraction, &tz, &result) != 0 ||
		!IS_VALID_TIMESTAMP(result))
		invalid_session_set("A time is out of range.");
	*cursor = p;
	return result;
}

static void
skip_spaces(const char **cursor)
{
	while (**cursor == ' ' || **cursor == '\t' || **cursor == '\n' || **cursor == '\r')
		(*cursor)++;
}

Datum
session_set_in(PG_FUNCTION_ARGS)
{
	const char *p = PG_GETARG_CSTRING(0);
	int64		max_duration = 0;
	int32		count = 0;
	int32		capacity = 16;
	SessionInterval *items = palloc(sizeof(SessionInterval) * capacity);

	skip_spaces(&p);
	if (strncmp(p, "max_duration=", 13) == 0)
	{
		p += 13;
		if (!read_number(&p, 1, 19, &max_duration) || max_duration == 0 ||
			strncmp(p, "us", 2) != 0)
			invalid_session_set("max_duration is written max_duration=<positive microseconds>us.");
		p += 2;
		skip_spaces(&p);
	}
	if (!expect_char(&p, '{'))
		invalid_session_set("A session_set is written {(started_at,ended_at,expires_at,events),...}.");
	skip_spaces(&p);
	if (!expect_char(&p, '}'))
	{
		for (;;)
		{
			SessionInterval *item;

			if (count == capacity)
			{
				if (capacity >= SESSION_SET_MAX_COUNT / 2)
					invalid_session_set("A session_set holds too many sessions.");
				capacity *= 2;
				items = repalloc(items, sizeof(SessionInterval) * capacity);
			}
			item = &items[count++];
			if (!expect_char(&p, '('))
				invalid_session_set("A session is written (started_at,ended_at,expires_at,events).");
			item->started_at = read_time(&p, false);
			if (!expect_char(&p, ','))
				invalid_session_set("A session is written (started_at,ended_at,expires_at,events).");
			item->ended_at = read_time(&p, false);
			if (!expect_char(&p, ','))
				invalid_session_set("A session is written (started_at,ended_at,expires_at,events).");
			item->expires_at = read_time(&p, true);
			if (!expect_char(&p, ',') || !read_number(&p, 1, 19, &item->events) ||
				!expect_char(&p, ')'))
				invalid_session_set("A session is written (started_at,ended_at,expires_at,events).");
			skip_spaces(&p);
			if (expect_char(&p, '}'))
				break;
			if (!expect_char(&p, ','))
				invalid_session_set("Sessions are separated by commas and end with }.");
			skip_spaces(&p);
		}
	}
	skip_spaces(&p);
	if (*p != '\0')
		invalid_session_set("Nothing may follow the closing }.");
	PG_RETURN_POINTER(session_set_from_items(items, count, max_duration));
}

/* Binary form: format byte, max_duration, count, then four int64 per item. */
Datum
session_set_send(PG_FUNCTION_ARGS)
{
	SessionSet *set = session_set_read(PG_GETARG_DATUM(0));
	StringInfoData buffer;

	session_set_compact(set);
	pq_begintypsend(&buffer);
	pq_sendbyte(&buffer, SESSION_SET_FORMAT);
	pq_sendint64(&buffer, set->max_duration);
	pq_sendint32(&buffer, set->count);
	for (int32 i = 0; i < set->count; i++)
	{
		pq_sendint64(&buffer, set->items[i].started_at);
		pq_sendint64(&buffer, set->items[i].ended_at);
		pq_sendint64(&buffer, set->items[i].expires_at);
		pq_sendint64(&buffer, set->items[i].events);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buffer));
}

Datum
session_set_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buffer = (StringInfo) PG_GETARG_POINTER(0);
	int			format = pq_getmsgbyte(buffer);
	int64		max_duration;
	int32		count;
	SessionInterval *items;

	if (format != SESSION_SET_FORMAT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary session_set"),
				 errdetail("The format is %d, not %d.", format, SESSION_SET_FORMAT)));
	max_duration = pq_getmsgint64(buffer);
	count = (int32) pq_getmsgint(buffer, 4);
	if (count < 0 || count > SESSION_SET_MAX_COUNT ||
		(Size) (buffer->len - buffer->cursor) != sizeof(SessionInterval) * (Size) count)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary session_set"),
				 errdetail("The number of sessions does not match the length.")));
	items = palloc(sizeof(SessionInterval) * Max(count, 1));
	for (int32 i = 0; i < count; i++)
	{
		items[i].started_at = pq_getmsgint64(buffer);
		items[i].ended_at = pq_getmsgint64(buffer);
		items[i].expires_at = pq_getmsgint64(buffer);
		items[i].events = pq_getmsgint64(buffer);
	}
	PG_RETURN_POINTER(session_set_from_items(items, count, max_duration));
}

/* session_rows(session_set) ------------------------------------------------- */

/*
 * One row (started_at, ended_at, events) per session of the set, in time
 * order.  Without max_duration the stored items are the sessions; with it
 * the events are replayed by session_set_sessions().  The rows go into a
 * tuplestore in one call: a set is expanded for every group of a query, and
 * a call per row would cost more than the rows themselves.
 */
Datum
session_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *result_info = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	row_type = fcinfo->flinfo->fn_extra;
	MemoryContext old_context;
	Tuplestorestate *rows;
	SessionSet *set;
	SessionInterval *sessions;
	int32		count;

	if (result_info == NULL || !IsA(result_info, ReturnSetInfo) ||
		(result_info->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (row_type == NULL)
	{
		TupleDesc	descriptor;

		if (get_call_result_type(fcinfo, NULL, &descriptor) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "session_rows must return a row type");
		old_context = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		row_type = BlessTupleDesc(CreateTupleDescCopy(descriptor));
		MemoryContextSwitchTo(old_context);
		fcinfo->flinfo->fn_extra = row_type;
	}

	set = session_set_read(PG_GETARG_DATUM(0));
	if (set->max_duration == 0)
	{
		session_set_compact(set);
		sessions = set->items;
		count = set->count;
	}
	else
		sessions = session_set_sessions(set, &count);

	old_context = MemoryContextSwitchTo(result_info->econtext->ecxt_per_query_memory);
	rows = tuplestore_begin_heap(false, false, work_mem);
	/* the executor frees the descriptor it is given */
	result_info->setDesc = CreateTupleDescCopy(row_type);
	MemoryContextSwitchTo(old_context);
	for (int32 i = 0; i < count; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = TimestampTzGetDatum(sessions[i].started_at);
		values[1] = TimestampTzGetDatum(sessions[i].ended_at);
		values[2] = Int64GetDatum(sessions[i].events);
		tuplestore_putvalues(rows, row_type, values, nulls);
	}
	result_info->returnMode = SFRM_Materialize;
	result_info->setResult = rows;
	return (Datum) 0;
}
