/*-------------------------------------------------------------------------
 *
 * sink_sessions.c
 *	  Where a batch's outcome goes: a pipeline's sessions (and their KPI
 *	  rollups, rollups.c, and its profiles, profiles.c), change log, late
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
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
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

/*
 * The type of the key in a pipeline's tables: that of its stored sessions,
 * which the batch's keys are cast to.
 */
void
sink_key_type(const char *pipeline, Oid *type, int32 *typmod, Oid *collation)
{
	Oid			stored = get_relname_relid(psprintf("%s_stored_sessions", pipeline),
										   get_namespace_oid("sessionize", false));

	if (!OidIsValid(stored))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the sessions table of pipeline \"%s\" does not exist", pipeline),
				 errhint("Drop the pipeline and create it again.")));
	get_atttypetypmodcoll(stored, get_attnum(stored, "key"), type, typmod, collation);
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

/* A measure's state column beside its value: first/last's time, a sketch. */
static const char *
state_column(const PipelineMeasure *measure)
{
	switch (measure->input.kind)
	{
		case MEASURE_FIRST:
		case MEASURE_LAST:
			return psprintf("%s__at", measure->name);
		case MEASURE_APPROX_COUNT_DISTINCT:
			return psprintf("%s__sketch", measure->name);
		default:
			return NULL;
	}
}

/*
 * ", s.<value>[, s.<state>]" for each measure; with states, as stored, after
 * measured_since when the pipeline keeps it.
 */
static char *
measure_columns(const PipelineMeasures *measures, const char *prefix, bool with_states)
{
	StringInfoData columns;

	initStringInfo(&columns);
	if (with_states && measures->version > 0)
		appendStringInfo(&columns, ", %smeasured_since", prefix);
	for (int m = 0; m < measures->count; m++)
	{
		const char *state = with_states ? state_column(&measures->items[m]) : NULL;

		appendStringInfo(&columns, ", %s%s", prefix, quote_identifier(measures->items[m].name));
		if (state != NULL)
			appendStringInfo(&columns, ", %s%s", prefix, quote_identifier(state));
	}
	return columns.data;
}

/* Reads a stored session's measure states from its row, from column first. */
static MeasureState *
read_measure_states(const PipelineMeasures *measures, Datum *columns, bool *nulls, int first)
{
	MeasureState *states = palloc0(sizeof(MeasureState) * Max(measures->count, 1));
	int			column = first;

	for (int m = 0; m < measures->count; m++)
	{
		const MeasureInput *input = &measures->items[m].input;
		int			value = column++;

		switch (input->kind)
		{
			case MEASURE_FIRST:
			case MEASURE_LAST:
				states[m].has_value = !nulls[value] && !nulls[column];
				if (states[m].has_value)
				{
					states[m].value = datumCopy(columns[value], input->byval, input->length);
					states[m].at = DatumGetTimestampTz(columns[column]);
				}
				column++;
				break;
			case MEASURE_APPROX_COUNT_DISTINCT:
				states[m].has_value = !nulls[column];
				if (states[m].has_value)
					states[m].sketch = distinct_sketch_deserialize(DatumGetByteaPP(columns[column]));
				column++;
				break;
			case MEASURE_COUNT_ROWS:
			case MEASURE_COUNT:
				states[m].has_value = !nulls[value];
				states[m].value = nulls[value] ? (Datum) 0 : columns[value];
				break;
			default:
				states[m].has_value = !nulls[value];
				if (states[m].has_value)
				{
					Oid			type = measures->items[m].result_type;
					int16		length;
					bool		byval;

					get_typlenbyval(type, &length, &byval);
					states[m].value = datumCopy(columns[value], byval, length);
				}
				break;
		}
	}
	return states;
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
	Datum	   *columns;
	bool	   *nulls;

	for (int c = 0; c < chosen_count; c++)
	{
		keys[c] = groups[chosen[c]].key;
		lows[c] = TimestampTzGetDatum(groups[chosen[c]].low);
		highs[c] = TimestampTzGetDatum(groups[chosen[c]].high);
		groups[chosen[c]].stored_count = 0;
	}
	values[0] = sessionize_make_array(keys, NULL, chosen_count, batch->key_type);
	values[1] = sessionize_make_array(lows, NULL, chosen_count, TIMESTAMPTZOID);
	values[2] = sessionize_make_array(highs, NULL, chosen_count, TIMESTAMPTZOID);
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
					 "       s.type_counts, s.revision%s"
					 " FROM (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS low, pg_catalog.unnest($3) AS high,"
					 "              pg_catalog.generate_series(1, pg_catalog.cardinality($2)) AS position) k"
					 " CROSS JOIN LATERAL (%s) s", measure_columns(batch->measures, "s.", true), lateral),
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
	columns = palloc(sizeof(Datum) * rows->tupdesc->natts);
	nulls = palloc(sizeof(bool) * rows->tupdesc->natts);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
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
		stored->measured_since = batch->measures->version > 0 ? DatumGetInt32(columns[STORED_COLUMNS]) : 0;
		stored->measures = read_measure_states(batch->measures, columns, nulls,
											   STORED_COLUMNS + (batch->measures->version > 0 ? 1 : 0));
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
 * The measures of merged sessions as parameters first_parameter, ...: one
 * array per column (with states: as stored, measured_since first when kept),
 * and the unnest() of each, named as its column, appended to unnests.  A
 * measure added after a session's earliest event is NULL for it.  Returns
 * how many.
 */
static int
measure_parameters(const PipelineMeasures *measures, MergedSession *merged, int merged_count, bool with_states,
				   int first_parameter, Oid *types, Datum *values, StringInfo unnests)
{
	int			parameter = first_parameter;
	Datum	   *column = palloc(sizeof(Datum) * merged_count);
	bool	   *column_nulls = palloc(sizeof(bool) * merged_count);

	if (with_states && measures->version > 0)
	{
		for (int s = 0; s < merged_count; s++)
			column[s] = Int32GetDatum(merged[s].measured_since);
		types[parameter - 1] = INT4ARRAYOID;
		values[parameter - 1] = sessionize_make_array(column, NULL, merged_count, INT4OID);
		appendStringInfo(unnests, ", pg_catalog.unnest($%d) AS measured_since", parameter);
		parameter++;
	}
	for (int m = 0; m < measures->count; m++)
	{
		const PipelineMeasure *measure = &measures->items[m];
		const char *state = with_states ? state_column(measure) : NULL;
		Oid			array_type = get_array_type(measure->result_type);

		if (!OidIsValid(array_type))
			elog(ERROR, "type %s of measure \"%s\" has no array type", format_type_be(measure->result_type),
				 measure->name);
		for (int s = 0; s < merged_count; s++)
		{
			column[s] = measure_result(&measure->input, &merged[s].measures[m], &column_nulls[s]);
			if (merged[s].measured_since < measure->added_in)
				column_nulls[s] = true;
		}
		types[parameter - 1] = array_type;
		values[parameter - 1] = sessionize_make_array(column, column_nulls, merged_count, measure->result_type);
		appendStringInfo(unnests, ", pg_catalog.unnest($%d) AS %s", parameter, quote_identifier(measure->name));
		parameter++;
		if (state == NULL)
			continue;
		for (int s = 0; s < merged_count; s++)
		{
			MeasureState *merged_state = &merged[s].measures[m];

			column_nulls[s] = !merged_state->has_value || merged[s].measured_since < measure->added_in;
			if (measure->input.kind == MEASURE_APPROX_COUNT_DISTINCT)
				column[s] = !column_nulls[s] ? PointerGetDatum(distinct_sketch_serialize(merged_state->sketch))
					: (Datum) 0;
			else
				column[s] = TimestampTzGetDatum(merged_state->at);
		}
		types[parameter - 1] = measure->input.kind == MEASURE_APPROX_COUNT_DISTINCT ? BYTEAARRAYOID
			: TIMESTAMPTZARRAYOID;
		values[parameter - 1] = sessionize_make_array(column, column_nulls, merged_count,
													  measure->input.kind == MEASURE_APPROX_COUNT_DISTINCT ? BYTEAOID
													  : TIMESTAMPTZOID);
		appendStringInfo(unnests, ", pg_catalog.unnest($%d) AS %s", parameter, quote_identifier(state));
		parameter++;
	}
	return parameter - first_parameter;
}

/*
 * Replaces the touched stored sessions by the merged ones, moving the KPI
 * rollups by the difference (rollups.c) and adding the merged events to
 * the profiles (profiles.c), and logs each merged session as
 * opened, extended or merged, in key and start order.
 */
void
sink_write_sessions(PipelineBatch *batch, KeyGroup *groups, int group_count,
					MergedSession *merged, int merged_count)
{
	Datum	   *rows;
	int			row_count = 0;
	Datum	   *columns[7];
	bool	   *type_counts_null;
	int			parameters = 8 + 2 * batch->measures->count;
	Oid		   *types = palloc(sizeof(Oid) * parameters);
	Datum	   *values = palloc(sizeof(Datum) * parameters);
	StringInfoData unnests;
	int			measure_count;

	rollups_write(batch, groups, group_count, merged, merged_count);
	profiles_write(batch, groups, group_count);
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
		types[0] = TIDARRAYOID;
		values[0] = sessionize_make_array(rows, NULL, row_count, TIDOID);
		execute(psprintf("DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) ANY ($1)", batch->stored_sessions),
				1, types, values, SPI_OK_DELETE);
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
	types[0] = key_array_type(batch);
	values[0] = sessionize_make_array(columns[0], NULL, merged_count, batch->key_type);
	types[1] = types[2] = types[3] = TIMESTAMPTZARRAYOID;
	values[1] = sessionize_make_array(columns[1], NULL, merged_count, TIMESTAMPTZOID);
	values[2] = sessionize_make_array(columns[2], NULL, merged_count, TIMESTAMPTZOID);
	values[3] = sessionize_make_array(columns[3], NULL, merged_count, TIMESTAMPTZOID);
	types[4] = INT8ARRAYOID;
	values[4] = sessionize_make_array(columns[4], NULL, merged_count, INT8OID);
	types[5] = JSONBARRAYOID;
	values[5] = sessionize_make_array(columns[5], type_counts_null, merged_count, JSONBOID);
	types[6] = INT4ARRAYOID;
	values[6] = sessionize_make_array(columns[6], NULL, merged_count, INT4OID);
	initStringInfo(&unnests);
	measure_count = measure_parameters(batch->measures, merged, merged_count, true, 8, types, values, &unnests);
	execute(psprintf("INSERT INTO %s (key, session_start, last_event_at, expires_at, events, type_counts,"
					 "                revision, updated_at%s)"
					 " SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts,"
					 "        s.revision, pg_catalog.now()%s"
					 " FROM (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS session_start,"
					 "              pg_catalog.unnest($3) AS last_event_at, pg_catalog.unnest($4) AS expires_at,"
					 "              pg_catalog.unnest($5) AS events, pg_catalog.unnest($6) AS type_counts,"
					 "              pg_catalog.unnest($7) AS revision%s) s",
					 batch->stored_sessions, measure_columns(batch->measures, "", true),
					 measure_columns(batch->measures, "s.", true), unnests.data),
			7 + measure_count, types, values, SPI_OK_INSERT);

	for (int m = 0; m < merged_count; m++)
		columns[5][m] = CStringGetTextDatum(merged[m].replaced == 0 ? "opened" :
											merged[m].replaced == 1 ? "extended" : "merged");
	types[1] = TIMESTAMPTZARRAYOID;
	values[1] = sessionize_make_array(columns[1], NULL, merged_count, TIMESTAMPTZOID);
	types[2] = TEXTARRAYOID;
	values[2] = sessionize_make_array(columns[5], NULL, merged_count, TEXTOID);
	types[3] = INT4ARRAYOID;
	values[3] = sessionize_make_array(columns[6], NULL, merged_count, INT4OID);
	types[4] = TIMESTAMPTZARRAYOID;
	values[4] = sessionize_make_array(columns[2], NULL, merged_count, TIMESTAMPTZOID);
	types[5] = INT8ARRAYOID;
	values[5] = sessionize_make_array(columns[4], NULL, merged_count, INT8OID);
	resetStringInfo(&unnests);
	measure_count = measure_parameters(batch->measures, merged, merged_count, false, 7, types, values, &unnests);
	execute(psprintf("INSERT INTO %s (key, session_start, change, revision, last_event_at, events%s)"
					 " SELECT c.key, c.session_start, c.change, c.revision, c.last_event_at, c.events%s"
					 " FROM (SELECT pg_catalog.unnest($1) AS key, pg_catalog.unnest($2) AS session_start,"
					 "              pg_catalog.unnest($3) AS change, pg_catalog.unnest($4) AS revision,"
					 "              pg_catalog.unnest($5) AS last_event_at, pg_catalog.unnest($6) AS events,"
					 "              pg_catalog.generate_series(1, pg_catalog.cardinality($2)) AS position%s) c"
					 " ORDER BY c.position",
					 batch->changes, measure_columns(batch->measures, "", false),
					 measure_columns(batch->measures, "c.", false), unnests.data),
			6 + measure_count, types, values, SPI_OK_INSERT);
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
		values[0] = sessionize_make_array(late_events, NULL, late_count, JSONBOID);
		values[1] = sessionize_make_array(late_reasons, NULL, late_count, TEXTOID);
		execute(psprintf("INSERT INTO %s (event, reason)"
						 " SELECT l.event, l.reason"
						 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS l(event, reason, position)"
						 " ORDER BY l.position",
						 batch->late_events),
				2, types, values, SPI_OK_INSERT);
	}
	if (dead_count > 0)
	{
		values[0] = sessionize_make_array(dead_events, NULL, dead_count, JSONBOID);
		values[1] = sessionize_make_array(dead_reasons, NULL, dead_count, TEXTOID);
		values[2] = CStringGetTextDatum(batch->name);
		execute("INSERT INTO sessionize.dead_letter (pipeline, event, error)"
				" SELECT $3, d.event, d.error"
				" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS d(event, error, position)"
				" ORDER BY d.position",
				3, types, values, SPI_OK_INSERT);
	}
}
