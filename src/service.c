/*-------------------------------------------------------------------------
 *
 * service.c
 *	  Whether a pipeline is served by a worker, and if not, why.
 *
 * pipeline_status shows, for each pipeline, the pid of its worker and a
 * waiting_reason; create_pipeline() warns when a new pipeline cannot run as
 * things stand.  Both ask pipeline_service(), which reads what the launcher
 * (launcher.c) and the schedulers and workers (worker.c) of the cluster
 * show in pg_stat_activity: a worker's application name carries its
 * pipeline's id, and its row the database, so that pipelines of the same
 * name in two databases are never confused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(pipeline_service);

/*
 * pipeline_service(id bigint, state text, failures integer,
 *					OUT worker_pid integer, OUT waiting_reason text,
 *					OUT can_run boolean)
 *
 * waiting_reason is NULL while a worker serves the pipeline without
 * failing; can_run is false when it cannot run as things stand (no
 * launcher, another database served, no workers at all).
 */
Datum
pipeline_service(PG_FUNCTION_ARGS)
{
	TupleDesc	result_type;
	Datum		values[3] = {0};
	bool		nulls[3] = {true, true, false};
	Oid			types[2] = {OIDOID, TEXTOID};
	Datum		arguments[2];
	bool		isnull;
	int64		id;
	const char *state;
	int32		failures;
	int32		pid = 0;
	int64		busy;
	bool		launcher;
	bool		scheduler;
	const char *reason = NULL;
	bool		can_run = true;

	if (get_call_result_type(fcinfo, NULL, &result_type) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pipeline_service must return a row");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline id and state must not be null")));
	id = PG_GETARG_INT64(0);
	state = text_to_cstring(PG_GETARG_TEXT_PP(1));
	failures = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);

	arguments[0] = ObjectIdGetDatum(MyDatabaseId);
	arguments[1] = CStringGetTextDatum(psprintf("sessionize pipeline " INT64_FORMAT " ", id));
	SPI_connect();
	if (SPI_execute_with_args("SELECT (SELECT a.pid FROM pg_catalog.pg_stat_activity a"
							  "         WHERE a.backend_type OPERATOR(pg_catalog.=) 'sessionize pipeline'"
							  "           AND a.datid OPERATOR(pg_catalog.=) $1"
							  "           AND pg_catalog.starts_with(a.application_name, $2) LIMIT 1),"
							  " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a"
							  "  WHERE a.backend_type OPERATOR(pg_catalog.=) 'sessionize pipeline'),"
							  " EXISTS (SELECT FROM pg_catalog.pg_stat_activity a"
							  "         WHERE a.backend_type OPERATOR(pg_catalog.=) 'sessionize launcher'),"
							  " EXISTS (SELECT FROM pg_catalog.pg_stat_activity a"
							  "         WHERE a.backend_type OPERATOR(pg_catalog.=) 'sessionize scheduler'"
							  "           AND a.datid OPERATOR(pg_catalog.=) $1)",
							  2, types, arguments, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the sessionize workers");
	pid = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &nulls[0]));
	busy = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	launcher = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	scheduler = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	SPI_finish();

	if (strcmp(state, "paused") == 0)
		reason = "paused: resume_pipeline() lets it run again";
	else if (!launcher)
	{
		reason = "no launcher: sessionize is not in shared_preload_libraries, or the server was not restarted since";
		can_run = false;
	}
	else if (sessionize_database != NULL && sessionize_database[0] != '\0' &&
			 strcmp(sessionize_database, get_database_name(MyDatabaseId)) != 0)
	{
		reason = psprintf("database not served: sessionize.database = '%s'", sessionize_database);
		can_run = false;
	}
	else if (sessionize_max_workers == 0)
	{
		reason = "no workers: sessionize.max_workers = 0";
		can_run = false;
	}
	else if (!nulls[0])
		reason = failures > 0 ? "failing: its batches are retried, see last_error" : NULL;
	else if (!scheduler)
		reason = "waiting for the scheduler of this database, which starts within 30 seconds of the extension";
	else if (busy >= sessionize_max_workers)
		reason = psprintf("no worker free: " INT64_FORMAT " of %d busy; pipelines take turns", busy,
						  sessionize_max_workers);
	else
		reason = "starting: a worker is due within sessionize.naptime";

	values[0] = Int32GetDatum(pid);
	if (reason != NULL)
	{
		values[1] = CStringGetTextDatum(reason);
		nulls[1] = false;
	}
	values[2] = BoolGetDatum(can_run);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_type), values, nulls)));
}
