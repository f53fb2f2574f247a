/*-------------------------------------------------------------------------
 *
 * dedup.c
 *	  The dedup memory: has a fingerprint been seen in a namespace lately?
 *
 * Entries live in sessionize.seen_fingerprints, keyed on (namespace,
 * fingerprint), with an expiry (NULL: remembered forever).  A check claims
 * the fingerprint with one INSERT ... ON CONFLICT DO UPDATE that only takes
 * over an expired entry; a returned row means "first".  Concurrent callers
 * racing on one fingerprint serialize on its index entry, so exactly one of
 * them gets true.  Times are the statement's start time, so that every check
 * of one statement agrees on what has expired.
 *
 * The plans are prepared once per backend and reused; their text names every
 * object with its schema, so the caller's search_path plays no part.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(first_seen);
PG_FUNCTION_INFO_V1(first_seen_many);
PG_FUNCTION_INFO_V1(classify_duplicate);
PG_FUNCTION_INFO_V1(check_interval);
PG_FUNCTION_INFO_V1(check_namespace);
PG_FUNCTION_INFO_V1(check_user_namespace);

static SPIPlanPtr first_seen_plan = NULL;
static SPIPlanPtr first_seen_many_plan = NULL;
static SPIPlanPtr claim_event_id_plan = NULL;
static SPIPlanPtr seen_event_id_plan = NULL;

/* Prepares a plan once per backend; later calls reuse it. */
static SPIPlanPtr
prepare_once(SPIPlanPtr *plan, const char *query, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare(query, nargs, argtypes);

		if (prepared == NULL)
			elog(ERROR, "could not prepare dedup query: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}

/*
 * Checks the namespace argument of a dedup function.  Namespaces starting
 * with "pipeline:" hold the dedup memory of pipelines: only the pipelines
 * may use them (pipeline_ok), or anyone could make a pipeline drop its
 * events as duplicates by planting their fingerprints.
 */
static void
namespace_argument(FunctionCallInfo fcinfo, int argno, bool pipeline_ok)
{
	text	   *namespace;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("dedup namespace must not be null"),
				 errhint("Use a name per source of events, such as 'checkout-events'.")));
	namespace = PG_GETARG_TEXT_PP(argno);
	if (!pipeline_ok && VARSIZE_ANY_EXHDR(namespace) >= 9 &&
		strncmp(VARDATA_ANY(namespace), "pipeline:", 9) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("dedup namespace \"%s\" belongs to a pipeline", text_to_cstring(namespace)),
				 errdetail("Namespaces starting with \"pipeline:\" are the dedup memory of pipelines."),
				 errhint("Use another namespace.")));
}

/*
 * Checks the namespace and ttl arguments shared by the dedup functions that
 * users call.  Returns the ttl as a Datum with *ttl_null set when entries
 * never expire.
 */
static Datum
dedup_arguments(FunctionCallInfo fcinfo, int namespace_arg, int ttl_arg, bool *ttl_null)
{
	namespace_argument(fcinfo, namespace_arg, false);
	*ttl_null = PG_ARGISNULL(ttl_arg);
	if (*ttl_null)
		return (Datum) 0;
	sessionize_interval_usecs(PG_GETARG_INTERVAL_P(ttl_arg), "ttl");
	return PG_GETARG_DATUM(ttl_arg);
}

/*
 * first_seen(namespace text, fingerprint uuid, ttl interval) -> boolean
 *
 * True exactly once per fingerprint and namespace within the ttl (NULL ttl:
 * forever); NULL for a NULL fingerprint.
 */
Datum
first_seen(PG_FUNCTION_ARGS)
{
	Oid			argtypes[3] = {TEXTOID, UUIDOID, INTERVALOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		ttl_null;
	bool		first;

	values[2] = dedup_arguments(fcinfo, 0, 2, &ttl_null);
	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	if (ttl_null)
		nulls[2] = 'n';

	SPI_connect();
	prepare_once(&first_seen_plan,
				 "INSERT INTO sessionize.seen_fingerprints AS seen"
				 " (namespace, fingerprint, first_seen_at, expires_at)"
				 " VALUES ($1, $2, pg_catalog.statement_timestamp(),"
				 "         pg_catalog.statement_timestamp() OPERATOR(pg_catalog.+) $3)"
				 " ON CONFLICT (namespace, fingerprint) DO UPDATE"
				 " SET first_seen_at = EXCLUDED.first_seen_at, expires_at = EXCLUDED.expires_at"
				 " WHERE seen.expires_at OPERATOR(pg_catalog.<=) EXCLUDED.first_seen_at"
				 " RETURNING true",
				 3, argtypes);
	if (SPI_execute_plan(first_seen_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record fingerprint: %s", SPI_result_code_string(SPI_result));
	first = SPI_processed > 0;
	SPI_finish();
	PG_RETURN_BOOL(first);
}

static int
uuid_order(const void *a, const void *b)
{
	return memcmp(DatumGetUUIDP(*(const Datum *) a), DatumGetUUIDP(*(const Datum *) b), UUID_LEN);
}

/* A fingerprint of a batch, and where it first occurs in it. */
typedef struct FingerprintEntry
{
	pg_uuid_t	fingerprint;	/* the hash key */
	int			first;			/* position of its first copy */
} FingerprintEntry;

/*
 * The dedup of a batch, for first_seen_many() and for the pipelines: sets
 * is_new[i] for each of the count fingerprints, true iff fingerprint i is
 * new in namespace and is the first copy in the batch.  is_null[i] marks a
 * null fingerprint, which is never new.  One statement claims every distinct
 * fingerprint of the batch; the caller is connected to SPI.
 */
void
sessionize_first_seen_many(Datum namespace, const pg_uuid_t *fingerprints, const bool *is_null,
						   int count, Interval *ttl, bool *is_new)
{
	HASHCTL		hash_control;
	HTAB	   *firsts;
	Datum	   *distinct;
	int			distinct_count = 0;
	Oid			argtypes[3] = {TEXTOID, UUIDARRAYOID, INTERVALOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ttl == NULL ? 'n' : ' '};

	memset(is_new, 0, sizeof(bool) * count);
	if (count == 0)
		return;
	hash_control.keysize = sizeof(pg_uuid_t);
	hash_control.entrysize = sizeof(FingerprintEntry);
	hash_control.hcxt = CurrentMemoryContext;
	firsts = hash_create("sessionize batch fingerprints", count, &hash_control,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	distinct = palloc(sizeof(Datum) * count);
	for (int i = 0; i < count; i++)
	{
		FingerprintEntry *entry;
		bool		found;

		if (is_null[i])
			continue;
		entry = hash_search(firsts, &fingerprints[i], HASH_ENTER, &found);
		if (!found)
		{
			entry->first = i;
			distinct[distinct_count++] = UUIDPGetDatum(&fingerprints[i]);
		}
	}
	if (distinct_count == 0)
		return;
	/* in index order, the claims of a batch visit each index page once */
	qsort(distinct, distinct_count, sizeof(Datum), uuid_order);

	values[0] = namespace;
	values[1] = PointerGetDatum(construct_array(distinct, distinct_count, UUIDOID, UUID_LEN, false,
												TYPALIGN_CHAR));
	values[2] = PointerGetDatum(ttl);
	prepare_once(&first_seen_many_plan,
				 "INSERT INTO sessionize.seen_fingerprints AS seen"
				 " (namespace, fingerprint, first_seen_at, expires_at)"
				 " SELECT $1, f.fingerprint, pg_catalog.statement_timestamp(),"
				 "        pg_catalog.statement_timestamp() OPERATOR(pg_catalog.+) $3"
				 " FROM pg_catalog.unnest($2) AS f(fingerprint)"
				 " ON CONFLICT (namespace, fingerprint) DO UPDATE"
				 " SET first_seen_at = EXCLUDED.first_seen_at, expires_at = EXCLUDED.expires_at"
				 " WHERE seen.expires_at OPERATOR(pg_catalog.<=) EXCLUDED.first_seen_at"
				 " RETURNING seen.fingerprint",
				 3, argtypes);
	if (SPI_execute_plan(first_seen_many_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record fingerprints: %s", SPI_result_code_string(SPI_result));
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		Datum		claimed = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1, &isnull);
		FingerprintEntry *entry = hash_search(firsts, DatumGetPointer(claimed), HASH_FIND, NULL);

		if (entry == NULL)
			elog(ERROR, "the dedup memory returned a fingerprint it was not given");
		is_new[entry->first] = true;
	}
	SPI_freetuptable(SPI_tuptable);
	hash_destroy(firsts);
}

/*
 * sessionize_first_seen_many(namespace text, fingerprints uuid[], ttl interval)
 *		-> boolean[]
 *
 * Element i says whether fingerprint i is new; of repeated fingerprints in
 * the array only the first is; a null fingerprint gives null, a null array
 * an empty one.  The namespace
 * may be a pipeline's: first_seen_many(), which users call, checks it first.
 */
Datum
first_seen_many(PG_FUNCTION_ARGS)
{
	ArrayType  *array;
	Datum	   *elements;
	bool	   *element_nulls;
	int			count;
	pg_uuid_t  *fingerprints;
	bool	   *is_new;
	Datum	   *verdicts;
	Interval   *ttl = NULL;

	namespace_argument(fcinfo, 0, true);
	if (!PG_ARGISNULL(2))
	{
		ttl = PG_GETARG_INTERVAL_P(2);
		sessionize_interval_usecs(ttl, "ttl");
	}
	if (PG_ARGISNULL(1))
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(BOOLOID));
	array = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("fingerprints must be a one-dimensional array")));
	deconstruct_array(array, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elements, &element_nulls, &count);
	fingerprints = palloc(sizeof(pg_uuid_t) * Max(count, 1));
	is_new = palloc(sizeof(bool) * Max(count, 1));
	verdicts = palloc(sizeof(Datum) * Max(count, 1));
	for (int i = 0; i < count; i++)
		if (!element_nulls[i])
			fingerprints[i] = *DatumGetUUIDP(elements[i]);

	SPI_connect();
	sessionize_first_seen_many(PG_GETARG_DATUM(0), fingerprints, element_nulls, count, ttl, is_new);
	SPI_finish();

	for (int i = 0; i < count; i++)
		verdicts[i] = BoolGetDatum(is_new[i]);
	PG_RETURN_ARRAYTYPE_P(construct_md_array(verdicts, element_nulls, count == 0 ? 0 : 1, &count,
											 (int[]) {1}, BOOLOID, 1, true, TYPALIGN_CHAR));
}

/*
 * classify_duplicate(namespace text, event_id text, fingerprint uuid, ttl)
 *		-> 'new' | 'natural_duplicate' | 'synthetic_duplicate'
 *
 * Remembers the first fingerprint seen with each event id.  The same id with
 * the same content again is a natural duplicate (a re-delivery: drop it); the
 * same id with other content is a synthetic duplicate (two events that share
 * an id: keep both and flag it).
 */
Datum
classify_duplicate(PG_FUNCTION_ARGS)
{
	Oid			argtypes[4] = {TEXTOID, TEXTOID, UUIDOID, INTERVALOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		ttl_null;
	const char *verdict;

	values[3] = dedup_arguments(fcinfo, 0, 3, &ttl_null);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event id must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("fingerprint must not be null")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	if (ttl_null)
		nulls[3] = 'n';

	SPI_connect();
	prepare_once(&claim_event_id_plan,
				 "INSERT INTO sessionize.seen_event_ids AS seen"
				 " (namespace, event_id, fingerprint, first_seen_at, expires_at)"
				 " VALUES ($1, $2, $3, pg_catalog.statement_timestamp(),"
				 "         pg_catalog.statement_timestamp() OPERATOR(pg_catalog.+) $4)"
				 " ON CONFLICT (namespace, event_id) DO UPDATE"
				 " SET fingerprint = EXCLUDED.fingerprint,"
				 "     first_seen_at = EXCLUDED.first_seen_at, expires_at = EXCLUDED.expires_at"
				 " WHERE seen.expires_at OPERATOR(pg_catalog.<=) EXCLUDED.first_seen_at"
				 " RETURNING true",
				 4, argtypes);
	if (SPI_execute_plan(claim_event_id_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record event id: %s", SPI_result_code_string(SPI_result));
	if (SPI_processed > 0)
		verdict = "new";
	else
	{
		bool		same_content;
		bool		isnull;

		prepare_once(&seen_event_id_plan,
					 "SELECT fingerprint OPERATOR(pg_catalog.=) $3"
					 " FROM sessionize.seen_event_ids"
					 " WHERE namespace OPERATOR(pg_catalog.=) $1"
					 "   AND event_id OPERATOR(pg_catalog.=) $2",
					 3, argtypes);
		if (SPI_execute_plan(seen_event_id_plan, values, nulls, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "event id vanished from the dedup memory");
		same_content = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
		verdict = same_content ? "natural_duplicate" : "synthetic_duplicate";
	}
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(verdict));
}

/*
 * sessionize_check_interval(value interval, what text) -> value, or an error
 * naming "what" if it is not a positive, fixed-length interval
 */
Datum
check_interval(PG_FUNCTION_ARGS)
{
	sessionize_interval_usecs(PG_GETARG_INTERVAL_P(0), text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/*
 * sessionize_check_namespace(namespace text) -> namespace, or an error if
 * NULL; the dedup memory of pipelines calls it
 */
Datum
check_namespace(PG_FUNCTION_ARGS)
{
	namespace_argument(fcinfo, 0, true);
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/*
 * sessionize_check_user_namespace(namespace text) -> namespace, or an error
 * if NULL or a pipeline's
 */
Datum
check_user_namespace(PG_FUNCTION_ARGS)
{
	namespace_argument(fcinfo, 0, false);
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}
