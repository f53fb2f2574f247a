/*-------------------------------------------------------------------------
 *
 * sink_sessions.c
 *	  Where a batch's outcome goes: a pipeline's sessions, change log, late
 *	  table and the dead letters.
 *
 * Each table is read or written with one statement per batch, whatever the
 * number of keys: the values travel as arrays, unnested by the statement (in
 * its select list, where a composite key stays one value).
 * Stored sessions are read per key, in key order, by their primary key;
 * those the batch replaces are deleted by their row address, read with them
 * (batches of a pipeline are serialized, and only they write its sessions).
 * The statements run as the extension's owner; they name every object with
 * its schema and every operator with pg_catalog's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

/* Columns read per stored session. */
enum
{
	STORED_GROUP,
	STORED_ROW,
	STORED_START,
	STORED_LAST_EVENT,
	STORED_EXPIRES,
	STORED_EVENTS,
	STORED_TYPE_COUNTS,
	STORED_REVISION,
	STORED_COLUMNS
};

static Datum
make_array(Datum *values, bool *nulls, int count, Oid element_type)
{
	int16		length;
	bool		byval;
	char		align;

	get_typlenbyvalalign(element_type, &length, &byval, &align);
	return PointerGetDatum(construct_md_array(values, nulls, 1, &count, (int[]) {1}, element_type,
											  length, byval, align));
}

static Oid
key_array_type(PipelineBatch *batch)
{
	Oid			array_type = get_array_type(batch->key_type);

	if (!OidIsValid(array_type))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the key type %s of pipeline \"%s\" has no array type", format_type_be(batch->key_type),
						batch->name)));
	return array_type;
}

static void
execute(const char *query, int count, Oid *types, Datum *values, int expected)
{
	int			status = SPI_execute_with_args(query, count, types, values, NULL, false, 0);

	if (status != expected)
		elog(ERROR, "a statement of the batch failed: %s", SPI_result_code_string(status));
}

static int
stored_order(const void *a, const void *b)
{
	const StoredSession *x = a;
	const StoredSession *y = b;

	if (x->session.started_at != y->session.started_at)
		return x->session.started_at < y->session.started_at ? -1 : 1;
	return 0;
}

/*
 * Reads stored sessions for the groups chosen: with newest_only the newest
 * one starting at most at the group's high; otherwise those starting between
 * its low and its high, and the newest one starting before its low.
 */
static void
read_stored(PipelineBatch *batch, KeyGroup *groups, const int *chosen, int chosen_count, bool newest_only)
{
	Datum	   *keys = palloc(sizeof(Datum) * chosen_count);
	Datum	   *lows = palloc(sizeof(Datum) * chosen_count);
	Datum	   *highs = palloc(sizeof(Datum) * chosen_count);
	Oid			types[3] = {key_array_type(batch), TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[3];
	SPITupleTable *rows;
	int		   *filled = palloc0(sizeof(int) * chosen_count);
	char	   *lateral;

	for (int c = 0; c < chosen_count; c++)
	{
		keys[c] = groups[chosen[c]].key;
		lows[c] = TimestampTzGetDatum(groups[chosen[c]].low);
		highs[c] = TimestampTzGetDatum(groups[chosen[c]].high);
		groups[chosen[c]].stored_count = 0;
	}
	values[0] = make_array(keys, NULL, chosen_count, batch->key_type);
	values[1] = make_array(lows, NULL, chosen_count, TIMESTAMPTZOID);
	values[2] = make_array(highs, NULL, chosen_count, TIMESTAMPTZOID);
	lateral = newest_only ?
		psprintf("SELECT s.ctid, s.* FROM %s s"
				 " WHERE s.key OPERATOR(pg_catalog.=) k.key AND s.session_start OPERATOR(pg_catalog.<=) k.high"
				 " ORDER BY s.session_start DESC LIMIT 1", batch->stored_sessions) :
		psprintf("(SELECT s.ctid, s.* FROM %1$s s"
				 "  WHERE s.key OPERATOR(pg_catalog.=) k.key AND s.session_start OPERATOR(pg_catalog.<) k.low"
				 "  ORDER BY s.session_start DESC LIMIT 1)"
				 " UNION ALL"
				 " (SELECT s.ctid, s.* FROM %1$s s"
				 "  WHERE s.key OPERATOR(pg_catalog.=) k.key AND s.session_start OPERATOR(pg_catalog.>=) k.low"
				 "    AND s.session_start OPERATOR(pg_catalog.<=) k.high)", batch->stored_sessions);
	execute(psprintf("SELECT k.position, s.ctid, s.session_start, s.last_event_at, s.expires_at, s.events,"
					 "       s.type_counts, s.revision"
					 " FROM (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS low, pg_catalog.unnest($3) AS high,"
					 "              pg_catalog.generate_series(1, pg_catalog.cardinality($2)) AS position) k"
					 " CROSS JOIN LATERAL (%s) s", lateral),
			3, types, values, SPI_OK_SELECT);
	rows = SPI_tuptable;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int32		position = DatumGetInt32(SPI_getbinval(rows->vals[r], rows->tupdesc, STORED_GROUP + 1, &isnull));

		if (position < 1 || position > chosen_count)
			elog(ERROR, "stored sessions were read for a key not asked for");
		groups[chosen[position - 1]].stored_count++;
	}
	for (int c = 0; c < chosen_count; c++)
		groups[chosen[c]].stored = palloc(sizeof(StoredSession) * Max(groups[chosen[c]].stored_count, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Datum		columns[STORED_COLUMNS];
		bool		nulls[STORED_COLUMNS];
		int			position;
		StoredSession *stored;

		heap_deform_tuple(rows->vals[r], rows->tupdesc, columns, nulls);
		position = DatumGetInt32(columns[STORED_GROUP]) - 1;
		stored = &groups[chosen[position]].stored[filled[position]++];
		stored->row = *(ItemPointer) DatumGetPointer(columns[STORED_ROW]);
		stored->session.started_at = DatumGetTimestampTz(columns[STORED_START]);
		stored->session.ended_at = DatumGetTimestampTz(columns[STORED_LAST_EVENT]);
		stored->session.expires_at = DatumGetTimestampTz(columns[STORED_EXPIRES]);
		stored->session.events = DatumGetInt64(columns[STORED_EVENTS]);
		stored->type_counts = nulls[STORED_TYPE_COUNTS] ? NULL : DatumGetJsonbPCopy(columns[STORED_TYPE_COUNTS]);
		stored->revision = DatumGetInt32(columns[STORED_REVISION]);
		stored->touched = false;
	}
	for (int c = 0; c < chosen_count; c++)
		qsort(groups[chosen[c]].stored, groups[chosen[c]].stored_count, sizeof(StoredSession), stored_order);
	SPI_freetuptable(rows);
}

/*
 * Reads, for each group, the stored sessions its events may reach: those
 * starting between its earliest event and its latest event plus the gap,
 * and the newest one starting before, which may still be open.  One probe
 * per key answers that when the newest session starting before the latest
 * reach starts before the earliest event, as in a stream in time order;
 * the keys whose events reach back past sessions are read again whole.
 */
void
sink_read_sessions(PipelineBatch *batch, KeyGroup *groups, int group_count)
{
	int		   *chosen = palloc(sizeof(int) * Max(group_count, 1));
	int			again = 0;

	if (group_count == 0)
		return;
	for (int g = 0; g < group_count; g++)
		chosen[g] = g;
	read_stored(batch, groups, chosen, group_count, true);
	for (int g = 0; g < group_count; g++)
		if (groups[g].stored_count > 0 && groups[g].stored[0].session.started_at >= groups[g].low)
			chosen[again++] = g;
	if (again > 0)
		read_stored(batch, groups, chosen, again, false);
}

/*
 * Replaces the touched stored sessions by the merged ones, and logs each
 * merged session as opened, extended or merged, in key and start order.
 */
void
sink_write_sessions(PipelineBatch *batch, KeyGroup *groups, int group_count,
					MergedSession *merged, int merged_count)
{
	Datum	   *rows;
	int			row_count = 0;
	Datum	   *columns[7];
	bool	   *type_counts_null;
	Oid			types[7] = {key_array_type(batch), TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID,
	TIMESTAMPTZARRAYOID, INT8ARRAYOID, JSONBARRAYOID, INT4ARRAYOID};
	Oid			change_types[6] = {key_array_type(batch), TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	TIMESTAMPTZARRAYOID, INT8ARRAYOID};
	Datum		values[7];

	for (int g = 0; g < group_count; g++)
		row_count += groups[g].stored_count;
	rows = palloc(sizeof(Datum) * Max(row_count, 1));
	row_count = 0;
	for (int g = 0; g < group_count; g++)
		for (int s = 0; s < groups[g].stored_count; s++)
			if (groups[g].stored[s].touched)
				rows[row_count++] = PointerGetDatum(&groups[g].stored[s].row);
	if (row_count > 0)
	{
		Oid			row_type = TIDARRAYOID;

		values[0] = make_array(rows, NULL, row_count, TIDOID);
		execute(psprintf("DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) ANY ($1)", batch->stored_sessions),
				1, &row_type, values, SPI_OK_DELETE);
		if (SPI_processed != (uint64) row_count)
			elog(ERROR, "the sessions of pipeline \"%s\" changed while a batch merged them", batch->name);
	}
	if (merged_count == 0)
		return;

	for (int c = 0; c < 7; c++)
		columns[c] = palloc(sizeof(Datum) * merged_count);
	type_counts_null = palloc(sizeof(bool) * merged_count);
	for (int m = 0; m < merged_count; m++)
	{
		columns[0][m] = merged[m].key;
		columns[1][m] = TimestampTzGetDatum(merged[m].session.started_at);
		columns[2][m] = TimestampTzGetDatum(merged[m].session.ended_at);
		columns[3][m] = TimestampTzGetDatum(merged[m].session.expires_at);
		columns[4][m] = Int64GetDatum(merged[m].session.events);
		columns[5][m] = PointerGetDatum(merged[m].type_counts);
		type_counts_null[m] = merged[m].type_counts == NULL;
		columns[6][m] = Int32GetDatum(merged[m].revision);
	}
	values[0] = make_array(columns[0], NULL, merged_count, batch->key_type);
	values[1] = make_array(columns[1], NULL, merged_count, TIMESTAMPTZOID);
	values[2] = make_array(columns[2], NULL, merged_count, TIMESTAMPTZOID);
	values[3] = make_array(columns[3], NULL, merged_count, TIMESTAMPTZOID);
	values[4] = make_array(columns[4], NULL, merged_count, INT8OID);
	values[5] = make_array(columns[5], type_counts_null, merged_count, JSONBOID);
	values[6] = make_array(columns[6], NULL, merged_count, INT4OID);
	execute(psprintf("INSERT INTO %s (key, session_start, last_event_at, expires_at, events, type_counts,"
					 "                revision, updated_at)"
					 " SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts,"
					 "        s.revision, pg_catalog.now()"
					 " FROM (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS session_start,"
					 "              pg_catalog.unnest($3) AS last_event_at, pg_catalog.unnest($4) AS expires_at,"
					 "              pg_catalog.unnest($5) AS events, pg_catalog.unnest($6) AS type_counts,"
					 "              pg_catalog.unnest($7) AS revision) s",
					 batch->stored_sessions),
			7, types, values, SPI_OK_INSERT);

	for (int m = 0; m < merged_count; m++)
		columns[5][m] = CStringGetTextDatum(merged[m].replaced == 0 ? "opened" :
											merged[m].replaced == 1 ? "extended" : "merged");
	values[1] = make_array(columns[1], NULL, merged_count, TIMESTAMPTZOID);
	values[2] = make_array(columns[5], NULL, merged_count, TEXTOID);
	values[3] = make_array(columns[6], NULL, merged_count, INT4OID);
	values[4] = make_array(columns[2], NULL, merged_count, TIMESTAMPTZOID);
	values[5] = make_array(columns[4], NULL, merged_count, INT8OID);
	execute(psprintf("INSERT INTO %s (key, session_start, change, revision, last_event_at, events)"
					 " SELECT c.key, c.session_start, c.change, c.revision, c.last_event_at, c.events"
					 " FROM (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS session_start,"
					 "              pg_catalog.unnest($3) AS change, pg_catalog.unnest($4) AS revision,"
					 "              pg_catalog.unnest($5) AS last_event_at, pg_catalog.unnest($6) AS events,"
					 "              pg_catalog.generate_series(1, pg_catalog.cardinality($2)) AS position) c"
					 " ORDER BY c.position",
					 batch->changes),
			6, change_types, values, SPI_OK_INSERT);
}

/*
 * Writes the late events of events first..last to the late table and the
 * dead ones to the dead letters, each with its reason, in batch order.
 */
void
sink_write_rejects(PipelineBatch *batch, int first, int last)
{
	int			capacity = last - first + 1;
	Datum	   *late_events = palloc(sizeof(Datum) * capacity);
	Datum	   *late_reasons = palloc(sizeof(Datum) * capacity);
	Datum	   *dead_events = palloc(sizeof(Datum) * capacity);
	Datum	   *dead_reasons = palloc(sizeof(Datum) * capacity);
	int			late_count = 0;
	int			dead_count = 0;
	Oid			types[3] = {JSONBARRAYOID, TEXTARRAYOID, TEXTOID};
	Datum		values[3];

	for (int i = first; i <= last; i++)
	{
		BatchEvent *event = &batch->events[i];

		if (event->fate == EVENT_LATE)
		{
			late_events[late_count] = PointerGetDatum(event->event);
			late_reasons[late_count++] = CStringGetTextDatum(event->reason);
		}
		else if (event->fate == EVENT_DEAD)
		{
			dead_events[dead_count] = PointerGetDatum(event->event);
			dead_reasons[dead_count++] = CStringGetTextDatum(event->reason);
		}
	}
	if (late_count > 0)
	{
		values[0] = make_array(late_events, NULL, late_count, JSONBOID);
		values[1] = make_array(late_reasons, NULL, late_count, TEXTOID);
		execute(psprintf("INSERT INTO %s (event, reason)"
						 " SELECT l.event, l.reason"
						 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS l(event, reason, position)"
						 " ORDER BY l.position",
						 batch->late_events),
				2, types, values, SPI_OK_INSERT);
	}
	if (dead_count > 0)
	{
		values[0] = make_array(dead_events, NULL, dead_count, JSONBOID);
		values[1] = make_array(dead_reasons, NULL, dead_count, TEXTOID);
		values[2] = CStringGetTextDatum(batch->name);
		execute("INSERT INTO sessionize.dead_letter (pipeline, event, error)"
				" SELECT $3, d.event, d.error"
				" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS d(event, error, position)"
				" ORDER BY d.position",
				3, types, values, SPI_OK_INSERT);
	}
}
