/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  A pipeline's batch: validate, dedup, lateness, merge.
 *
 * A source hands over its events as the rows of a query run as the
 * pipeline's owner (the claim from a staging table, the decoding of logical
 * changes, the reading back of late events).  The batch decides the fate of
 * each event in memory, in this order, and the sinks write the outcome:
 *
 *	 1. validate: a problem the source found, a null key, a missing or
 *		infinite time, a session that would expire past the greatest time
 *		make an event a dead letter;
 *	 2. dedup: one statement claims the batch's distinct fingerprints in the
 *		dedup memory; copies seen before are dropped;
 *	 3. lateness: an event whose session would expire before the watermark,
 *		or that would change a session already final, is set aside as late;
 *	 4. merge: per key, in key order, the stored sessions the events reach
 *		are read once and merged with the events by the SessionSet of
 *		sessions.c, the one place sessions are decided.
 *
 * Something wrong with one event (bad data or a violated constraint:
 * SQLSTATE classes 22 and 23) must not fail the others: the batch is applied
 * in a subtransaction, and on such an error split in halves, each applied
 * alone, down to the event that fails alone, which becomes a dead letter.
 * k bad events among n cost O(k log n) attempts.  Anything else fails the
 * batch, which the caller retries as a whole.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/json.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/typcache.h"

#include "sessionize.h"

/* What a batch (or one range of it) did. */
typedef struct BatchCounts
{
	int64		merged;
	int64		duplicates;
	int64		late;
	int64		dead_lettered;
	bool		has_max_merged;
	TimestampTz max_merged;
} BatchCounts;

/* A type and how many events of it, while a session's counts are summed. */
typedef struct TypeCount
{
	char	   *type;
	int			length;
	int64		count;
} TypeCount;

/* The columns every source query returns, in this order. */
enum
{
	COLUMN_POSITION,
	COLUMN_KEY,
	COLUMN_TS,
	COLUMN_TS_TEXT,
	COLUMN_EVENT_TYPE,
	COLUMN_EVENT,
	COLUMN_FINGERPRINT,
	COLUMN_PROBLEM,
	SOURCE_COLUMNS
};

static const char *
timestamp_text(TimestampTz ts)
{
	char		buffer[MAXDATELEN + 1];

	return pstrdup(JsonEncodeDateTime(buffer, TimestampTzGetDatum(ts), TIMESTAMPTZOID, NULL));
}

static const char *
qualified_table(const char *pipeline, const char *suffix)
{
	return quote_qualified_identifier("sessionize", psprintf("%s%s", pipeline, suffix));
}

/*
 * Reads what the batch needs of a row of sessionize.pipelines, and the type
 * of the key in the pipeline's tables.
 */
static void
read_pipeline(PipelineBatch *batch, HeapTupleHeader pipeline)
{
	bool		isnull;
	Datum		value;
	int32		key_typmod;
	TypeCacheEntry *key_type;

	batch->name = TextDatumGetCString(GetAttributeByName(pipeline, "name", &isnull));
	batch->owner = DatumGetObjectId(GetAttributeByName(pipeline, "owner", &isnull));
	batch->gap = sessionize_interval_usecs(DatumGetIntervalP(GetAttributeByName(pipeline, "gap", &isnull)), "gap");
	value = GetAttributeByName(pipeline, "dedup_window", &isnull);
	batch->dedup_window = isnull ? NULL : DatumGetIntervalP(value);
	batch->stored_sessions = (char *) qualified_table(batch->name, "_stored_sessions");
	batch->late_events = (char *) qualified_table(batch->name, "_late");
	batch->changes = (char *) qualified_table(batch->name, "_changes");

	sink_key_type(batch->name, &batch->key_type, &key_typmod, &batch->key_collation);
	get_typlenbyvalalign(batch->key_type, &batch->key_length, &batch->key_byval, &batch->key_align);
	key_type = lookup_type_cache(batch->key_type, TYPECACHE_CMP_PROC_FINFO);
	if (!OidIsValid(key_type->cmp_proc))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the key type %s of pipeline \"%s\" has no ordering", format_type_be(batch->key_type),
						batch->name)));
	fmgr_info_copy(&batch->key_compare, &key_type->cmp_proc_finfo, CurrentMemoryContext);
}

/* Describes the (value, filter) columns of the measures, from column first. */
static void
describe_measures(const PipelineMeasures *measures, TupleDesc expected, int first)
{
	for (int m = 0; m < measures->count; m++)
	{
		const MeasureInput *input = &measures->items[m].input;

		TupleDescInitEntry(expected, first + 1 + 2 * m, "value",
						   input->kind == MEASURE_COUNT_ROWS ? BOOLOID : input->type, -1, 0);
		TupleDescInitEntry(expected, first + 2 + 2 * m, "filter", BOOLOID, -1, 0);
	}
}

/*
 * Takes an event's measure values from the (value, filter) columns of a
 * row, from column first: a value filtered out or null is skipped.
 */
static void
take_measures(const PipelineMeasures *measures, BatchEvent *event, Datum *values, bool *nulls, int first)
{
	event->measure_values = palloc(sizeof(Datum) * Max(measures->count, 1));
	event->measure_skips = palloc(sizeof(bool) * Max(measures->count, 1));
	for (int m = 0; m < measures->count; m++)
	{
		const MeasureInput *input = &measures->items[m].input;
		int			value = first + 2 * m;
		bool		filtered_out = nulls[value + 1] || !DatumGetBool(values[value + 1]);

		event->measure_skips[m] = filtered_out || (nulls[value] && input->kind != MEASURE_COUNT_ROWS);
		event->measure_values[m] = event->measure_skips[m] || nulls[value] ? (Datum) 0
			: datumCopy(values[value], input->byval, input->length);
	}
}

/*
 * Runs the source's query as the pipeline's owner and copies its rows, the
 * events of the batch, into the current memory context; with measured, the
 * query also returns the measures' columns.  Sets *last_ts to the greatest
 * finite time the source gave.
 */
static void
read_events(PipelineBatch *batch, const char *query, bool measured, Oid argument_type, Datum argument,
			bool argument_null, bool *has_last_ts, TimestampTz *last_ts)
{
	MemoryContext batch_context = CurrentMemoryContext;
	int			column_count = SOURCE_COLUMNS + (measured ? 2 * batch->measures->count : 0);
	TupleDesc	expected = CreateTemplateTupleDesc(column_count);
	Datum	   *values = palloc(sizeof(Datum) * column_count);
	bool	   *nulls = palloc(sizeof(bool) * column_count);
	SPITupleTable *rows;
	int			status;

	TupleDescInitEntry(expected, COLUMN_POSITION + 1, "position", INT8OID, -1, 0);
	TupleDescInitEntry(expected, COLUMN_KEY + 1, "key", batch->key_type, -1, 0);
	TupleDescInitEntry(expected, COLUMN_TS + 1, "ts", TIMESTAMPTZOID, -1, 0);
	TupleDescInitEntry(expected, COLUMN_TS_TEXT + 1, "ts_text", TEXTOID, -1, 0);
	TupleDescInitEntry(expected, COLUMN_EVENT_TYPE + 1, "event_type", TEXTOID, -1, 0);
	TupleDescInitEntry(expected, COLUMN_EVENT + 1, "event", JSONBOID, -1, 0);
	TupleDescInitEntry(expected, COLUMN_FINGERPRINT + 1, "fingerprint", UUIDOID, -1, 0);
	TupleDescInitEntry(expected, COLUMN_PROBLEM + 1, "problem", TEXTOID, -1, 0);
	if (measured)
		describe_measures(batch->measures, expected, SOURCE_COLUMNS);

	status = sessionize_execute_as(batch->owner, query, argument_type, argument, argument_null);
	if (status < 0 || SPI_tuptable == NULL)
		elog(ERROR, "the source query of pipeline \"%s\" failed: %s", batch->name, SPI_result_code_string(status));
	rows = SPI_tuptable;
	sessionize_check_columns(rows->tupdesc, expected);

	*has_last_ts = false;
	batch->count = (int) SPI_processed;
	batch->events = MemoryContextAllocZero(batch_context, sizeof(BatchEvent) * Max(batch->count, 1));
	for (int i = 0; i < batch->count; i++)
	{
		BatchEvent *event = &batch->events[i];

		heap_deform_tuple(rows->vals[i], rows->tupdesc, values, nulls);
		if (nulls[COLUMN_POSITION] || nulls[COLUMN_EVENT])
			elog(ERROR, "the source query of pipeline \"%s\" returned an event without position or content",
				 batch->name);
		event->position = DatumGetInt64(values[COLUMN_POSITION]);
		event->key_null = nulls[COLUMN_KEY];
		if (!event->key_null)
			event->key = datumCopy(values[COLUMN_KEY], batch->key_byval, batch->key_length);
		event->ts_null = nulls[COLUMN_TS];
		if (!event->ts_null)
		{
			event->ts = DatumGetTimestampTz(values[COLUMN_TS]);
			if (!TIMESTAMP_NOT_FINITE(event->ts) && (!*has_last_ts || event->ts > *last_ts))
			{
				*has_last_ts = true;
				*last_ts = event->ts;
			}
		}
		if (!nulls[COLUMN_TS_TEXT])
			event->ts_text = DatumGetTextPCopy(values[COLUMN_TS_TEXT]);
		if (!nulls[COLUMN_EVENT_TYPE])
			event->event_type = DatumGetTextPCopy(values[COLUMN_EVENT_TYPE]);
		event->event = DatumGetJsonbPCopy(values[COLUMN_EVENT]);
		event->fingerprint_null = nulls[COLUMN_FINGERPRINT];
		if (!event->fingerprint_null)
			event->fingerprint = *DatumGetUUIDP(values[COLUMN_FINGERPRINT]);
		if (!nulls[COLUMN_PROBLEM])
			event->problem = TextDatumGetCString(values[COLUMN_PROBLEM]);
		if (measured)
			take_measures(batch->measures, event, values, nulls, SOURCE_COLUMNS);
	}
	SPI_freetuptable(rows);
}

/* An error of the events' own: their data (SQLSTATE classes 22 and 23). */
static bool
is_event_error(const ErrorData *error)
{
	return ERRCODE_TO_CATEGORY(error->sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
		ERRCODE_TO_CATEGORY(error->sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION;
}

/*
 * Reads the events with the query that also measures them, in a
 * subtransaction; when an event's measure fails (a data error), the claim is
 * undone and false returned: the events are then claimed again and measured
 * apart, so that the failing event alone is a dead letter.
 */
static bool
read_measured_events(PipelineBatch *batch, const BatchSource *source, bool *has_last_ts, TimestampTz *last_ts)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		read_events(batch, source->measured_query, true, source->argument_type, source->argument, false,
					has_last_ts, last_ts);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	if (error == NULL)
		return true;
	if (!is_event_error(error))
		ReThrowError(error);
	batch->count = 0;
	batch->events = NULL;
	return false;
}

/*
 * Runs step(batch, first, last, counts) on events first..last (indexes)
 * in a subtransaction.  On an error of the events' own (SQLSTATE classes 22
 * and 23) the range is split in halves, each run alone, and an event that
 * fails alone is given to on_single_failure with the message; anything else
 * is thrown again.
 */
typedef void (*BatchStep) (PipelineBatch *batch, int first, int last, BatchCounts *counts);
typedef void (*SingleFailure) (PipelineBatch *batch, int index, const char *message, BatchCounts *counts);

static void
run_isolating_bad_events(PipelineBatch *batch, int first, int last, BatchStep step,
						 SingleFailure on_single_failure, BatchCounts *counts)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	BatchCounts attempt = {0};
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		step(batch, first, last, &attempt);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();

	if (error == NULL)
	{
		counts->merged += attempt.merged;
		counts->duplicates += attempt.duplicates;
		counts->late += attempt.late;
		counts->dead_lettered += attempt.dead_lettered;
		if (attempt.has_max_merged && (!counts->has_max_merged || attempt.max_merged > counts->max_merged))
		{
			counts->has_max_merged = true;
			counts->max_merged = attempt.max_merged;
		}
		return;
	}
	if (!is_event_error(error))
		ReThrowError(error);
	if (first == last)
	{
		on_single_failure(batch, first, error->message, counts);
		return;
	}
	run_isolating_bad_events(batch, first, first + (last - first) / 2, step, on_single_failure, counts);
	run_isolating_bad_events(batch, first + (last - first) / 2 + 1, last, step, on_single_failure, counts);
}

/* Reads the times the source gave as text, in the pipeline's time zone. */
static void
read_times(PipelineBatch *batch, int first, int last, BatchCounts *counts)
{
	for (int i = first; i <= last; i++)
	{
		BatchEvent *event = &batch->events[i];

		if (event->ts_null && event->ts_text != NULL)
		{
			event->ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																CStringGetDatum(text_to_cstring(event->ts_text)),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			event->ts_null = false;
		}
	}
}

/* A time that cannot be read makes its event a dead letter. */
static void
time_unreadable(PipelineBatch *batch, int index, const char *message, BatchCounts *counts)
{
	batch->events[index].problem = pstrdup(message);
}

/*
 * Reads the measures' arguments and FILTER conditions of the events that
 * have no problem yet, as the pipeline's owner.
 */
static void
read_measures(PipelineBatch *batch, int first, int last, BatchCounts *counts)
{
	int			measure_count = batch->measures->count;
	int		   *index = palloc(sizeof(int) * (last - first + 1));
	Datum	   *events = palloc(sizeof(Datum) * (last - first + 1));
	int			count = 0;
	TupleDesc	expected = CreateTemplateTupleDesc(1 + 2 * measure_count);
	Datum	   *values = palloc(sizeof(Datum) * (1 + 2 * measure_count));
	bool	   *nulls = palloc(sizeof(bool) * (1 + 2 * measure_count));
	int16		length;
	bool		byval;
	char		align;
	SPITupleTable *rows;

	for (int i = first; i <= last; i++)
		if (batch->events[i].problem == NULL)
		{
			index[count] = i;
			events[count++] = PointerGetDatum(batch->events[i].event);
		}
	if (count == 0)
		return;
	TupleDescInitEntry(expected, 1, "position", INT8OID, -1, 0);
	describe_measures(batch->measures, expected, 1);
	get_typlenbyvalalign(JSONBOID, &length, &byval, &align);
	if (sessionize_execute_as(batch->owner, batch->measures_query, JSONBARRAYOID,
							  PointerGetDatum(construct_array(events, count, JSONBOID, length, byval, align)),
							  false) != SPI_OK_SELECT)
		elog(ERROR, "the measures of pipeline \"%s\" could not be read", batch->name);
	rows = SPI_tuptable;
	sessionize_check_columns(rows->tupdesc, expected);
	if (SPI_processed != (uint64) count)
		elog(ERROR, "the measures of pipeline \"%s\" were read for %d events, not %d", batch->name,
			 (int) SPI_processed, count);
	for (int r = 0; r < count; r++)
	{
		BatchEvent *event;
		int64		position;

		heap_deform_tuple(rows->vals[r], rows->tupdesc, values, nulls);
		position = DatumGetInt64(values[0]);
		if (position < 1 || position > count)
			elog(ERROR, "the measures of pipeline \"%s\" were read for an unknown event", batch->name);
		event = &batch->events[index[position - 1]];
		take_measures(batch->measures, event, values, nulls, 1);
	}
	SPI_freetuptable(rows);
}

/* A measure that cannot be read makes its event a dead letter. */
static void
measure_unreadable(PipelineBatch *batch, int index, const char *message, BatchCounts *counts)
{
	batch->events[index].problem = pstrdup(message);
}

static void
set_fate(BatchEvent *event, EventFate fate, const char *reason)
{
	event->fate = fate;
	event->reason = (char *) reason;
}

/* 1. validate */
static void
validate(PipelineBatch *batch, int first, int last)
{
	for (int i = first; i <= last; i++)
	{
		BatchEvent *event = &batch->events[i];

		set_fate(event, EVENT_PENDING, NULL);
		if (event->problem != NULL)
			set_fate(event, EVENT_DEAD, event->problem);
		else if (event->key_null)
			set_fate(event, EVENT_DEAD, "key is null");
		else if (event->ts_null)
			set_fate(event, EVENT_DEAD, "event time is null");
		else if (TIMESTAMP_NOT_FINITE(event->ts))
			set_fate(event, EVENT_DEAD, "event time is not finite");
		else if (TIMESTAMP_NOT_FINITE(sessionize_add_usecs(event->ts, batch->gap)))
			/* a stored session expires at a time, never at infinity */
			set_fate(event, EVENT_DEAD, "timestamp out of range");
	}
}

/* 2. dedup: of the valid events, the copies seen before are duplicates */
static void
dedup(PipelineBatch *batch, int first, int last)
{
	int			count = 0;
	int		   *indexes = palloc(sizeof(int) * (last - first + 1));
	pg_uuid_t  *fingerprints = palloc(sizeof(pg_uuid_t) * (last - first + 1));
	bool	   *is_null = palloc(sizeof(bool) * (last - first + 1));
	bool	   *is_new = palloc(sizeof(bool) * (last - first + 1));

	for (int i = first; i <= last; i++)
	{
		BatchEvent *event = &batch->events[i];

		if (event->fate != EVENT_PENDING)
			continue;
		indexes[count] = i;
		fingerprints[count] = event->fingerprint;
		is_null[count] = event->fingerprint_null;
		count++;
	}
	sessionize_first_seen_many(CStringGetTextDatum(psprintf("pipeline:%s", batch->name)),
							   fingerprints, is_null, count, batch->dedup_window, is_new);
	for (int i = 0; i < count; i++)
		if (!is_new[i])
			set_fate(&batch->events[indexes[i]], EVENT_DUPLICATE, NULL);
}

/* 3a. lateness: sessions that would expire before the watermark */
static void
set_aside_expired(PipelineBatch *batch, int first, int last)
{
	for (int i = first; i <= last; i++)
	{
		BatchEvent *event = &batch->events[i];

		if (event->fate == EVENT_PENDING &&
			sessionize_add_usecs(event->ts, batch->gap) < batch->watermark)
			set_fate(event, EVENT_LATE,
					 psprintf("the session of an event at %s would expire before the watermark %s",
							  timestamp_text(event->ts), timestamp_text(batch->watermark)));
	}
}

static PipelineBatch *sorting_batch;

/* Orders events by key, then time, then position. */
static int
event_order(const void *a, const void *b)
{
	const BatchEvent *x = *(BatchEvent *const *) a;
	const BatchEvent *y = *(BatchEvent *const *) b;
	int			order;

	order = DatumGetInt32(FunctionCall2Coll(&sorting_batch->key_compare, sorting_batch->key_collation,
											x->key, y->key));
	if (order != 0)
		return order;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return x->position < y->position ? -1 : x->position > y->position;
}

/* Groups the events still pending by key, in key order. */
static KeyGroup *
group_by_key(PipelineBatch *batch, int first, int last, int *group_count)
{
	BatchEvent **pending = palloc(sizeof(BatchEvent *) * (last - first + 1));
	int			count = 0;
	KeyGroup   *groups;
	int			groups_used = 0;

	for (int i = first; i <= last; i++)
		if (batch->events[i].fate == EVENT_PENDING)
			pending[count++] = &batch->events[i];
	sorting_batch = batch;
	qsort(pending, count, sizeof(BatchEvent *), event_order);

	groups = palloc0(sizeof(KeyGroup) * Max(count, 1));
	for (int i = 0; i < count; i++)
	{
		KeyGroup   *group = groups_used > 0 ? &groups[groups_used - 1] : NULL;

		if (group == NULL ||
			DatumGetInt32(FunctionCall2Coll(&batch->key_compare, batch->key_collation,
											group->key, pending[i]->key)) != 0)
		{
			group = &groups[groups_used++];
			group->key = pending[i]->key;
			group->events = &pending[i];
			group->low = pending[i]->ts;
		}
		group->event_count++;
		group->high = sessionize_add_usecs(pending[i]->ts, batch->gap);
	}
	*group_count = groups_used;
	return groups;
}

/*
 * 3b and 4a: decides, for each event of a key, which stored sessions it
 * reaches: those that start at most a gap after it and expire at or after
 * it, at most two since sessions of a key never overlap.  An event that
 * would change a session already final (expired before the watermark) is
 * late; the sessions the others reach are touched.
 */
static void
find_reached_sessions(PipelineBatch *batch, KeyGroup *group)
{
	int			next = 0;

	for (int i = 0; i < group->event_count; i++)
	{
		BatchEvent *event = group->events[i];
		TimestampTz reach = sessionize_add_usecs(event->ts, batch->gap);
		int			reached[2];
		int			reached_count = 0;

		/* sessions are ordered by start and by expiry alike */
		while (next < group->stored_count && group->stored[next].session.expires_at < event->ts)
			next++;
		for (int s = next; s < group->stored_count && reached_count < 2; s++)
		{
			if (group->stored[s].session.started_at > reach)
				break;
			reached[reached_count++] = s;
		}
		if (!batch->replay && batch->has_watermark && reached_count > 0 &&
			group->stored[reached[0]].session.expires_at < batch->watermark)
		{
			set_fate(event, EVENT_LATE,
					 psprintf("an event at %s would change a final session (it expired at %s, before the watermark %s)",
							  timestamp_text(event->ts),
							  timestamp_text(group->stored[reached[0]].session.expires_at),
							  timestamp_text(batch->watermark)));
			continue;
		}
		set_fate(event, EVENT_MERGED, NULL);
		for (int r = 0; r < reached_count; r++)
			group->stored[reached[r]].touched = true;
	}
}

static int
type_count_order(const void *a, const void *b)
{
	const TypeCount *x = a;
	const TypeCount *y = b;
	int			order = memcmp(x->type, y->type, Min(x->length, y->length));

	if (order != 0)
		return order;
	return x->length < y->length ? -1 : x->length > y->length;
}

/*
 * The per-type counts of a merged session: those of the stored sessions it
 * replaces plus its new events'.  NULL when it has none.
 */
static Jsonb *
sum_type_counts(TypeCount *counts, int count)
{
	JsonbParseState *state = NULL;
	JsonbValue *result;
	int			kept = 0;

	if (count == 0)
		return NULL;
	qsort(counts, count, sizeof(TypeCount), type_count_order);
	for (int i = 1; i < count; i++)
	{
		if (type_count_order(&counts[kept], &counts[i]) == 0)
			counts[kept].count += counts[i].count;
		else
			counts[++kept] = counts[i];
	}
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i <= kept; i++)
	{
		JsonbValue	key;
		JsonbValue	value;

		key.type = jbvString;
		key.val.string.val = counts[i].type;
		key.val.string.len = counts[i].length;
		value.type = jbvNumeric;
		value.val.numeric = int64_to_numeric(counts[i].count);
		pushJsonbValue(&state, WJB_KEY, &key);
		pushJsonbValue(&state, WJB_VALUE, &value);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/* Adds the counts of a stored session's type_counts to the list. */
static void
add_stored_type_counts(Jsonb *type_counts, TypeCount **counts, int *count, int *capacity)
{
	JsonbIterator *iterator = JsonbIteratorInit(&type_counts->root);
	JsonbValue	value;
	JsonbIteratorToken token;
	TypeCount  *current = NULL;

	while ((token = JsonbIteratorNext(&iterator, &value, true)) != WJB_DONE)
	{
		if (token == WJB_KEY)
		{
			if (*count == *capacity)
			{
				*capacity *= 2;
				*counts = repalloc(*counts, sizeof(TypeCount) * *capacity);
			}
			current = &(*counts)[(*count)++];
			current->type = value.val.string.val;
			current->length = value.val.string.len;
			current->count = 0;
		}
		else if (token == WJB_VALUE && current != NULL)
		{
			if (value.type != jbvNumeric)
				elog(ERROR, "a stored count of events per type is not a number");
			current->count = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(value.val.numeric)));
		}
	}
}

/*
 * 4b: merges a key's touched stored sessions and its merged events into
 * sessions, appended to *merged.  set is scratch space, shared by the keys.
 */
static void
merge_key(PipelineBatch *batch, KeyGroup *group, SessionSet *set, MergedSession **merged, int *merged_count,
		  int *capacity)
{
	SessionInterval *sessions;
	int32		session_count;
	int			next_stored = 0;
	int			next_event = 0;

	session_set_clear(set);
	for (int s = 0; s < group->stored_count; s++)
		if (group->stored[s].touched)
			session_set_add_interval(set, &group->stored[s].session);
	for (int i = 0; i < group->event_count; i++)
		if (group->events[i]->fate == EVENT_MERGED)
			session_set_add_event(set, group->events[i]->ts, batch->gap);
	sessions = session_set_sessions(set, &session_count);

	for (int m = 0; m < session_count; m++)
	{
		MergedSession *result;
		int			type_capacity = 8;
		int			type_count = 0;
		TypeCount  *types = palloc(sizeof(TypeCount) * type_capacity);

		if (*merged_count == *capacity)
		{
			*capacity *= 2;
			*merged = repalloc_huge(*merged, sizeof(MergedSession) * *capacity);
		}
		result = &(*merged)[(*merged_count)++];
		result->key = group->key;
		result->session = sessions[m];
		result->revision = 1;
		result->replaced = 0;
		result->measured_since = batch->measures->version;
		result->measures = palloc0(sizeof(MeasureState) * Max(batch->measures->count, 1));

		for (; next_stored < group->stored_count &&
			 group->stored[next_stored].session.started_at <= sessions[m].ended_at; next_stored++)
		{
			StoredSession *stored = &group->stored[next_stored];

			if (!stored->touched)
				continue;
			result->replaced++;
			result->revision = Max(result->revision, stored->revision + 1);
			result->measured_since = Min(result->measured_since, stored->measured_since);
			if (stored->type_counts != NULL)
				add_stored_type_counts(stored->type_counts, &types, &type_count, &type_capacity);
			for (int i = 0; i < batch->measures->count; i++)
				measure_combine(&batch->measures->items[i].input, &result->measures[i], &stored->measures[i], NULL);
		}
		for (; next_event < group->event_count && group->events[next_event]->ts <= sessions[m].ended_at;
			 next_event++)
		{
			BatchEvent *event = group->events[next_event];

			if (event->fate != EVENT_MERGED)
				continue;
			for (int i = 0; i < batch->measures->count; i++)
				if (!event->measure_skips[i])
					measure_add(&batch->measures->items[i].input, &result->measures[i], event->measure_values[i],
								false, event->ts, NULL);
			if (event->event_type == NULL)
				continue;
			if (type_count == type_capacity)
			{
				type_capacity *= 2;
				types = repalloc(types, sizeof(TypeCount) * type_capacity);
			}
			types[type_count].type = VARDATA_ANY(event->event_type);
			types[type_count].length = VARSIZE_ANY_EXHDR(event->event_type);
			types[type_count].count = 1;
			type_count++;
		}
		result->type_counts = sum_type_counts(types, type_count);
	}
}

/*
 * Applies events first..last: every step above, then the sinks.  Runs in a
 * subtransaction of its own; an error undoes all of it.
 */
static void
apply_events(PipelineBatch *batch, int first, int last, BatchCounts *counts)
{
	KeyGroup   *groups;
	int			group_count;
	int			merged_capacity = 64;
	int			merged_count = 0;
	MergedSession *merged = palloc(sizeof(MergedSession) * merged_capacity);
	SessionSet *set = session_set_create(CurrentMemoryContext);

	validate(batch, first, last);
	if (!batch->replay)
	{
		dedup(batch, first, last);
		if (batch->has_watermark)
			set_aside_expired(batch, first, last);
	}
	groups = group_by_key(batch, first, last, &group_count);
	sink_read_sessions(batch, groups, group_count);
	for (int g = 0; g < group_count; g++)
	{
		find_reached_sessions(batch, &groups[g]);
		merge_key(batch, &groups[g], set, &merged, &merged_count, &merged_capacity);
	}
	sink_write_sessions(batch, groups, group_count, merged, merged_count);
	sink_write_rejects(batch, first, last);

	for (int i = first; i <= last; i++)
	{
		BatchEvent *event = &batch->events[i];

		switch (event->fate)
		{
			case EVENT_MERGED:
				counts->merged++;
				if (!counts->has_max_merged || event->ts > counts->max_merged)
				{
					counts->has_max_merged = true;
					counts->max_merged = event->ts;
				}
				break;
			case EVENT_DUPLICATE:
				counts->duplicates++;
				break;
			case EVENT_LATE:
				counts->late++;
				break;
			case EVENT_DEAD:
				counts->dead_lettered++;
				break;
			case EVENT_PENDING:
				elog(ERROR, "an event of pipeline \"%s\" was left undecided", batch->name);
		}
	}
}

/* An event that fails alone is a dead letter, with the error as reason. */
static void
event_failed(PipelineBatch *batch, int index, const char *message, BatchCounts *counts)
{
	set_fate(&batch->events[index], EVENT_DEAD, pstrdup(message));
	sink_write_rejects(batch, index, index);
	counts->dead_lettered++;
}

/*
 * Runs a source's query (sources.c) as the pipeline's owner, with argument
 * as $1, and applies its rows as one batch.  Events
 * whose positions are in incomplete (may be NULL) are dead letters: an
 * update that left out a value.  Without a watermark no event is late.  A
 * replay merges late events whatever the watermark, without dedup, and
 * fails as a whole on a bad event.
 */
void
sessionize_consume_events(HeapTupleHeader pipeline, bool has_watermark, TimestampTz watermark, bool replay,
						  const BatchSource *source, BatchResult *result)
{
	MemoryContext batch_context;
	MemoryContext old_context;
	PipelineBatch batch = {0};
	BatchCounts counts = {0};
	bool		measured;

	batch_context = AllocSetContextCreate(CurrentMemoryContext, "sessionize batch", ALLOCSET_DEFAULT_SIZES);
	old_context = MemoryContextSwitchTo(batch_context);

	read_pipeline(&batch, pipeline);
	batch.has_watermark = has_watermark;
	batch.watermark = watermark;
	batch.replay = replay;
	batch.measures = source->measures;
	batch.measures_query = source->measures_query;

	SPI_connect();
	measured = source->measured_query != NULL &&
		read_measured_events(&batch, source, &result->has_last_ts, &result->last_ts);
	if (!measured)
		read_events(&batch, source->query, false, source->argument_type, source->argument, false,
					&result->has_last_ts, &result->last_ts);
	if (source->incomplete != NULL)
	{
		Datum	   *positions;
		bool	   *position_nulls;
		int			position_count;

		deconstruct_array(source->incomplete, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &positions, &position_nulls, &position_count);
		for (int p = 0; p < position_count; p++)
			for (int i = 0; !position_nulls[p] && i < batch.count; i++)
				if (batch.events[i].position == DatumGetInt64(positions[p]))
					batch.events[i].problem =
						"the update leaves out a value stored out of line: the source table needs REPLICA IDENTITY FULL";
	}
	if (batch.count > 0)
	{
		if (batch.replay)
		{
			read_times(&batch, 0, batch.count - 1, &counts);
			if (batch.measures->count > 0)
				read_measures(&batch, 0, batch.count - 1, &counts);
			apply_events(&batch, 0, batch.count - 1, &counts);
		}
		else
		{
			run_isolating_bad_events(&batch, 0, batch.count - 1, read_times, time_unreadable, &counts);
			if (batch.measures->count > 0 && !measured)
				run_isolating_bad_events(&batch, 0, batch.count - 1, read_measures, measure_unreadable, &counts);
			run_isolating_bad_events(&batch, 0, batch.count - 1, apply_events, event_failed, &counts);
		}
	}
	SPI_finish();

	MemoryContextSwitchTo(old_context);
	result->consumed = batch.count;
	result->merged = counts.merged;
	result->duplicates = counts.duplicates;
	result->late = counts.late;
	result->dead_lettered = counts.dead_lettered;
	result->has_max_merged = counts.has_max_merged;
	result->max_merged = counts.max_merged;
	MemoryContextDelete(batch_context);
}
