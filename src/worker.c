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
 * Pipelines take turns when there are more of them than workers: those with
 * events waiting go first (as the statistics of a staging table, or the WAL
 * a logical slot has not confirmed, tell), one that has waited longer than
 * a turn before the others, otherwise the largest backlog first; and when
 * such a pipeline waits, the worker that has served its pipeline longest,
 * once past sessionize.worker_turn, is asked to end its turn (it finishes
 * the batch in hand).  So max_workers bounds how many pipelines run at
 * once, not how many can run.
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
	int64		backlog;		/* events waiting, an estimate; 0: none */
	TimestampTz waiting_since;	/* without a worker since; 0: has one */
	bool		yielding;		/* asked to end its turn */
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

		/*
		 * What waits, from statistics only: the scheduler reads no table of
		 * a pipeline's owner.
		 */
		if (installed &&
			SPI_execute(psprintf("SELECT p.name, p.id,"
								 " CASE WHEN p.source_kind OPERATOR(pg_catalog.=) 'table'"
								 " THEN pg_catalog.pg_stat_get_live_tuples(p.source::pg_catalog.oid)"
								 " ELSE (r.confirmed_flush_lsn OPERATOR(pg_catalog.<) pg_catalog.pg_current_wal_lsn())::pg_catalog.int4::pg_catalog.int8 END"
								 " FROM sessionize.pipelines p"
								 " LEFT JOIN pg_catalog.pg_replication_slots r"
								 " ON r.slot_name OPERATOR(pg_catalog.=) pg_catalog.format('sessionize_%%s_%%s', %u, p.name)"
								 " WHERE p.state OPERATOR(pg_catalog.=) 'active' ORDER BY p.name", MyDatabaseId),
						true, 0) == SPI_OK_SELECT)
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
					worker->waiting_since = GetCurrentTimestamp();
				}
				worker->active = true;
				worker->backlog = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 3,
															  &isnull));
				if (isnull || worker->backlog < 0)
					worker->backlog = 0;
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

/* Starts a worker for a pipeline; false when no worker may start now. */
static bool
start_worker(PipelineWorker *worker)
{
	BackgroundWorker definition = {0};
	TimestampTz now = GetCurrentTimestamp();

	/* this scheduler's own workers count at once, other databases' as last read */
	if (Max(running_workers(), cluster_workers) >= sessionize_max_workers)
		return false;

	definition.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	definition.bgw_start_time = BgWorkerStart_RecoveryFinished;
	definition.bgw_restart_time = BGW_NEVER_RESTART;
	definition.bgw_notify_pid = MyProcPid;
	snprintf(definition.bgw_library_name, BGW_MAXLEN, "sessionize");
	snprintf(definition.bgw_function_name, BGW_MAXLEN, "sessionize_pipeline_main");
	snprintf(definition.bgw_name, BGW_MAXLEN, "sessionize pipeline " INT64_FORMAT " %s", worker->id, worker->name);
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
		return false;
	}
	limit_reported = false;
	worker->started_at = now;
	worker->waiting_since = 0;
	cluster_workers++;
	return true;
}

static TimestampTz round_started_at;

/* Which waiting pipeline gets a worker first (see the head of this file). */
static int
waiting_order(const void *a, const void *b)
{
	const PipelineWorker *x = *(PipelineWorker *const *) a;
	const PipelineWorker *y = *(PipelineWorker *const *) b;
	bool		x_starving = TimestampDifferenceExceeds(x->waiting_since, round_started_at, sessionize_worker_turn_ms);
	bool		y_starving = TimestampDifferenceExceeds(y->waiting_since, round_started_at, sessionize_worker_turn_ms);

	if ((x->backlog > 0) != (y->backlog > 0))
		return x->backlog > 0 ? -1 : 1;
	if (x_starving != y_starving)
		return x_starving ? -1 : 1;
	if (!x_starving && x->backlog != y->backlog)
		return x->backlog > y->backlog ? -1 : 1;
	if (x->waiting_since != y->waiting_since)
		return x->waiting_since < y->waiting_since ? -1 : 1;
	return 0;
}

static int
serving_order(const void *a, const void *b)
{
	const PipelineWorker *x = *(PipelineWorker *const *) a;
	const PipelineWorker *y = *(PipelineWorker *const *) b;

	if (x->started_at != y->started_at)
		return x->started_at < y->started_at ? -1 : 1;
	return 0;
}

/*
 * Starts, stops and forgets workers to match the active pipelines, and lets
 * pipelines with events waiting take turns when workers are short.
 */
static void
reconcile_workers(void)
{
	PipelineWorker **waiting = palloc(sizeof(PipelineWorker *) * Max(worker_count, 1));
	PipelineWorker **serving = palloc(sizeof(PipelineWorker *) * Max(worker_count, 1));
	int			waiting_count = 0;
	int			serving_count = 0;
	int			waiting_with_events = 0;

	round_started_at = GetCurrentTimestamp();
	for (int i = 0; i < worker_count; i++)
	{
		PipelineWorker *worker = &workers[i];
		bool		was_running = worker->handle != NULL;

		/* a worker that stops soon after starting is restarted ever later */
		sessionize_reap_worker(&worker->handle, worker->started_at, &worker->quick_exits,
							   LONGEST_BACKOFF_MS, &worker->not_before);
		if (was_running && worker->handle == NULL)
		{
			worker->waiting_since = round_started_at;
			/* a worker that ended its turn when asked may start again at its next turn */
			if (worker->yielding)
			{
				worker->quick_exits = 0;
				worker->not_before = 0;
				worker->yielding = false;
			}
		}
		if (!worker->active && worker->handle != NULL)
			TerminateBackgroundWorker(worker->handle);
	}
	/* forget stopped workers of pipelines that are gone */
	for (int i = worker_count - 1; i >= 0; i--)
		if (!workers[i].active && workers[i].handle == NULL)
			workers[i] = workers[--worker_count];

	for (int i = 0; i < worker_count; i++)
	{
		if (workers[i].handle != NULL)
			serving[serving_count++] = &workers[i];
		else if (round_started_at >= workers[i].not_before)
			waiting[waiting_count++] = &workers[i];
	}
	qsort(waiting, waiting_count, sizeof(PipelineWorker *), waiting_order);
	for (int i = 0; i < waiting_count; i++)
	{
		if (!start_worker(waiting[i]))
		{
			for (int j = i; j < waiting_count; j++)
				if (waiting[j]->backlog > 0)
					waiting_with_events++;
			break;
		}
	}

	/* workers past their turn make room for pipelines whose events wait */
	qsort(serving, serving_count, sizeof(PipelineWorker *), serving_order);
	for (int i = 0; i < serving_count && waiting_with_events > 0; i++)
	{
		PipelineWorker *worker = serving[i];

		if (worker->yielding)
		{
			waiting_with_events--;
			continue;
		}
		if (!TimestampDifferenceExceeds(worker->started_at, round_started_at, sessionize_worker_turn_ms))
			break;
		TerminateBackgroundWorker(worker->handle);
		worker->yielding = true;
		waiting_with_events--;
	}
	pfree(waiting);
	pfree(serving);
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
 *
 * The batch lock comes first and the pipeline is read after it: pausing and
 * dropping take that lock too, so they wait for the batch in hand, and a
 * batch that waited for them sees them.  Once pause_pipeline() or
 * drop_pipeline() returns, the worker takes no more events.
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
		sessionize_lock_pipeline_batch_of(pipeline);
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
	/* pipeline_status finds a pipeline's worker by database and pipeline id */
	pgstat_report_appname(psprintf("sessionize pipeline " INT64_FORMAT " %s", pipeline_id, pipeline));
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
