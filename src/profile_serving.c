/*-------------------------------------------------------------------------
 *
 * profile_serving.c
 *	  profile(): a key's profile over a range of days, with decay and a prior
 *	  toward the population, read in well under a millisecond.
 *
 * A reader needs SELECT on the profile's view <pipeline>_profile_<name>
 * (its pipeline's owner has it, grant_reader() gives it); the rows are then
 * read straight from the profile's tables by their primary keys, without
 * planning a query: the key's days, the population's days and, from a
 * backend-local cache, the dictionary of values.  What a backend caches of
 * a profile (its definition, its tables, its dictionary) is dropped when one
 * of its relations is invalidated: a profile is only ever changed by
 * dropping it and adding it again.  Dictionary ids only grow, so ids the
 * cache lacks are read again by range.
 *
 * For each categorical dimension, value v's share is
 *	 (count_v + prior_weight * population_share_v) / (total + prior_weight)
 * where a day's counts weigh 0.5 ^ ((to_day - day) / half_life) when a half
 * life is given, and population_share_v is v's share of all keys' counts
 * over the same days, unweighted.  Numeric dimensions merge their days'
 * moments, weighted alike, as float8_combine() does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(profile_json);

#define SERVED_KEY_LENGTH (2 * NAMEDATALEN + 2)

#if PG_VERSION_NUM < 140000
/* before 14, keys are strings unless said otherwise */
#define HASH_STRINGS 0
#endif

typedef struct DictionaryEntry
{
	int32		id;				/* hash key */
	int			dimension;		/* place in the profile's categorical list */
	char	   *value;
} DictionaryEntry;

/* What a backend keeps of a profile it serves. */
typedef struct ServedProfile
{
	char		key[SERVED_KEY_LENGTH]; /* pipeline, US, name */
	Oid			view;
	Oid			days;
	Oid			days_index;
	Oid			population;
	Oid			population_index;
	Oid			dictionary_table;
	Oid			dictionary_index;
	Oid			key_type;
	int			categorical_count;
	char	  **categorical;
	int			numeric_count;
	char	  **numeric;
	HTAB	   *dictionary;
	int32		loaded_up_to;	/* greatest id read */
} ServedProfile;

static HTAB *served_profiles;
static MemoryContext serving_context;
static bool serving_stale;

/* Any relation of a served profile changed: forget all of them. */
static void
serving_invalidate(Datum argument, Oid relation)
{
	HASH_SEQ_STATUS status;
	ServedProfile *profile;

	if (served_profiles == NULL || serving_stale)
		return;
	if (!OidIsValid(relation))
	{
		serving_stale = true;
		return;
	}
	hash_seq_init(&status, served_profiles);
	while ((profile = hash_seq_search(&status)) != NULL)
		if (relation == profile->view || relation == profile->days || relation == profile->population ||
			relation == profile->dictionary_table)
		{
			serving_stale = true;
			hash_seq_term(&status);
			return;
		}
}

static Snapshot
serving_snapshot(void)
{
	return ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
}

static Oid
profile_relation(const char *pipeline, const char *name, const char *suffix)
{
	return get_relname_relid(psprintf("%s_profile_%s%s", pipeline, name, suffix),
							 get_namespace_oid("sessionize", false));
}

static Oid
primary_key_of(Oid relation)
{
	Relation	opened = table_open(relation, AccessShareLock);
	Oid			index;

	list_free(RelationGetIndexList(opened));
	index = opened->rd_pkindex;
	table_close(opened, AccessShareLock);
	if (!OidIsValid(index))
		elog(ERROR, "a table of a profile has lost its primary key");
	return index;
}

static char **
text_array_strings(Datum array, int *count)
{
	Datum	   *items;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT, &items, NULL, count);
	{
		char	  **strings = palloc(sizeof(char *) * Max(*count, 1));

		for (int i = 0; i < *count; i++)
			strings[i] = TextDatumGetCString(items[i]);
		return strings;
	}
}

/* The current role reads a profile through its view, and needs SELECT on it. */
static void
check_may_read(Oid view, const char *pipeline, const char *name)
{
	if (pg_class_aclcheck(view, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for profile \"%s\" of pipeline \"%s\"", name, pipeline),
				 errhint("The pipeline's owner lets a role read its profiles with grant_reader().")));
}

/*
 * Reads a profile's definition from sessionize.pipeline_profiles (pipeline,
 * name, categorical, numeric, ...) and finds its relations.  Raises the
 * errors of a profile or pipeline that does not exist.
 */
static void
load_profile(ServedProfile *served, const char *pipeline, const char *name)
{
	Oid			namespace = get_namespace_oid("sessionize", false);
	Relation	catalog = table_open(get_relname_relid("pipeline_profiles", namespace), AccessShareLock);
	TableScanDesc scan = table_beginscan(catalog, serving_snapshot(), 0, NULL);
	HeapTuple	row;
	bool		found = false;

	while ((row = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Datum		values[4];
		bool		nulls[4];

		for (int a = 0; a < 4; a++)
			values[a] = heap_getattr(row, a + 1, RelationGetDescr(catalog), &nulls[a]);
		if (nulls[0] || nulls[1] || strcmp(TextDatumGetCString(values[0]), pipeline) != 0 ||
			strcmp(TextDatumGetCString(values[1]), name) != 0)
			continue;
		served->categorical = text_array_strings(values[2], &served->categorical_count);
		served->numeric = text_array_strings(values[3], &served->numeric_count);
		found = true;
		break;
	}
	table_endscan(scan);
	table_close(catalog, AccessShareLock);
	if (!found)
	{
		if (!OidIsValid(get_relname_relid(psprintf("%s_stored_sessions", pipeline), namespace)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("pipeline \"%s\" does not exist", pipeline)));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("profile \"%s\" of pipeline \"%s\" does not exist", name, pipeline),
				 errhint("add_profile() makes one.")));
	}
	served->view = profile_relation(pipeline, name, "");
	served->days = profile_relation(pipeline, name, "_days");
	served->population = profile_relation(pipeline, name, "_population");
	served->dictionary_table = profile_relation(pipeline, name, "_values");
	if (!OidIsValid(served->view) || !OidIsValid(served->days) || !OidIsValid(served->population) ||
		!OidIsValid(served->dictionary_table))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the tables of profile \"%s\" of pipeline \"%s\" are missing", name, pipeline),
				 errhint("Drop the profile and add it again.")));
	/* before any of its tables is opened: a role that may not read them must not lock them */
	check_may_read(served->view, pipeline, name);
	served->days_index = primary_key_of(served->days);
	served->population_index = primary_key_of(served->population);
	served->dictionary_index = primary_key_of(served->dictionary_table);
	served->key_type = get_atttype(served->days, 1);
	served->dictionary = hash_create("sessionize profile dictionary", 64,
									 &(HASHCTL) {.keysize = sizeof(int32),.entrysize = sizeof(DictionaryEntry),
									 .hcxt = serving_context}, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	served->loaded_up_to = 0;
}

/* The profile of pipeline and name, from the cache or read anew. */
static ServedProfile *
served_profile(const char *pipeline, const char *name)
{
	char		key[SERVED_KEY_LENGTH] = {0};
	ServedProfile *served;
	bool		found;

	if (strlen(pipeline) >= NAMEDATALEN || strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("profile \"%s\" of pipeline \"%s\" does not exist", name, pipeline)));
	if (serving_context == NULL)
	{
		serving_context = AllocSetContextCreate(CacheMemoryContext, "sessionize profiles", ALLOCSET_DEFAULT_SIZES);
		CacheRegisterRelcacheCallback(serving_invalidate, (Datum) 0);
	}
	if (serving_stale && served_profiles != NULL)
	{
		MemoryContextReset(serving_context);
		served_profiles = NULL;
	}
	serving_stale = false;
	if (served_profiles == NULL)
		served_profiles = hash_create("sessionize served profiles", 16,
									  &(HASHCTL) {.keysize = SERVED_KEY_LENGTH,.entrysize = sizeof(ServedProfile),
									  .hcxt = serving_context}, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	snprintf(key, sizeof(key), "%s\x1f%s", pipeline, name);
	served = hash_search(served_profiles, key, HASH_FIND, NULL);
	if (served != NULL)
		return served;
	{
		MemoryContext old = MemoryContextSwitchTo(serving_context);
		ServedProfile loaded = {0};

		load_profile(&loaded, pipeline, name);
		MemoryContextSwitchTo(old);
		memcpy(loaded.key, key, SERVED_KEY_LENGTH);
		served = hash_search(served_profiles, key, HASH_ENTER, &found);
		*served = loaded;
	}
	return served;
}

/* The btree procedure of an index column for a strategy. */
static RegProcedure
index_procedure(Relation index, int column, Oid type, StrategyNumber strategy)
{
	Oid			operator = get_opfamily_member(index->rd_opfamily[column], index->rd_opcintype[column], type,
											   strategy);

	if (!OidIsValid(operator))
		elog(ERROR, "no operator of strategy %d for type %s in an index of a profile", strategy,
			 format_type_be(type));
	return get_opcode(operator);
}

/* Reads the dictionary's ids above those already read. */
static void
load_dictionary(ServedProfile *served)
{
	Relation	table = table_open(served->dictionary_table, AccessShareLock);
	Relation	index = index_open(served->dictionary_index, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(table, NULL);
	ScanKeyData scan_key;
	IndexScanDesc scan;
	MemoryContext old = MemoryContextSwitchTo(serving_context);

	ScanKeyInit(&scan_key, 1, BTGreaterStrategyNumber, F_INT4GT, Int32GetDatum(served->loaded_up_to));
	scan = index_beginscan(table, index, serving_snapshot(), 1, 0);
	index_rescan(scan, &scan_key, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int32		id = DatumGetInt32(slot_getattr(slot, 1, &isnull));
		char	   *dimension = TextDatumGetCString(slot_getattr(slot, 2, &isnull));
		DictionaryEntry *entry = hash_search(served->dictionary, &id, HASH_ENTER, NULL);

		entry->dimension = -1;
		for (int d = 0; d < served->categorical_count; d++)
			if (strcmp(dimension, served->categorical[d]) == 0)
				entry->dimension = d;
		entry->value = TextDatumGetCString(slot_getattr(slot, 3, &isnull));
		served->loaded_up_to = Max(served->loaded_up_to, id);
	}
	MemoryContextSwitchTo(old);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(table, AccessShareLock);
}

static DictionaryEntry *
dictionary_entry(ServedProfile *served, int32 id)
{
	DictionaryEntry *entry = hash_search(served->dictionary, &id, HASH_FIND, NULL);

	if (entry == NULL && id > served->loaded_up_to)
	{
		load_dictionary(served);
		entry = hash_search(served->dictionary, &id, HASH_FIND, NULL);
	}
	if (entry == NULL)
		elog(ERROR, "value %d of a profile is missing from its dictionary", id);
	return entry;
}

/* A weighted count of a value, and the value once looked up. */
typedef struct ValueCount
{
	int32		id;
	double		count;
	DictionaryEntry *entry;
} ValueCount;

/*
 * Weighted counts by value id.  Ids below dense_size are summed in place
 * (the dictionary's ids are dense, from 1); others are listed and sorted.
 */
#define DENSE_IDS 4096

typedef struct ValueCounts
{
	double	   *dense;
	int32		dense_size;
	ValueCount *items;
	int			count;
	int			capacity;
} ValueCounts;

static void
counts_init(ValueCounts *counts, const ServedProfile *served)
{
	counts->dense_size = served->loaded_up_to < DENSE_IDS ? served->loaded_up_to + 1 : 0;
	counts->dense = counts->dense_size > 0 ? palloc0(sizeof(double) * counts->dense_size) : NULL;
}

static void
counts_append(ValueCounts *counts, int32 id, double count)
{
	if (counts->count == counts->capacity)
	{
		counts->capacity = Max(64, 2 * counts->capacity);
		counts->items = counts->items == NULL ? palloc(sizeof(ValueCount) * counts->capacity)
			: repalloc(counts->items, sizeof(ValueCount) * counts->capacity);
	}
	counts->items[counts->count].id = id;
	counts->items[counts->count].count = count;
	counts->items[counts->count].entry = NULL;
	counts->count++;
}

static void
counts_add_pairs(ValueCounts *counts, ArrayType *pairs, double weight)
{
	int			items = ArrayGetNItems(ARR_NDIM(pairs), ARR_DIMS(pairs));
	bool		wide = ARR_ELEMTYPE(pairs) == INT8OID;

	if ((ARR_ELEMTYPE(pairs) != INT4OID && !wide) || ARR_HASNULL(pairs) || items % 2 != 0)
		elog(ERROR, "the counts of a profile are not (id, count) pairs");
	for (int i = 0; i < items; i += 2)
	{
		int64		id = wide ? ((int64 *) ARR_DATA_PTR(pairs))[i] : ((int32 *) ARR_DATA_PTR(pairs))[i];
		double		count = weight * (wide ? (double) ((int64 *) ARR_DATA_PTR(pairs))[i + 1]
									  : (double) ((int32 *) ARR_DATA_PTR(pairs))[i + 1]);

		if (id < 1 || id > PG_INT32_MAX)
			elog(ERROR, "the counts of a profile hold an id out of range");
		if (id < counts->dense_size)
			counts->dense[id] += count;
		else
			counts_append(counts, (int32) id, count);
	}
}

static int
value_count_order(const void *a, const void *b)
{
	const ValueCount *x = a;
	const ValueCount *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Leaves one item per id, in id order, each with its dictionary entry: the
 * dense ids first, then those listed, which are all greater.
 */
static void
counts_combine(ValueCounts *counts, ServedProfile *served)
{
	int			listed = counts->count;
	int			kept = 0;
	ValueCount *sparse = counts->items;

	if (listed > 0)
	{
		qsort(sparse, listed, sizeof(ValueCount), value_count_order);
		for (int i = 1; i < listed; i++)
		{
			if (sparse[i].id == sparse[kept].id)
				sparse[kept].count += sparse[i].count;
			else
				sparse[++kept] = sparse[i];
		}
		listed = kept + 1;
	}
	counts->items = NULL;
	counts->count = 0;
	counts->capacity = 0;
	for (int32 id = 1; id < counts->dense_size; id++)
		if (counts->dense[id] != 0)
			counts_append(counts, id, counts->dense[id]);
	for (int i = 0; i < listed; i++)
		counts_append(counts, sparse[i].id, sparse[i].count);
	for (int i = 0; i < counts->count; i++)
		counts->items[i].entry = dictionary_entry(served, counts->items[i].id);
}

/*
 * Scans a profile table's primary key: with key, (key, day) for the key's
 * days, else (day) for the population's.  Calls add with each row's counts
 * and moments (NULL when the table has none) and day.
 */
typedef void (*RowVisitor) (void *state, DateADT day, ArrayType *counts, ArrayType *moments);

static void
scan_days(Oid table_oid, Oid index_oid, bool keyed, Datum key, DateADT from_day, DateADT to_day,
		  RowVisitor visit, void *state)
{
	Relation	table = table_open(table_oid, AccessShareLock);
	Relation	index = index_open(index_oid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(table, NULL);
	ScanKeyData keys[3];
	int			day_column = keyed ? 1 : 0;
	int			count = 0;
	IndexScanDesc scan;

	if (keyed)
		ScanKeyEntryInitialize(&keys[count++], 0, 1, BTEqualStrategyNumber, InvalidOid,
							   index->rd_indcollation[0],
							   index_procedure(index, 0, index->rd_opcintype[0], BTEqualStrategyNumber), key);
	ScanKeyEntryInitialize(&keys[count++], 0, day_column + 1, BTGreaterEqualStrategyNumber, InvalidOid, InvalidOid,
						   index_procedure(index, day_column, DATEOID, BTGreaterEqualStrategyNumber),
						   DateADTGetDatum(from_day));
	ScanKeyEntryInitialize(&keys[count++], 0, day_column + 1, BTLessEqualStrategyNumber, InvalidOid, InvalidOid,
						   index_procedure(index, day_column, DATEOID, BTLessEqualStrategyNumber),
						   DateADTGetDatum(to_day));
	scan = index_beginscan(table, index, serving_snapshot(), count, 0);
	index_rescan(scan, keys, count, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		DateADT		day = DatumGetDateADT(slot_getattr(slot, day_column + 1, &isnull));
		Datum		counts = slot_getattr(slot, day_column + 2, &isnull);
		Datum		moments = (Datum) 0;
		bool		moments_null = true;

		if (isnull)
			continue;
		if (keyed)
			moments = slot_getattr(slot, 4, &moments_null);
		visit(state, day, DatumGetArrayTypeP(counts), moments_null ? NULL : DatumGetArrayTypeP(moments));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(table, AccessShareLock);
}

/* What profile() sums over the key's days. */
typedef struct KeySums
{
	DateADT		to_day;
	double		half_life_days; /* 0: no decay */
	int			numeric_count;
	ValueCounts counts;
	double	   *moments;
} KeySums;

static void
visit_key_day(void *argument, DateADT day, ArrayType *counts, ArrayType *moments)
{
	KeySums    *sums = argument;
	double		weight = sums->half_life_days > 0 ? pow(0.5, (sums->to_day - day) / sums->half_life_days) : 1.0;

	counts_add_pairs(&sums->counts, counts, weight);
	if (moments != NULL && sums->numeric_count > 0)
	{
		int			items = ArrayGetNItems(ARR_NDIM(moments), ARR_DIMS(moments));
		double	   *values = (double *) ARR_DATA_PTR(moments);

		if (ARR_ELEMTYPE(moments) != FLOAT8OID || ARR_HASNULL(moments) ||
			items != PROFILE_MOMENTS * sums->numeric_count)
			elog(ERROR, "the moments of a profile do not match its numeric dimensions");
		for (int d = 0; d < sums->numeric_count; d++)
		{
			double		weighted[PROFILE_MOMENTS];

			memcpy(weighted, &values[PROFILE_MOMENTS * d], sizeof(weighted));
			weighted[0] *= weight;
			weighted[1] *= weight;
			weighted[2] *= weight;
			profile_moments_combine(&sums->moments[PROFILE_MOMENTS * d], weighted);
		}
	}
}

static void
visit_population_day(void *argument, DateADT day, ArrayType *counts, ArrayType *moments)
{
	counts_add_pairs((ValueCounts *) argument, counts, 1.0);
}

static void
push_key(JsonbParseState **state, const char *key)
{
	JsonbValue	value = {.type = jbvString};

	value.val.string.val = (char *) key;
	value.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &value);
}

static void
push_number(JsonbParseState **state, double number, bool isnull)
{
	JsonbValue	value;

	/* jsonb has no Infinity nor NaN: a number that is not finite is null */
	if (isnull || !isfinite(number))
		value.type = jbvNull;
	else
	{
		value.type = jbvNumeric;
		value.val.numeric = DatumGetNumeric(DirectFunctionCall1(float8_numeric, Float8GetDatum(number)));
	}
	pushJsonbValue(state, WJB_VALUE, &value);
}

/* The key given to profile(), as a value of the profile's key type. */
static Datum
profile_key(FunctionCallInfo fcinfo, Oid key_type)
{
	Oid			given = get_fn_expr_argtype(fcinfo->flinfo, 2);
	Oid			output;
	bool		varlena;
	Oid			input;
	Oid			parameter;

	if (given == key_type)
		return PG_GETARG_DATUM(2);
	if (!OidIsValid(given))
		elog(ERROR, "could not determine the type of the key");
	/* another type: through its text, as a literal of the key type would be read */
	getTypeOutputInfo(given, &output, &varlena);
	getTypeInputInfo(key_type, &input, &parameter);
	return OidInputFunctionCall(input, OidOutputFunctionCall(output, PG_GETARG_DATUM(2)), parameter, -1);
}

/*
 * profile(pipeline text, name text, key anyelement, from_day date,
 *		to_day date, half_life interval, prior_weight float8) -> jsonb
 */
Datum
profile_json(PG_FUNCTION_ARGS)
{
	const char *pipeline;
	const char *name;
	ServedProfile *served;
	DateADT		from_day;
	DateADT		to_day;
	double		prior_weight;
	KeySums		sums = {0};
	ValueCounts population = {0};
	double	   *totals;
	double	   *population_totals;
	JsonbParseState *state = NULL;
	int			p = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4) ||
		PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline, name, key, from_day, to_day and prior_weight must not be null")));
	pipeline = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	from_day = PG_GETARG_DATEADT(3);
	to_day = PG_GETARG_DATEADT(4);
	prior_weight = PG_GETARG_FLOAT8(6);
	if (DATE_NOT_FINITE(from_day) || DATE_NOT_FINITE(to_day) || from_day > to_day)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_day and to_day must be finite, from_day not after to_day")));
	if (!(prior_weight >= 0) || isinf(prior_weight))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prior_weight must be a finite number, 0 or more")));
	if (!PG_ARGISNULL(5))
		sums.half_life_days = (double) sessionize_interval_usecs(PG_GETARG_INTERVAL_P(5), "half_life") /
			USECS_PER_DAY;

	served = served_profile(pipeline, name);
	check_may_read(served->view, pipeline, name);

	sums.to_day = to_day;
	sums.numeric_count = served->numeric_count;
	counts_init(&sums.counts, served);
	counts_init(&population, served);
	sums.moments = palloc0(sizeof(double) * PROFILE_MOMENTS * Max(served->numeric_count, 1));
	scan_days(served->days, served->days_index, true, profile_key(fcinfo, served->key_type), from_day, to_day,
			  visit_key_day, &sums);
	counts_combine(&sums.counts, served);
	if (prior_weight > 0)
	{
		scan_days(served->population, served->population_index, false, (Datum) 0, from_day, to_day,
				  visit_population_day, &population);
		counts_combine(&population, served);
	}

	/* totals per dimension, of the key and of the population */
	totals = palloc0(sizeof(double) * Max(served->categorical_count, 1));
	population_totals = palloc0(sizeof(double) * Max(served->categorical_count, 1));
	for (int i = 0; i < sums.counts.count; i++)
		if (sums.counts.items[i].entry->dimension >= 0)
			totals[sums.counts.items[i].entry->dimension] += sums.counts.items[i].count;
	for (int i = 0; i < population.count; i++)
		if (population.items[i].entry->dimension >= 0)
			population_totals[population.items[i].entry->dimension] += population.items[i].count;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	push_key(&state, "categorical");
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int d = 0; d < served->categorical_count; d++)
	{
		int			k = 0;

		push_key(&state, served->categorical[d]);
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		p = 0;
		/* the key's values and, with a prior, the population's: both by id */
		while (k < sums.counts.count || p < population.count)
		{
			int32		key_id = k < sums.counts.count ? sums.counts.items[k].id : PG_INT32_MAX;
			int32		population_id = p < population.count ? population.items[p].id : PG_INT32_MAX;
			int32		id = Min(key_id, population_id);
			DictionaryEntry *entry = key_id == id ? sums.counts.items[k].entry : population.items[p].entry;
			double		count = key_id == id ? sums.counts.items[k++].count : 0;
			double		population_count = population_id == id ? population.items[p++].count : 0;
			double		share;

			if (entry->dimension != d || (count <= 0 && population_count <= 0))
				continue;
			share = population_totals[d] > 0 ? population_count / population_totals[d] : 0;
			if (count <= 0 && share <= 0)
				continue;
			push_key(&state, entry->value);
			push_number(&state, (count + prior_weight * share) / (totals[d] + prior_weight), false);
		}
		pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	push_key(&state, "numeric");
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int d = 0; d < served->numeric_count; d++)
	{
		double	   *moments = &sums.moments[PROFILE_MOMENTS * d];
		bool		none = moments[0] <= 0;

		push_key(&state, served->numeric[d]);
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		push_key(&state, "n");
		push_number(&state, none ? 0 : moments[0], false);
		push_key(&state, "mean");
		push_number(&state, none ? 0 : moments[1] / moments[0], none);
		push_key(&state, "stddev");
		/* a NaN variance stays NaN (null), where Max() would make it 0 */
		push_number(&state, none ? 0 : sqrt((moments[2] < 0 ? 0 : moments[2]) / moments[0]), none);
		push_key(&state, "min");
		push_number(&state, moments[3], none);
		push_key(&state, "max");
		push_number(&state, moments[4], none);
		pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
}
