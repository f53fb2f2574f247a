/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one per cluster, it starts a scheduler in every database.
 *
 * The launcher is a background worker registered from shared_preload_libraries.
 * It connects to no database: every naptime it reads the shared catalog
 * pg_database and starts a scheduler (worker.c) in each database that
 * accepts connections and is not a template, or only in
 * sessionize.database when that is set.  A scheduler in a database without
 * the extension exits at once; the launcher tries it again later, ever
 * less often (up to every 30 seconds), so an extension created afterwards is
 * served within that time.  The launcher never runs on a standby (it starts
 * when recovery is finished), and the postmaster restarts it if it dies.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sessionize.h"

#define LONGEST_RETRY_MS (30 * 1000)

/* What the launcher knows of one database's scheduler. */
typedef struct DatabaseScheduler
{
	Oid			database;
	char		name[NAMEDATALEN];
	bool		listed;			/* seen in pg_database this round */
	BackgroundWorkerHandle *handle;
	int			quick_exits;	/* exits soon after start, for backoff */
	TimestampTz started_at;
	TimestampTz not_before;		/* earliest next start */
} DatabaseScheduler;

PGDLLEXPORT void sessionize_launcher_main(Datum argument);

static DatabaseScheduler *schedulers = NULL;
static int	scheduler_count = 0;
static int	scheduler_capacity = 0;
static bool limit_reported = false;

void
sessionize_register_launcher(void)
{
	BackgroundWorker worker = {0};

	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "sessionize");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "sessionize_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "sessionize launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "sessionize launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * If the background worker of *handle has stopped, forgets its handle and
 * sets *not_before to when to start it again: after the naptime if it ran
 * for a while, else ever later (doubling, up to longest_ms), so that one
 * that cannot work does not restart in a loop.
 */
void
sessionize_reap_worker(BackgroundWorkerHandle **handle, TimestampTz started_at, int *quick_exits,
					   int longest_ms, TimestampTz *not_before)
{
	TimestampTz now;
	pid_t		pid;

	if (*handle == NULL || GetBackgroundWorkerPid(*handle, &pid) != BGWH_STOPPED)
		return;
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(started_at, now, 10 * 1000))
		*quick_exits = 0;
	else
		*quick_exits = Min(*quick_exits + 1, 10);
	*not_before = TimestampTzPlusMilliseconds(now, Min((int64) sessionize_naptime_ms << *quick_exits, longest_ms));
	pfree(*handle);
	*handle = NULL;
}

static DatabaseScheduler *
find_scheduler(Oid database)
{
	for (int i = 0; i < scheduler_count; i++)
		if (schedulers[i].database == database)
			return &schedulers[i];
	return NULL;
}

/* Marks the databases to serve as listed, adding the new ones. */
static void
list_databases(void)
{
	Relation	relation;
	TableScanDesc scan;
	HeapTuple	tuple;

	for (int i = 0; i < scheduler_count; i++)
		schedulers[i].listed = false;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	relation = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(relation, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database database = (Form_pg_database) GETSTRUCT(tuple);
		DatabaseScheduler *scheduler;

		if (!database->datallowconn || database->datistemplate)
			continue;
		if (sessionize_database != NULL && sessionize_database[0] != '\0' &&
			strcmp(NameStr(database->datname), sessionize_database) != 0)
			continue;
		scheduler = find_scheduler(database->oid);
		if (scheduler == NULL)
		{
			MemoryContext old_context = MemoryContextSwitchTo(TopMemoryContext);

			if (scheduler_count == scheduler_capacity)
			{
				scheduler_capacity = Max(8, scheduler_capacity * 2);
				schedulers = schedulers == NULL ? palloc0(sizeof(DatabaseScheduler) * scheduler_capacity)
					: repalloc(schedulers, sizeof(DatabaseScheduler) * scheduler_capacity);
			}
			MemoryContextSwitchTo(old_context);
			scheduler = &schedulers[scheduler_count++];
			memset(scheduler, 0, sizeof(DatabaseScheduler));
			scheduler->database = database->oid;
			strlcpy(scheduler->name, NameStr(database->datname), NAMEDATALEN);
		}
		scheduler->listed = true;
	}
	table_endscan(scan);
	table_close(relation, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static void
start_scheduler(DatabaseScheduler *scheduler)
{
	BackgroundWorker definition = {0};
	TimestampTz now = GetCurrentTimestamp();

	if (now < scheduler->not_before)
		return;
	definition.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	definition.bgw_start_time = BgWorkerStart_RecoveryFinished;
	definition.bgw_restart_time = BGW_NEVER_RESTART;
	definition.bgw_notify_pid = MyProcPid;
	definition.bgw_main_arg = ObjectIdGetDatum(scheduler->database);
	memcpy(definition.bgw_extra, scheduler->name, NAMEDATALEN);
	snprintf(definition.bgw_library_name, BGW_MAXLEN, "sessionize");
	snprintf(definition.bgw_function_name, BGW_MAXLEN, "sessionize_scheduler_main");
	snprintf(definition.bgw_name, BGW_MAXLEN, "sessionize scheduler %s", scheduler->name);
	snprintf(definition.bgw_type, BGW_MAXLEN, "sessionize scheduler");
	if (!RegisterDynamicBackgroundWorker(&definition, &scheduler->handle))
	{
		scheduler->handle = NULL;
		if (!limit_reported)
			ereport(LOG,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("sessionize cannot start a scheduler in database \"%s\": no background worker slot is free",
							scheduler->name),
					 errhint("Raise max_worker_processes.")));
		limit_reported = true;
		return;
	}
	limit_reported = false;
	scheduler->started_at = now;
}

/* Starts schedulers in the listed databases; forgets dropped databases. */
static void
reconcile_schedulers(void)
{
	for (int i = 0; i < scheduler_count; i++)
	{
		DatabaseScheduler *scheduler = &schedulers[i];

		/* a database without the extension is tried again ever later */
		sessionize_reap_worker(&scheduler->handle, scheduler->started_at, &scheduler->quick_exits,
							   LONGEST_RETRY_MS, &scheduler->not_before);
		if (scheduler->listed && scheduler->handle == NULL)
			start_scheduler(scheduler);
	}
	for (int i = scheduler_count - 1; i >= 0; i--)
		if (!schedulers[i].listed && schedulers[i].handle == NULL)
			schedulers[i] = schedulers[--scheduler_count];
}

void
sessionize_launcher_main(Datum argument)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* no database: the launcher reads shared catalogs only */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("sessionize launcher");

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
			list_databases();
			reconcile_schedulers();
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sessionize_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
