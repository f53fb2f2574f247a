/*-------------------------------------------------------------------------
 *
 * sessionize.c
 *	  Module entry point: settings, and the background worker when preloaded;
 *	  and the small helpers that the aggregates and the sinks share.
 *
 * SQL functions and aggregates work in any backend that loads the library;
 * the settings are defined in every process so that they can be set in
 * postgresql.conf whether or not the library is preloaded.  Only when it is
 * preloaded does _PG_init register the pipeline launcher.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

PG_MODULE_MAGIC;

char	   *sessionize_database = NULL;
int			sessionize_max_workers = 4;
int			sessionize_naptime_ms = 250;
int			sessionize_batch_size = 1000;
int			sessionize_worker_turn_ms = 10000;

void		_PG_init(void);

void
_PG_init(void)
{
	/* Only the postmaster can define a start-up setting: the launcher's. */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("sessionize.database",
								   "The only database whose pipelines run; empty: every database.",
								   "By default the launcher serves every database where the extension is installed.",
								   &sessionize_database,
								   "",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);
	DefineCustomIntVariable("sessionize.max_workers",
							"Maximum number of pipeline workers running at once.",
							"Pipelines take turns when there are more of them; workers count against max_worker_processes.",
							&sessionize_max_workers,
							4, 0, 64,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("sessionize.naptime",
							"Time an idle pipeline worker waits before looking for new events.",
							NULL,
							&sessionize_naptime_ms,
							250, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("sessionize.batch_size",
							"Most events a pipeline worker consumes in one transaction.",
							"Under backlog, workers run full batches back to back.",
							&sessionize_batch_size,
							1000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("sessionize.worker_turn",
							"Time a worker serves one pipeline while others with events wait for a worker.",
							NULL,
							&sessionize_worker_turn_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("sessionize");
#else
	EmitWarningsOnPlaceholders("sessionize");
#endif

	if (process_shared_preload_libraries_in_progress)
		sessionize_register_launcher();
}

/* The memory context of an aggregate's state; an error outside aggregates. */
MemoryContext
sessionize_aggregate_context(FunctionCallInfo fcinfo, const char *function)
{
	MemoryContext context;

	if (!AggCheckCallContext(fcinfo, &context))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s called in non-aggregate context", function)));
	return context;
}

/* A one-dimensional array of element_type from values and nulls. */
Datum
sessionize_make_array(Datum *values, bool *nulls, int count, Oid element_type)
{
	int16		length;
	bool		byval;
	char		align;

	get_typlenbyvalalign(element_type, &length, &byval, &align);
	return PointerGetDatum(construct_md_array(values, nulls, 1, &count, (int[]) {1}, element_type,
											  length, byval, align));
}
