/*-------------------------------------------------------------------------
 *
 * pipeline.c
 *	  run_pipeline() and replay_late(): one batch of a pipeline, from its
 *	  source to its checkpoint, in the caller's transaction.
 *
 * A batch:
 *
 *	 1. reads the pipeline and takes its lock (one batch at a time; no alter
 *		or drop meanwhile), checks that the caller has its owner's rights and
 *		that the owner may run the source's code (privileges.c);
 *	 2. takes events from its source: claims rows of a staging table, or
 *		takes the next changes of a logical source after its checkpoint,
 *		streamed by the pipeline's worker (source_logical.c) or peeked from
 *		the slot anywhere else;
 *	 3. applies them (batch.c, which runs the source's query of sources.c as
 *		the owner and writes through sink_sessions.c);
 *	 4. moves the counters, the watermark and the checkpoint, writes a
 *		"closed" change for each session the new watermark makes final, and
 *		notifies listeners on channel sessionize_<pipeline>.
 *
 * Everything commits or aborts with the caller's transaction, which is what
 * makes a pipeline's effect exactly once.  The functions here run as the
 * extension's owner (SECURITY DEFINER, with pinned settings); the SQL they
 * send names every object with its schema.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "replication/slot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/syscache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(run_pipeline_batch);
PG_FUNCTION_INFO_V1(replay_late_events);

/* A pipeline as a batch holds it: its row of sessionize.pipelines. */
typedef struct Pipeline
{
	Datum		row;
	Oid			row_type;
	HeapTupleHeader header;
	SourcePipeline source_events;	/* how its events are read */
	PipelineMeasures *measures;
	char	   *name;
	Oid			source;
	bool		logical;
} Pipeline;

/* What a batch reads of sessionize.pipeline_state. */
typedef struct PipelineState
{
	bool		has_watermark;
	TimestampTz watermark;
	XLogRecPtr	slot_advance_to;
	CheckpointPosition checkpoint;
} PipelineState;

/*
 * Runs a statement with parameters; the first value of its first row (null
 * when it returns none).
 */
static Datum
run(const char *query, int count, Oid *types, Datum *values, const char *nulls, bool *isnull)
{
	int			status = SPI_execute_with_args(query, count, types, values, nulls, false, 0);
	bool		first_null = true;
	Datum		first = (Datum) 0;

	if (status < 0)
		elog(ERROR, "could not run \"%s\": %s", query, SPI_result_code_string(status));
	if (SPI_tuptable != NULL && SPI_processed > 0 && SPI_tuptable->tupdesc->natts > 0)
		first = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &first_null);
	if (isnull != NULL)
		*isnull = first_null;
	return first;
}

/* Runs a function of the pipeline's row: sessionize.<function>($1). */
static void
run_on_pipeline(const Pipeline *pipeline, const char *function)
{
	Oid			type = pipeline->row_type;
	Datum		value = pipeline->row;

	run(psprintf("SELECT sessionize.%s($1)", function), 1, &type, &value, NULL, NULL);
}

/*
 * Reads the pipeline for the caller, who must have its owner's rights, and
 * takes its lock; makes its time zone the one of this call.
 */
static void
read_pipeline(Pipeline *pipeline, NullableDatum caller, NullableDatum name)
{
	Oid			types[2] = {REGROLEOID, TEXTOID};
	Datum		values[2] = {caller.value, name.value};
	char		nulls[2] = {caller.isnull ? 'n' : ' ', name.isnull ? 'n' : ' '};
	bool		isnull;
	Datum		row;

	row = run("SELECT sessionize.sessionize_read_pipeline($1, $2, true)", 2, types, values, nulls, &isnull);
	if (isnull)
		elog(ERROR, "could not read a pipeline");
	pipeline->row_type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
	pipeline->row = SPI_datumTransfer(row, false, -1);
	pipeline->header = DatumGetHeapTupleHeader(pipeline->row);
	pipeline->name = TextDatumGetCString(GetAttributeByName(pipeline->header, "name", &isnull));
	pipeline->source = DatumGetObjectId(GetAttributeByName(pipeline->header, "source", &isnull));
	pipeline->logical = strcmp(TextDatumGetCString(GetAttributeByName(pipeline->header, "source_kind", &isnull)),
							   "logical") == 0;
	run_on_pipeline(pipeline, "sessionize_use_time_zone");
}

/* An LSN column of a row read by SPI; null is the invalid LSN. */
static XLogRecPtr
lsn_column(HeapTuple row, TupleDesc columns, int column)
{
	bool		isnull;
	Datum		value = SPI_getbinval(row, columns, column, &isnull);

	return isnull ? InvalidXLogRecPtr : DatumGetLSN(value);
}

/* How the pipeline's events are read from its source, and measured. */
static void
read_events_of(Pipeline *pipeline)
{
	sessionize_read_source(&pipeline->source_events, pipeline->header);
	pipeline->measures = sessionize_read_measures(pipeline->name);
	pipeline->source_events.measures = pipeline->measures;
}

/* What a batch of the pipeline is given, for a source of the kind. */
static BatchSource
batch_source(const Pipeline *pipeline, SourceKind kind, Oid argument_type, Datum argument)
{
	BatchSource source = {0};

	source.query = sessionize_source_query(&pipeline->source_events, kind, false);
	source.measured_query = sessionize_source_query(&pipeline->source_events, kind, true);
	source.argument_type = argument_type;
	source.argument = argument;
	source.measures = pipeline->measures;
	if (pipeline->measures->count > 0)
		source.measures_query = sessionize_measures_query(&pipeline->source_events);
	return source;
}

static void
read_state(const Pipeline *pipeline, PipelineState *state)
{
	Oid			type = TEXTOID;
	Datum		value = CStringGetTextDatum(pipeline->name);
	HeapTuple	row;
	TupleDesc	columns;
	bool		isnull;
	Datum		column;

	run("SELECT watermark, slot_advance_to, checkpoint_commit_lsn, checkpoint_lsn, checkpoint_lsn_row"
		" FROM sessionize.pipeline_state WHERE pipeline OPERATOR(pg_catalog.=) $1",
		1, &type, &value, NULL, NULL);
	if (SPI_processed != 1)
		elog(ERROR, "the state of pipeline \"%s\" is missing", pipeline->name);
	row = SPI_tuptable->vals[0];
	columns = SPI_tuptable->tupdesc;
	column = SPI_getbinval(row, columns, 1, &isnull);
	state->has_watermark = !isnull;
	state->watermark = isnull ? 0 : DatumGetTimestampTz(column);
	state->slot_advance_to = lsn_column(row, columns, 2);
	state->checkpoint.commit_lsn = lsn_column(row, columns, 3);
	state->checkpoint.lsn = lsn_column(row, columns, 4);
	column = SPI_getbinval(row, columns, 5, &isnull);
	state->checkpoint.lsn_row = isnull ? 0 : DatumGetInt64(column);
}

/*
 * A logical pipeline whose slot is gone (restored from a dump into another
 * database or cluster, or its slot dropped by hand) gets a new slot and
 * goes on with the changes committed from then on: its checkpoint is a
 * place in the WAL the old slot read, which means nothing to the new one.
 * pipeline_status shows from where it went on, in last_error.  Returns the
 * slot's name.
 */
static Datum
ensure_slot(const Pipeline *pipeline, PipelineState *state)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	Datum		slot;
	bool		isnull;
	XLogRecPtr	start;
	char	   *said;

	values[0] = CStringGetTextDatum(pipeline->name);
	slot = run("SELECT sessionize.sessionize_slot_name($1)", 1, types, values, NULL, &isnull);
	if (SearchNamedReplicationSlot(NameStr(*DatumGetName(slot)), true) != NULL)
		return slot;
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the replication slot of pipeline \"%s\" is missing", pipeline->name),
				 errdetail("A new slot can only be made in a transaction that has written nothing yet."),
				 errhint("Call run_pipeline() in a transaction of its own, as the pipeline's worker does.")));
	values[1] = slot;
	types[1] = NAMEOID;
	start = DatumGetLSN(run("SELECT s.lsn FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput') s",
							1, &types[1], &values[1], NULL, &isnull));
	said = psprintf("a new replication slot takes the changes committed from %X/%X on; rows of the source committed before it was made were not seen",
					LSN_FORMAT_ARGS(start));
	/* a dump made with --no-publications left the source out of them */
	types[1] = OIDOID;
	values[1] = ObjectIdGetDatum(pipeline->source);
	run("SELECT sessionize.sessionize_publish_source($1)", 1, &types[1], &values[1], NULL, NULL);
	values[1] = CStringGetTextDatum(said);
	types[1] = TEXTOID;
	run("UPDATE sessionize.pipeline_state SET slot_advance_to = NULL, checkpoint_commit_lsn = NULL,"
		" checkpoint_lsn = NULL, checkpoint_lsn_row = NULL, last_error = $2,"
		" last_error_at = pg_catalog.clock_timestamp()"
		" WHERE pipeline OPERATOR(pg_catalog.=) $1", 2, types, values, NULL, NULL);
	ereport(WARNING,
			(errmsg("pipeline \"%s\" had no replication slot", pipeline->name),
			 errdetail("%c%s.", pg_toupper(said[0]), said + 1)));
	state->slot_advance_to = InvalidXLogRecPtr;
	state->checkpoint.commit_lsn = InvalidXLogRecPtr;
	state->checkpoint.lsn = InvalidXLogRecPtr;
	state->checkpoint.lsn_row = 0;
	return slot;
}

/* The source must still be a table. */
static void
check_source(const Pipeline *pipeline)
{
	char		kind = get_rel_relkind(pipeline->source);

	if (kind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the source table of pipeline \"%s\" does not exist", pipeline->name),
				 errhint("Drop the pipeline, or create it again on another table.")));
	if (kind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("the source of pipeline \"%s\" is no longer a table", pipeline->name),
				 errdetail("%s has become another kind of relation.",
						   DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(pipeline->source))))));
}

static Datum
lsn_or_null(XLogRecPtr lsn, char *null)
{
	*null = XLogRecPtrIsInvalid(lsn) ? 'n' : ' ';
	return LSNGetDatum(lsn);
}

/*
 * Peeks the next changes after the checkpoint from the slot, which decodes
 * from its restart point (sessionize_peek_changes() in SQL).
 */
static void
peek_changes(const Pipeline *pipeline, Datum slot, const PipelineState *state, int max_events,
			 TakenChanges *changes)
{
	Oid			types[7] = {pipeline->row_type, NAMEOID, PG_LSNOID, PG_LSNOID, PG_LSNOID, INT8OID, INT4OID};
	Datum		values[7];
	char		nulls[8] = "       ";
	HeapTuple	row;
	TupleDesc	columns;
	bool		isnull;
	Datum		column;

	values[0] = pipeline->row;
	values[1] = slot;
	values[2] = lsn_or_null(state->slot_advance_to, &nulls[2]);
	values[3] = lsn_or_null(state->checkpoint.commit_lsn, &nulls[3]);
	values[4] = lsn_or_null(state->checkpoint.lsn, &nulls[4]);
	values[5] = Int64GetDatum(state->checkpoint.lsn_row);
	values[6] = Int32GetDatum(max_events);
	run("SELECT messages, incomplete, commit_lsn, lsn, lsn_row, advance, restart_lsn, peek_full"
		" FROM sessionize.sessionize_peek_changes($1, $2, $3, $4, $5, $6, $7)",
		7, types, values, nulls, NULL);
	if (SPI_processed != 1)
		elog(ERROR, "could not peek the changes of pipeline \"%s\"", pipeline->name);
	row = SPI_tuptable->vals[0];
	columns = SPI_tuptable->tupdesc;
	column = SPI_getbinval(row, columns, 1, &isnull);
	changes->messages = isnull ? NULL : DatumGetArrayTypeP(column);
	changes->taken = isnull ? 0 : ArrayGetNItems(ARR_NDIM(changes->messages), ARR_DIMS(changes->messages)) / 2;
	column = SPI_getbinval(row, columns, 2, &isnull);
	changes->incomplete = isnull ? NULL : DatumGetArrayTypeP(column);
	changes->last.commit_lsn = lsn_column(row, columns, 3);
	changes->last.lsn = lsn_column(row, columns, 4);
	column = SPI_getbinval(row, columns, 5, &isnull);
	changes->last.lsn_row = isnull ? 0 : DatumGetInt64(column);
	changes->advance = lsn_column(row, columns, 6);
	changes->restart_lsn = lsn_column(row, columns, 7);
	column = SPI_getbinval(row, columns, 8, &isnull);
	changes->peek_full = !isnull && DatumGetBool(column);
}

/*
 * Takes and applies the next changes of a logical source.  The slot may
 * pass what the batch took once it commits (the next batch confirms it);
 * a batch that took nothing lets it pass what it peeked when the peek was
 * full (else the next peek would be the same), or when more than 1 MB of
 * WAL would be decoded again; otherwise an idle pipeline writes nothing.
 */
static void
consume_changes(const Pipeline *pipeline, const PipelineState *state, Datum slot, int max_events,
				BatchResult *result, TakenChanges *changes)
{
	Datum		name = CStringGetTextDatum(pipeline->name);

	if (!sessionize_stream_changes(pipeline->header, NameStr(*DatumGetName(slot)), &state->checkpoint,
								   state->slot_advance_to, max_events, changes))
		peek_changes(pipeline, slot, state, max_events, changes);

	if (changes->taken > 0)
	{
		BatchSource source = batch_source(pipeline, SOURCE_CHANGES, BYTEAARRAYOID, PointerGetDatum(changes->messages));

		source.incomplete = changes->incomplete;
		sessionize_consume_events(pipeline->header, state->has_watermark, state->watermark, false, &source, result);
	}

	if (!XLogRecPtrIsInvalid(changes->advance) &&
		(XLogRecPtrIsInvalid(state->slot_advance_to) || changes->advance > state->slot_advance_to) &&
		(result->consumed > 0 || changes->peek_full ||
		 (!XLogRecPtrIsInvalid(changes->restart_lsn) && changes->advance > changes->restart_lsn &&
		  changes->advance - changes->restart_lsn > 1024 * 1024)))
	{
		Oid			types[2] = {TEXTOID, PG_LSNOID};
		Datum		values[2] = {name, LSNGetDatum(changes->advance)};

		run("UPDATE sessionize.pipeline_state SET slot_advance_to = $2 WHERE pipeline OPERATOR(pg_catalog.=) $1",
			2, types, values, NULL, NULL);
	}
}

/*
 * Moves the pipeline's counters, watermark and checkpoint after a batch that
 * consumed events; a grown allowed_lateness moves the watermark back, so
 * that late events can be replayed into sessions, and unbounded lateness
 * has none.  Returns whether there is a watermark, and sets it.
 */
static bool
record_batch(const Pipeline *pipeline, const BatchResult *result, const TakenChanges *changes,
			 TimestampTz *new_watermark)
{
	Oid			types[12] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID, INT8OID, INT8OID, INT8OID,
	INT8OID, INT8OID, PG_LSNOID, PG_LSNOID, INT8OID};
	Datum		values[12];
	char		nulls[13] = "            ";
	bool		isnull;
	Datum		lateness;
	Datum		watermark;

	values[0] = CStringGetTextDatum(pipeline->name);
	values[1] = TimestampTzGetDatum(result->max_merged);
	nulls[1] = result->has_max_merged ? ' ' : 'n';
	values[2] = TimestampTzGetDatum(result->last_ts);
	nulls[2] = result->has_last_ts ? ' ' : 'n';
	lateness = GetAttributeByName(pipeline->header, "allowed_lateness", &isnull);
	values[3] = lateness;
	nulls[3] = isnull ? 'n' : ' ';
	values[4] = Int64GetDatum(result->consumed);
	values[5] = Int64GetDatum(result->merged);
	values[6] = Int64GetDatum(result->duplicates);
	values[7] = Int64GetDatum(result->late);
	values[8] = Int64GetDatum(result->dead_lettered);
	values[9] = lsn_or_null(changes->last.commit_lsn, &nulls[9]);
	values[10] = lsn_or_null(changes->last.lsn, &nulls[10]);
	values[11] = Int64GetDatum(changes->last.lsn_row);
	nulls[11] = nulls[9];
	watermark = run("UPDATE sessionize.pipeline_state s"
					" SET max_event_time = greatest(s.max_event_time, $2),"
					" watermark = greatest(s.max_event_time, $2) OPERATOR(pg_catalog.-) $4,"
					" last_event_time = greatest(s.last_event_time,"
					" coalesce($3, greatest(s.max_event_time, $2))),"
					" consumed = s.consumed OPERATOR(pg_catalog.+) $5,"
					" merged = s.merged OPERATOR(pg_catalog.+) $6,"
					" duplicates = s.duplicates OPERATOR(pg_catalog.+) $7,"
					" late = s.late OPERATOR(pg_catalog.+) $8,"
					" dead_lettered = s.dead_lettered OPERATOR(pg_catalog.+) $9,"
					" batches = s.batches OPERATOR(pg_catalog.+) 1,"
					" last_batch_at = pg_catalog.clock_timestamp(),"
					" failures = 0,"
					" checkpoint_commit_lsn = coalesce($10, s.checkpoint_commit_lsn),"
					" checkpoint_lsn = coalesce($11, s.checkpoint_lsn),"
					" checkpoint_lsn_row = coalesce($12, s.checkpoint_lsn_row)"
					" WHERE s.pipeline OPERATOR(pg_catalog.=) $1"
					" RETURNING s.watermark",
					12, types, values, nulls, &isnull);
	*new_watermark = isnull ? 0 : DatumGetTimestampTz(watermark);
	return !isnull;
}

/* One "closed" change per session that the watermark made final. */
static void
close_sessions(const Pipeline *pipeline, const PipelineState *state, bool has_watermark, TimestampTz watermark)
{
	Oid			types[3] = {pipeline->row_type, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[3] = {pipeline->row, TimestampTzGetDatum(state->watermark), TimestampTzGetDatum(watermark)};
	char		nulls[3] = {' ', state->has_watermark ? ' ' : 'n', has_watermark ? ' ' : 'n'};

	run("SELECT sessionize.sessionize_close_sessions($1, $2, $3)", 3, types, values, nulls, NULL);
}

static void
notify(const Pipeline *pipeline, const BatchResult *result)
{
	Oid			types[7] = {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		values[7];

	values[0] = CStringGetTextDatum(psprintf("sessionize_%s", pipeline->name));
	values[1] = CStringGetTextDatum(pipeline->name);
	values[2] = Int64GetDatum(result->consumed);
	values[3] = Int64GetDatum(result->merged);
	values[4] = Int64GetDatum(result->duplicates);
	values[5] = Int64GetDatum(result->late);
	values[6] = Int64GetDatum(result->dead_lettered);
	run("SELECT pg_catalog.pg_notify($1, pg_catalog.json_build_object('pipeline', $2, 'consumed', $3,"
		" 'merged', $4, 'duplicates', $5, 'late', $6, 'dead_lettered', $7)::pg_catalog.text)",
		7, types, values, NULL, NULL);
}

/*
 * sessionize_run_pipeline(caller regrole, name text, max_events integer)
 *	-> (consumed, merged, duplicates, late, dead_lettered)
 *
 * The body of run_pipeline(): one batch of at most max_events events.
 */
Datum
run_pipeline_batch(PG_FUNCTION_ARGS)
{
	Pipeline	pipeline;
	PipelineState state;
	BatchResult result = {0};
	TakenChanges changes = {0};
	Datum		slot = (Datum) 0;
	TupleDesc	result_type;
	Datum		values[5];
	bool		nulls[5] = {false};
	int			max_events;

	if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be positive")));
	max_events = PG_GETARG_INT32(2);
	if (get_call_result_type(fcinfo, NULL, &result_type) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	SPI_connect();
	read_pipeline(&pipeline, fcinfo->args[0], fcinfo->args[1]);
	read_state(&pipeline, &state);
	if (pipeline.logical)
		slot = ensure_slot(&pipeline, &state);
	check_source(&pipeline);
	/* no trigger can be added to the source while this batch checks and claims */
	if (!pipeline.logical)
		run(psprintf("LOCK TABLE ONLY %s IN ROW EXCLUSIVE MODE",
					 DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(pipeline.source)))),
			0, NULL, NULL, NULL, NULL);
	run_on_pipeline(&pipeline, "sessionize_check_owner_cached");
	read_events_of(&pipeline);

	if (pipeline.logical)
		consume_changes(&pipeline, &state, slot, max_events, &result, &changes);
	else
	{
		BatchSource source = batch_source(&pipeline, SOURCE_STAGING, INT4OID, Int32GetDatum(max_events));

		sessionize_consume_events(pipeline.header, state.has_watermark, state.watermark, false, &source, &result);
	}

	if (result.consumed > 0)
	{
		TimestampTz watermark;
		bool		has_watermark = record_batch(&pipeline, &result, &changes, &watermark);

		if (has_watermark && (!state.has_watermark || watermark > state.watermark))
			close_sessions(&pipeline, &state, has_watermark, watermark);
		notify(&pipeline, &result);
	}
	SPI_finish();

	values[0] = Int64GetDatum(result.consumed);
	values[1] = Int64GetDatum(result.merged);
	values[2] = Int64GetDatum(result.duplicates);
	values[3] = Int64GetDatum(result.late);
	values[4] = Int64GetDatum(result.dead_lettered);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_type), values, nulls)));
}

/*
 * sessionize_replay_late(caller regrole, name text, max_events integer)
 *	-> bigint
 *
 * The body of replay_late(): merges the oldest max_events (NULL: all) late
 * events of a pipeline into its sessions, whatever the watermark.
 */
Datum
replay_late_events(PG_FUNCTION_ARGS)
{
	Pipeline	pipeline;
	BatchResult result = {0};
	Oid			type = INT4OID;
	Datum		limit = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	char		limit_null = PG_ARGISNULL(2) ? 'n' : ' ';
	const char *late_table;
	Datum		events;
	bool		isnull;

	if (!PG_ARGISNULL(2) && PG_GETARG_INT32(2) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be positive")));

	SPI_connect();
	read_pipeline(&pipeline, fcinfo->args[0], fcinfo->args[1]);
	run_on_pipeline(&pipeline, "sessionize_check_owner_cached");
	read_events_of(&pipeline);

	late_table = quote_qualified_identifier("sessionize", psprintf("%s_late", pipeline.name));
	events = run(psprintf("WITH taken AS ("
						  " DELETE FROM %1$s l WHERE l.id OPERATOR(pg_catalog.=) ANY"
						  " (ARRAY(SELECT id FROM %1$s ORDER BY id LIMIT $1))"
						  " RETURNING l.id, l.event)"
						  " SELECT pg_catalog.array_agg(event ORDER BY id) FROM taken", late_table),
				 1, &type, &limit, &limit_null, &isnull);
	if (!isnull)
	{
		Oid			types[4] = {TEXTOID, INT8OID, INT8OID, INT8OID};
		Datum		values[4];

		/* a late event is its source row as jsonb, read back as the owner */
		BatchSource source = batch_source(&pipeline, SOURCE_LATE, JSONBARRAYOID, events);

		sessionize_consume_events(pipeline.header, false, 0, true, &source, &result);
		values[0] = CStringGetTextDatum(pipeline.name);
		values[1] = Int64GetDatum(result.merged);
		values[2] = Int64GetDatum(result.dead_lettered);
		values[3] = Int64GetDatum(result.consumed);
		run("UPDATE sessionize.pipeline_state s SET merged = s.merged OPERATOR(pg_catalog.+) $2,"
			" dead_lettered = s.dead_lettered OPERATOR(pg_catalog.+) $3,"
			" late = s.late OPERATOR(pg_catalog.-) $4"
			" WHERE s.pipeline OPERATOR(pg_catalog.=) $1",
			4, types, values, NULL, NULL);
	}
	SPI_finish();
	PG_RETURN_INT64(result.consumed);
}
