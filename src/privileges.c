/*-------------------------------------------------------------------------
 *
 * privileges.c
 *	  Who a pipeline's work runs as.
 *
 * The extension's tables are written only by the extension's own functions,
 * running as the extension's owner; user code never runs with those rights.
 * Three pieces make that hold:
 *
 * - call_as_extension() is the C body of every SQL function through which a
 *	 role acts on a pipeline (run_pipeline(), alter_pipeline(), ...).  It calls
 *	 sessionize_<name>(caller, arguments...), a SECURITY DEFINER function that
 *	 no one else may execute, passing the role that called it, so that the
 *	 body can check what that role may do.  A SECURITY DEFINER function cannot
 *	 see who called it; this is how it learns.
 *
 * - rows_as() runs one query as a pipeline's owner, in a security-restricted
 *	 operation with a pinned search_path, and returns its rows: claiming from
 *	 the source, decoding changes and reading late events fire triggers,
 *	 domain checks and type input functions that the owner's side wrote.
 *	 run_as() runs a statement so, for a grant that must keep its grantor.
 *
 * - pipeline and scheduler locks use advisory lock tags of a class no SQL
 *	 function can produce, so that no role can hold one and stall a pipeline.
 *
 * - check_owner_cached() runs sessionize_check_owner(), which reads much of
 *	 the catalog, only when the catalog may have changed since it last
 *	 passed for the pipeline in this backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(call_as_extension);
PG_FUNCTION_INFO_V1(call_as_extension_in_schema);
PG_FUNCTION_INFO_V1(rows_as);
PG_FUNCTION_INFO_V1(run_as);
PG_FUNCTION_INFO_V1(lock_pipeline_batch);
PG_FUNCTION_INFO_V1(try_lock_pipeline_batch_briefly);
PG_FUNCTION_INFO_V1(unlock_pipeline_batch_briefly);
PG_FUNCTION_INFO_V1(check_owner_cached);

/*
 * Lock tag classes of sessionize.  SQL's advisory lock functions use 1 and 2
 * in the fourth field; these values are out of their reach.
 */
#define PIPELINE_BATCH_LOCK_CLASS	0x5301
#define PIPELINE_WORKER_LOCK_CLASS	0x5302
#define SCHEDULER_LOCK_CLASS		0x5303

/*
 * Calls sessionize_<name>(caller regrole, [caller_schema text,] arguments...)
 * in the schema of the called function, where <name> is the called
 * function's name.  caller_schema, the caller's current schema (NULL if
 * none), is for bodies that create objects where the caller would.
 */
static Datum
call_body(FunctionCallInfo fcinfo, bool with_schema)
{
	FmgrInfo   *body = (FmgrInfo *) fcinfo->flinfo->fn_extra;
	int			leading = with_schema ? 2 : 1;
	FunctionCallInfo call;
	Datum		result;

	if (body == NULL)
	{
		Oid			self = fcinfo->flinfo->fn_oid;
		Oid		   *argument_types;
		int			argument_count;
		Oid			body_types[FUNC_MAX_ARGS];
		char	   *body_name;
		Oid			body_oid;

		get_func_signature(self, &argument_types, &argument_count);
		if (argument_count + leading > FUNC_MAX_ARGS)
			elog(ERROR, "too many arguments for call_as_extension");
		body_types[0] = REGROLEOID;
		body_types[1] = TEXTOID;
		memcpy(body_types + leading, argument_types, sizeof(Oid) * argument_count);
		body_name = psprintf("sessionize_%s", get_func_name(self));
		body_oid = LookupFuncName(list_make2(makeString(get_namespace_name(get_func_namespace(self))),
											 makeString(body_name)),
								  argument_count + leading, body_types, false);
		body = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(FmgrInfo));
		fmgr_info_cxt(body_oid, body, fcinfo->flinfo->fn_mcxt);
		fcinfo->flinfo->fn_extra = body;
	}

	call = palloc0(SizeForFunctionCallInfo(fcinfo->nargs + leading));
	InitFunctionCallInfoData(*call, body, fcinfo->nargs + leading, fcinfo->fncollation, NULL, NULL);
	call->args[0].value = ObjectIdGetDatum(GetUserId());
	call->args[0].isnull = false;
	if (with_schema)
	{
		List	   *search_path = fetch_search_path(false);
		char	   *schema = search_path == NIL ? NULL : get_namespace_name(linitial_oid(search_path));

		call->args[1].value = schema == NULL ? (Datum) 0 : CStringGetTextDatum(schema);
		call->args[1].isnull = schema == NULL;
	}
	memcpy(call->args + leading, fcinfo->args, sizeof(NullableDatum) * fcinfo->nargs);
	result = FunctionCallInvoke(call);
	fcinfo->isnull = call->isnull;
	return result;
}

/* call_as_extension(arguments...): sessionize_<name>(caller, arguments...) */
Datum
call_as_extension(PG_FUNCTION_ARGS)
{
	return call_body(fcinfo, false);
}

/*
 * call_as_extension_in_schema(arguments...):
 * sessionize_<name>(caller, caller_schema, arguments...)
 */
Datum
call_as_extension_in_schema(PG_FUNCTION_ARGS)
{
	return call_body(fcinfo, true);
}

/*
 * What the owner's query runs with, whatever the session has: names resolve
 * in pg_catalog only, and values are written as text (a row made jsonb, to
 * be fingerprinted) the same way in every session, times in UTC.
 */
static const char *const pinned_settings[][2] = {
	{"search_path", "pg_catalog, pg_temp"},
	{"TimeZone", "UTC"},
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
};

/*
 * Runs query, with argument as $1, as role in a security-restricted operation
 * (no SET ROLE, no temporary objects, nothing left behind for later code)
 * with the settings above pinned, and returns the SPI status; the rows are in
 * SPI_tuptable.  The caller is connected to SPI; the query is sessionize's.
 */
int
sessionize_execute_as(Oid role, const char *query, Oid argument_type, Datum argument, bool argument_null)
{
	Oid			saved_user;
	int			saved_context;
	int			nest_level;
	char		null_flag = argument_null ? 'n' : ' ';
	int			status;

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", role)));
	GetUserIdAndSecContext(&saved_user, &saved_context);
	SetUserIdAndSecContext(role, saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	nest_level = NewGUCNestLevel();
	for (int i = 0; i < lengthof(pinned_settings); i++)
		(void) set_config_option(pinned_settings[i][0], pinned_settings[i][1], PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	status = SPI_execute_with_args(query, 1, &argument_type, &argument, &null_flag, false, 0);
	AtEOXact_GUC(false, nest_level);
	SetUserIdAndSecContext(saved_user, saved_context);
	return status;
}

/*
 * Checks that the rows of an owner's query have the columns expected.
 */
void
sessionize_check_columns(TupleDesc found, TupleDesc expected)
{
	if (found->natts != expected->natts)
		elog(ERROR, "the query returns %d columns, %d expected", found->natts, expected->natts);
	for (int i = 0; i < expected->natts; i++)
		if (TupleDescAttr(found, i)->atttypid != TupleDescAttr(expected, i)->atttypid)
			elog(ERROR, "column %d of the query is of type %s, %s expected", i + 1,
				 format_type_be(TupleDescAttr(found, i)->atttypid),
				 format_type_be(TupleDescAttr(expected, i)->atttypid));
}

/*
 * rows_as(role regrole, query text, argument anyelement) returns setof record:
 * the rows of query run as role through sessionize_execute_as().  Functions
 * of sessionize only; the query is theirs.
 */
Datum
rows_as(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *result_info = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old_context;
	TupleDesc	expected;
	Tuplestorestate *rows;
	int			status;

	if (result_info == NULL || !IsA(result_info, ReturnSetInfo) ||
		(result_info->allowedModes & SFRM_Materialize) == 0 || result_info->expectedDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("rows_as must be called in FROM with a column definition list")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role and query must not be null")));

	old_context = MemoryContextSwitchTo(result_info->econtext->ecxt_per_query_memory);
	expected = CreateTupleDescCopy(result_info->expectedDesc);
	rows = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old_context);

	SPI_connect();
	status = sessionize_execute_as(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
								   get_fn_expr_argtype(fcinfo->flinfo, 2),
								   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), PG_ARGISNULL(2));
	if (status < 0 || SPI_tuptable == NULL)
		elog(ERROR, "rows_as: the query returned no rows: %s", SPI_result_code_string(status));
	sessionize_check_columns(SPI_tuptable->tupdesc, expected);
	old_context = MemoryContextSwitchTo(result_info->econtext->ecxt_per_query_memory);
	for (uint64 row = 0; row < SPI_processed; row++)
		tuplestore_puttuple(rows, SPI_tuptable->vals[row]);
	MemoryContextSwitchTo(old_context);
	SPI_finish();

	result_info->returnMode = SFRM_Materialize;
	result_info->setResult = rows;
	result_info->setDesc = expected;
	return (Datum) 0;
}

/*
 * run_as(role regrole, statement text) returns void: runs one statement of
 * sessionize's as role through sessionize_execute_as().  Giving a grant
 * again as the role that gave it keeps its grantor, so that the role can
 * still revoke it.
 */
Datum
run_as(PG_FUNCTION_ARGS)
{
	int			status;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role and statement must not be null")));
	SPI_connect();
	status = sessionize_execute_as(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), TEXTOID, (Datum) 0,
								   true);
	if (status < 0)
		elog(ERROR, "run_as: the statement failed: %s", SPI_result_code_string(status));
	SPI_finish();
	PG_RETURN_VOID();
}

static void
pipeline_lock_tag(LOCKTAG *tag, uint64 key, uint16 lock_class)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (key >> 32), (uint32) key, lock_class);
}

/* The lock tag of the batches of the pipeline of that name. */
static void
pipeline_name_lock_tag(LOCKTAG *tag, const char *name, Size length)
{
	pipeline_lock_tag(tag, hash_bytes_extended((const unsigned char *) name, length, 0),
					  PIPELINE_BATCH_LOCK_CLASS);
}

/* The lock tag of the batches of the pipeline named by argument 0. */
static void
pipeline_batch_lock_tag(LOCKTAG *tag, FunctionCallInfo fcinfo)
{
	text	   *name;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline name must not be null")));
	name = PG_GETARG_TEXT_PP(0);
	pipeline_name_lock_tag(tag, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
}

/*
 * Waits for, then holds until the end of the transaction, the batch lock of
 * the pipeline of that name: what sessionize_lock_pipeline_batch() takes,
 * for the worker.
 */
void
sessionize_lock_pipeline_batch_of(const char *name)
{
	LOCKTAG		tag;

	pipeline_name_lock_tag(&tag, name, strlen(name));
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * sessionize_lock_pipeline_batch(name text): waits for, then holds until the
 * end of the transaction, the lock that serializes the batches, alter and
 * drop of the pipeline of that name.
 */
Datum
lock_pipeline_batch(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	pipeline_batch_lock_tag(&tag, fcinfo);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	PG_RETURN_VOID();
}

/*
 * sessionize_try_lock_pipeline_batch_briefly(name text) returns boolean:
 * takes the batch lock of a pipeline if no one holds it, without waiting,
 * for the session, so that it can be let go before the transaction ends
 * (sessionize_unlock_pipeline_batch_briefly()).  While it is held, a batch
 * of the pipeline waits instead of finding its slot in use by someone who
 * only counts what waits in it.
 */
Datum
try_lock_pipeline_batch_briefly(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	pipeline_batch_lock_tag(&tag, fcinfo);
	PG_RETURN_BOOL(LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL);
}

/* sessionize_unlock_pipeline_batch_briefly(name text): lets that lock go. */
Datum
unlock_pipeline_batch_briefly(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	pipeline_batch_lock_tag(&tag, fcinfo);
	PG_RETURN_BOOL(LockRelease(&tag, ExclusiveLock, true));
}

/*
 * Takes, for the life of the session, the lock that makes a worker the only
 * one of its pipeline; false when another session holds it.
 */
bool
sessionize_lock_pipeline_worker(int64 pipeline_id)
{
	LOCKTAG		tag;

	pipeline_lock_tag(&tag, (uint64) pipeline_id, PIPELINE_WORKER_LOCK_CLASS);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Takes, for the life of the session, the lock that makes a scheduler the
 * only one of its database; false when another session holds it.
 */
bool
sessionize_lock_scheduler(void)
{
	LOCKTAG		tag;

	pipeline_lock_tag(&tag, 0, SCHEDULER_LOCK_CLASS);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Invalidations of the catalogs sessionize_check_owner() reads: relations
 * (triggers, rules, policies, grants and columns of the source come with
 * one), functions, types, domain constraints, casts, roles and memberships.
 */
static const int checked_caches[] = {
	PROCOID, TYPEOID, CONSTROID, CASTSOURCETARGET, RANGETYPE, AUTHOID, AUTHMEMMEMROLE, AUTHMEMROLEMEM
};

static uint64 catalog_generation = 1;
static HTAB *checked_pipelines = NULL;

typedef struct CheckedPipeline
{
	int64		id;				/* the hash key */
	Oid			owner;
	bool		allow_superuser;
	uint64		generation;		/* catalog_generation when the check passed */
} CheckedPipeline;

static void
relation_invalidated(Datum argument, Oid relation)
{
	catalog_generation++;
}

static void
catalog_invalidated(Datum argument, int cache, uint32 hash)
{
	catalog_generation++;
}

/*
 * sessionize_check_owner_cached(pipeline sessionize.pipelines): as
 * sessionize_check_owner(pipeline), skipped when it passed in this backend
 * for the same owner and nothing it reads has been invalidated since.  The
 * caller locks the source first, which also takes in the invalidations
 * that other sessions committed.
 */
Datum
check_owner_cached(PG_FUNCTION_ARGS)
{
	HeapTupleHeader pipeline;
	CheckedPipeline *checked;
	bool		isnull;
	int64		id;
	Oid			owner;
	bool		allow_superuser;
	uint64		generation = catalog_generation;
	Oid			argument_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Datum		argument;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline must not be null")));
	if (checked_pipelines == NULL)
	{
		HASHCTL		control;

		control.keysize = sizeof(int64);
		control.entrysize = sizeof(CheckedPipeline);
		checked_pipelines = hash_create("sessionize checked pipelines", 16, &control, HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(relation_invalidated, (Datum) 0);
		for (int i = 0; i < lengthof(checked_caches); i++)
			CacheRegisterSyscacheCallback(checked_caches[i], catalog_invalidated, (Datum) 0);
		generation = catalog_generation;
	}
	pipeline = PG_GETARG_HEAPTUPLEHEADER(0);
	id = DatumGetInt64(GetAttributeByName(pipeline, "id", &isnull));
	owner = DatumGetObjectId(GetAttributeByName(pipeline, "owner", &isnull));
	allow_superuser = DatumGetBool(GetAttributeByName(pipeline, "allow_superuser", &isnull));
	checked = hash_search(checked_pipelines, &id, HASH_FIND, NULL);
	if (checked != NULL && checked->owner == owner && checked->allow_superuser == allow_superuser &&
		checked->generation == generation)
		PG_RETURN_VOID();

	argument = PG_GETARG_DATUM(0);
	SPI_connect();
	if (SPI_execute_with_args("SELECT sessionize.sessionize_check_owner($1)", 1, &argument_type, &argument,
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not check the owner of a pipeline");
	SPI_finish();

	/* the generation from before the check: a change during it counts */
	checked = hash_search(checked_pipelines, &id, HASH_ENTER, NULL);
	checked->owner = owner;
	checked->allow_superuser = allow_superuser;
	checked->generation = generation;
	PG_RETURN_VOID();
}
