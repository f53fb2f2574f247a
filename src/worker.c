/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The scheduler of a database and the pipeline workers.
 *
 * The launcher (launcher.c) starts a scheduler in each database.  A
 * scheduler that finds no sessionize there exits; otherwise, every naptime,
 * it compares the active pipelines with the workers it runs: it starts a
 * dynamic worker for each active pipeline that has none, up to
 * sessionize.max_workers across the cluster, and stops the workers of
 * pipelines paused or dropped.  When the extension is dropped it stops its
 * workers and exits.
 *
 * A pipeline worker calls sessionize.run_pipeline() in a loop, one
 * transaction per batch: consuming, merging and the checkpoint commit
 * together, so a crash anywhere leaves all of a batch or none of it.  Under
 * backlog it runs batches back to back; otherwise it sleeps on its latch.  A
 * failing batch is rolled back, its error recorded in the pipeline's state,
 * and retried after a growing pause: the worker does not exit and restart in
 * a loop (a failure while decoding a logical source is the exception: the
 * decoding state cannot be trusted then, and the worker exits to start
 * again clean).  The worker of a logical pipeline keeps its decoding stream
 * open across batches (source_logical.c).  SIGTERM ends the worker between
 * batches.  A worker exits when
 * its pipeline is paused or dropped, and a session lock keeps it the only
 * worker of its pipeline.  Both connect as the bootstrap superuser and pin
 * search_path; run_pipeline() gives a batch the rights of the pipeline's
 * owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "sessionize.h"

#define LONGEST_BACKOFF_MS (60 * 1000)

/* What the scheduler knows of one pipeline's worker. */
typedef struct PipelineWorker
{
	int64		id;				/* the pipeline's incarnation */
	char		name[NAMEDATALEN];
	bool		active;			/* seen active in the catalog this round */
	BackgroundWorkerHandle *handle;
	int			quick_exits;	/* exits soon after start, for backoff */
	TimestampTz started_at;
	TimestampTz not_before;		/* earliest next start */
} PipelineWorker;

PGDLLEXPORT void sessionize_scheduler_main(Datum argument);
PGDLLEXPORT void sessionize_pipeline_main(Datum argument);

static PipelineWorker *workers = NULL;
static int	worker_count = 0;
static int	worker_capacity = 0;
static bool limit_reported = false;
static int	cluster_workers = 0;	/* pipeline workers of every database, last read */

/* Brackets a piece of SPI work in its own transaction. */
static void
begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static PipelineWorker *
find_worker(int64 id)
{
	for (int i = 0; i < worker_count; i++)
		if (workers[i].id == id)
			return &workers[i];
	return NULL;
}

/*
 * The settings of the database (ALTER DATABASE ... SET search_path, say) are
 * its owner's: neither the launcher nor a worker lets them decide what the
 * names in its queries mean.
 */
static void
pin_search_path(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * Reads the active pipelines; marks the known ones, adds new ones.  Returns
 * false when the extension is not installed in the database.
 */
static bool
read_active_pipelines(void)
{
	bool		installed = false;

	for (int i = 0; i < worker_count; i++)
		workers[i].active = false;

	begin_work("reading sessionize pipelines");
	if (SPI_execute("SELECT pg_catalog.to_regclass('sessionize.pipelines') IS NOT NULL", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		installed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		if (installed &&
			SPI_execute("SELECT p.name, p.id FROM sessionize.pipelines p"
						" WHERE p.state OPERATOR(pg_catalog.=) 'active' ORDER BY p.name", true, 0) == SPI_OK_SELECT)
		{
			for (uint64 row = 0; row < SPI_processed; row++)
			{
				char	   *name = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1);
				bool		isnull;
				int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 2, &isnull));
				PipelineWorker *worker = find_worker(id);

				if (worker == NULL)
				{
					MemoryContext old_context = MemoryContextSwitchTo(TopMemoryContext);

					if (worker_count == worker_capacity)
					{
						worker_capacity = Max(8, worker_capacity * 2);
						workers = workers == NULL ? palloc0(sizeof(PipelineWorker) * worker_capacity)
							: repalloc(workers, sizeof(PipelineWorker) * worker_capacity);
					}
					MemoryContextSwitchTo(old_context);
					worker = &workers[worker_count++];
					memset(worker, 0, sizeof(PipelineWorker));
					worker->id = id;
					strlcpy(worker->name, name, NAMEDATALEN);
				}
				worker->active = true;
			}
		}
	}
	if (SPI_execute("SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity"
					" WHERE backend_type OPERATOR(pg_catalog.=) 'sessionize pipeline'", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		cluster_workers = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	end_work();
	return installed;
}

static int
running_workers(void)
{
	int			running = 0;

	for (int i = 0; i < worker_count; i++)
		if (workers[i].handle != NULL)
			running++;
	return running;
}

static void
start_worker(PipelineWorker *worker)
{
	BackgroundWorker definition = {0};
	TimestampTz now = GetCurrentTimestamp();

	if (now < worker->not_before)
		return;
	/* this scheduler's own workers count at once, other databases' as last read */
	if (Max(running_workers(), cluster_workers) >= sessionize_max_workers)
	{
		if (!limit_reported)
			ereport(LOG,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("sessionize cannot start a worker for pipeline \"%s\": sessionize.max_workers (%d) are running",
							worker->name, sessionize_max_workers),
					 errhint("Raise sessionize.max_workers, or pause pipelines.")));
		limit_reported = true;
		return;
	}

	definition.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	definition.bgw_start_time = BgWorkerStart_RecoveryFinished;
	definition.bgw_restart_time = BGW_NEVER_RESTART;
	definition.bgw_notify_pid = MyProcPid;
	snprintf(definition.bgw_library_name, BGW_MAXLEN, "sessionize");
	snprintf(definition.bgw_function_name, BGW_MAXLEN, "sessionize_pipeline_main");
	snprintf(definition.bgw_name, BGW_MAXLEN, "sessionize pipeline %s", worker->name);
	snprintf(definition.bgw_type, BGW_MAXLEN, "sessionize pipeline");
	definition.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	StaticAssertStmt(NAMEDATALEN + sizeof(int64) <= BGW_EXTRALEN, "pipeline name and id must fit in bgw_extra");
	memcpy(definition.bgw_extra, worker->name, NAMEDATALEN);
	memcpy(definition.bgw_extra + NAMEDATALEN, &worker->id, sizeof(int64));

	if (!RegisterDynamicBackgroundWorker(&definition, &worker->handle))
	{
		worker->handle = NULL;
		if (!limit_reported)
			ereport(LOG,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("sessionize cannot start a worker for pipeline \"%s\": no background worker slot is free",
							worker->name),
					 errhint("Raise max_worker_processes.")));
		limit_reported = true;
		return;
	}
	limit_reported = false;
	worker->started_at = now;
	cluster_workers++;
}

/* Starts, stops and forgets workers to match the active pipelines. */
static void
reconcile_workers(void)
{
	for (int i = 0; i < worker_count; i++)
	{
		PipelineWorker *worker = &workers[i];

		/* a worker that stops soon after starting is restarted ever later */
		sessionize_reap_worker(&worker->handle, worker->started_at, &worker->quick_exits,
							   LONGEST_BACKOFF_MS, &worker->not_before);
		if (!worker->active && worker->handle != NULL)
			TerminateBackgroundWorker(worker->handle);
		else if (worker->active && worker->handle == NULL)
			start_worker(worker);
	}
	/* forget stopped workers of pipelines that are gone */
	for (int i = worker_count - 1; i >= 0; i--)
		if (!workers[i].active && workers[i].handle == NULL)
			workers[i] = workers[--worker_count];
}

/*
 * Whether DROP DATABASE waits for this database: it holds the database's
 * lock while it waits for the other sessions to leave.  Asked without
 * waiting, and the lock, when granted, given back at once.
 */
static bool
database_being_dropped(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	if (LockAcquire(&tag, RowExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, RowExclusiveLock, true);
	return false;
}

void
sessionize_scheduler_main(Datum argument)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(argument), InvalidOid, 0);
	pin_search_path();
	pgstat_report_appname("sessionize scheduler");
	/* a launcher restarted by the postmaster does not know the schedulers it left */
	if (!sessionize_lock_scheduler())
	{
		char		database[NAMEDATALEN];

		memcpy(database, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
		database[NAMEDATALEN - 1] = '\0';
		ereport(LOG,
				(errmsg("sessionize database \"%s\" already has a scheduler, this one exits", database)));
		proc_exit(0);
	}

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!RecoveryInProgress())
		{
			/* no sessionize here (any more), or DROP DATABASE waits: its workers go too */
			if (database_being_dropped() || !read_active_pipelines())
			{
				for (int i = 0; i < worker_count; i++)
					if (workers[i].handle != NULL)
						TerminateBackgroundWorker(workers[i].handle);
				proc_exit(0);
			}
			reconcile_workers();
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sessionize_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Runs one batch in its own transaction, if the pipeline is still there (the
 * same incarnation) and active (*pipeline_gone otherwise).  Returns the
 * number of events consumed, or -1 when the batch failed (rolled back, error
 * recorded).  The worker connects as a superuser; run_pipeline() runs the
 * batch with the rights of the pipeline's owner.
 */
static int64
run_one_batch(const char *pipeline, int64 pipeline_id, MemoryContext worker_context, bool *pipeline_gone)
{
	volatile int64 consumed = 0;

	PG_TRY();
	{
		Oid			types[2] = {INT8OID, INT4OID};
		Datum		values[2];
		bool		isnull;

		begin_work("sessionize.run_pipeline");
		values[0] = Int64GetDatum(pipeline_id);
		values[1] = Int32GetDatum(sessionize_batch_size);
		if (SPI_execute_with_args("SELECT b.consumed FROM sessionize.pipelines p,"
								  " sessionize.run_pipeline(p.name, $2) b"
								  " WHERE p.id OPERATOR(pg_catalog.=) $1"
								  " AND p.state OPERATOR(pg_catalog.=) 'active'",
								  2, types, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not run pipeline \"%s\"", pipeline);
		if (SPI_processed == 0)
			*pipeline_gone = true;
		else
			consumed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		end_work();
	}
	PG_CATCH();
	{
		ErrorData  *error;
		bool		stream_usable;

		MemoryContextSwitchTo(worker_context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		stream_usable = sessionize_stream_after_error();
		pgstat_report_activity(STATE_IDLE, NULL);
		ereport(LOG,
				(errcode(error->sqlerrcode),
				 errmsg("sessionize pipeline \"%s\" failed a batch: %s", pipeline, error->message),
				 errdetail("The batch was rolled back and will be retried.")));
		{
			Oid			types[2] = {TEXTOID, TEXTOID};
			Datum		values[2];

			begin_work("recording a sessionize pipeline failure");
			values[0] = CStringGetTextDatum(pipeline);
			values[1] = CStringGetTextDatum(error->message);
			SPI_execute_with_args("SELECT sessionize.sessionize_record_failure($1, $2)",
								  2, types, values, NULL, false, 1);
			end_work();
		}
		if (!stream_usable)
		{
			ereport(LOG,
					(errmsg("sessionize pipeline \"%s\" failed while decoding; its worker starts again", pipeline)));
			proc_exit(1);
		}
		consumed = -1;
	}
	PG_END_TRY();
	return consumed;
}

void
sessionize_pipeline_main(Datum argument)
{
	char		pipeline[NAMEDATALEN];
	int64		pipeline_id;
	MemoryContext worker_context;
	int			failures = 0;

	memcpy(pipeline, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	memcpy(&pipeline_id, MyBgworkerEntry->bgw_extra + NAMEDATALEN, sizeof(int64));
	pipeline[NAMEDATALEN - 1] = '\0';
	sessionize_worker_pipeline_id = pipeline_id;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	/* finish the batch in hand, then exit */
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(argument), InvalidOid, 0);
	pin_search_path();
	pgstat_report_appname(psprintf("sessionize pipeline %s", pipeline));
	worker_context = AllocSetContextCreate(TopMemoryContext, "sessionize pipeline worker",
										   ALLOCSET_DEFAULT_SIZES);
	if (!sessionize_lock_pipeline_worker(pipeline_id))
	{
		ereport(LOG,
				(errmsg("sessionize pipeline \"%s\" already has a worker, this one exits", pipeline)));
		proc_exit(0);
	}

	for (;;)
	{
		int64		consumed;
		bool		pipeline_gone = false;
		long		pause_ms;

		if (ShutdownRequestPending)
			proc_exit(0);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextReset(worker_context);
		consumed = run_one_batch(pipeline, pipeline_id, worker_context, &pipeline_gone);
		if (pipeline_gone)
			proc_exit(0);

		if (consumed < 0)
		{
			failures = Min(failures + 1, 10);
			pause_ms = Min((int64) sessionize_naptime_ms << failures, LONGEST_BACKOFF_MS);
		}
		else
		{
			failures = 0;
			if (consumed >= sessionize_batch_size)
				continue;		/* backlog: the next batch at once */
			pause_ms = sessionize_naptime_ms;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 pause_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
