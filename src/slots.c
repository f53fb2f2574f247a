/*-------------------------------------------------------------------------
 *
 * slots.c
 *	  Idempotent multi-slot upserts.
 *
 * A slot table row keeps each contributing message (slot key, value) in its
 * own slot, the slots ordered by slot key: the first N in the row's wide
 * columns, the rest in the overflow table.  The row is thus a function of the
 * set of distinct messages: a re-delivered message changes nothing, arrival
 * order changes nothing, and the same slot key with another value is a
 * conflict, never summed.  "computed" combines every slot's value.
 *
 * Locking: a message first makes sure its key's row exists, then locks it
 * (SELECT ... FOR UPDATE) before reading and rewriting the slots, so
 * concurrent messages for one key apply one after the other.
 *
 * All SQL is generated once per table and argument types, with every name
 * quoted, and kept as SPI plans for the backend's lifetime.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "parser/parse_oper.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "sessionize.h"

#define MAX_KEY_COLUMNS 16

typedef enum SlotCombine
{
	SLOT_COMBINE_SUM,
	SLOT_COMBINE_MIN,
	SLOT_COMBINE_MAX,
	SLOT_COMBINE_LAST
} SlotCombine;

/* What a message did. */
typedef enum SlotOutcome
{
	SLOT_ADDED,
	SLOT_UNCHANGED,
	SLOT_CONFLICT
} SlotOutcome;

/* One slot: a slot key and its value. */
typedef struct Slot
{
	Datum		slot_key;
	Datum		value;
	bool		value_null;
} Slot;

/* A slot table, with plans for one combination of argument types. */
typedef struct SlotTable
{
	Oid			table_id;
	Oid			key_types[MAX_KEY_COLUMNS]; /* types of the key arguments */
	Oid			slot_key_argument_type;
	Oid			value_argument_type;
	int			key_count;
	int			slots;
	SlotCombine combine;
	bool		record_conflicts;
	Oid			slot_key_type;	/* column types */
	Oid			value_type;
	int16		slot_key_length;
	bool		slot_key_by_value;
	int16		value_length;
	bool		value_by_value;
	FmgrInfo	slot_key_compare;
	FmgrInfo	value_equal;
	FmgrInfo	value_add;
	FmgrInfo	value_compare;
	SPIPlanPtr	ensure_row;		/* INSERT ... ON CONFLICT DO NOTHING */
	SPIPlanPtr	read_row;		/* SELECT the slots FOR UPDATE */
	bool		needs_cast;		/* argument types differ from the columns' */
	SPIPlanPtr	cast_message;	/* SELECT CAST($1 AS ...), CAST($2 AS ...) */
	SPIPlanPtr	read_overflow;
	SPIPlanPtr	write_row;
	SPIPlanPtr	add_overflow;
	SPIPlanPtr	record_conflict;
	bool		valid;			/* no invalidation since it was built */
	int			users;			/* calls executing its plans right now */
	struct SlotTable *next;
} SlotTable;

static SlotTable *slot_tables = NULL;
static bool invalidation_registered = false;

PG_FUNCTION_INFO_V1(slot_upsert);
PG_FUNCTION_INFO_V1(slot_upsert_many);
PG_FUNCTION_INFO_V1(slot_check_combine);

/*
 * Any change to a slot table or the catalog makes every prepared table stale.
 * The callback may run while a plan of one of them executes (a lock taken
 * inside SPI_execute_plan processes invalidations), so it frees nothing: a
 * stale table is rebuilt at its next use and freed once no call uses it.
 */
static void
invalidate_slot_tables(Datum argument, Oid relation_id)
{
	for (SlotTable *table = slot_tables; table != NULL; table = table->next)
		table->valid = false;
}

/* Frees the stale tables that no call is using. */
static void
free_stale_slot_tables(void)
{
	SlotTable **link = &slot_tables;

	while (*link != NULL)
	{
		SlotTable  *table = *link;

		if (table->valid || table->users > 0)
		{
			link = &table->next;
			continue;
		}
		*link = table->next;
		SPI_freeplan(table->ensure_row);
		SPI_freeplan(table->read_row);
		if (table->cast_message != NULL)
			SPI_freeplan(table->cast_message);
		SPI_freeplan(table->read_overflow);
		SPI_freeplan(table->write_row);
		SPI_freeplan(table->add_overflow);
		SPI_freeplan(table->record_conflict);
		pfree(table);
	}
}

static SlotCombine
parse_combine(const char *combine)
{
	if (strcmp(combine, "sum") == 0)
		return SLOT_COMBINE_SUM;
	if (strcmp(combine, "min") == 0)
		return SLOT_COMBINE_MIN;
	if (strcmp(combine, "max") == 0)
		return SLOT_COMBINE_MAX;
	if (strcmp(combine, "last") == 0)
		return SLOT_COMBINE_LAST;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown combine \"%s\"", combine),
			 errhint("Use sum, min, max or last.")));
	return SLOT_COMBINE_SUM;	/* keep the compiler quiet */
}

/* The function adding two values of a type, which must return that type. */
static Oid
sum_function(Oid value_type)
{
	/* pg_catalog's only: a + found through someone's search_path would run their code */
	Operator	plus = oper(NULL, list_make2(makeString("pg_catalog"), makeString("+")),
							value_type, value_type, true, -1);
	Oid			function = InvalidOid;

	if (plus != NULL)
	{
		Form_pg_operator form = (Form_pg_operator) GETSTRUCT(plus);

		if (form->oprresult == value_type)
			function = form->oprcode;
		ReleaseSysCache(plus);
	}
	if (!OidIsValid(function))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("cannot sum values of type %s", format_type_be(value_type)),
				 errdetail("A sum needs an operator + that returns %s.", format_type_be(value_type)),
				 errhint("Use combine min, max or last, or a numeric value type.")));
	return function;
}

/* sessionize_check_combine(value_type, combine): errors if they cannot work together */
Datum
slot_check_combine(PG_FUNCTION_ARGS)
{
	Oid			value_type = PG_GETARG_OID(0);
	SlotCombine combine = parse_combine(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	TypeCacheEntry *type = lookup_type_cache(value_type, TYPECACHE_CMP_PROC | TYPECACHE_EQ_OPR);

	if (combine == SLOT_COMBINE_SUM)
		sum_function(value_type);
	else if ((combine == SLOT_COMBINE_MIN || combine == SLOT_COMBINE_MAX) && !OidIsValid(type->cmp_proc))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("cannot compare values of type %s", format_type_be(value_type))));
	if (!OidIsValid(type->eq_opr))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("values of type %s have no equality", format_type_be(value_type)),
				 errdetail("A re-delivered message is recognised by an equal value.")));
	PG_RETURN_VOID();
}

/* "schema"."name" of a relation */
static char *
qualified_name(Oid relation_id)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relation_id)),
									  get_rel_name(relation_id));
}

/* Type and type modifier of a named column, or an error naming the table. */
static Oid
column_type(Relation relation, const char *column, int32 *typmod)
{
	TupleDesc	descriptor = RelationGetDescr(relation);

	for (int i = 0; i < descriptor->natts; i++)
	{
		Form_pg_attribute attribute = TupleDescAttr(descriptor, i);

		if (!attribute->attisdropped && strcmp(NameStr(attribute->attname), column) == 0)
		{
			*typmod = attribute->atttypmod;
			return attribute->atttypid;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("slot table %s has no column \"%s\"", RelationGetRelationName(relation), column),
			 errhint("Slot tables are made by sessionize.create_slot_table().")));
	return InvalidOid;
}

/* Errors unless a column has the type the slot logic reads it with. */
static void
check_column_type(Relation relation, const char *column, Oid expected)
{
	int32		typmod;
	Oid			actual = column_type(relation, column, &typmod);

	if (actual != expected)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of slot table \"%s\" is of type %s, not %s", column,
						RelationGetRelationName(relation), format_type_be(actual), format_type_be(expected)),
				 errhint("The columns of a slot table keep the types create_slot_table() gave them.")));
}

/* "OPERATOR(schema.=)" for the default equality of a type */
static char *
equality_operator(Oid type)
{
	TypeCacheEntry *entry = lookup_type_cache(type, TYPECACHE_EQ_OPR);
	HeapTuple	operator_tuple;
	char	   *rendered;

	if (!OidIsValid(entry->eq_opr))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("type %s has no equality operator", format_type_be(type))));
	operator_tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(entry->eq_opr));
	if (!HeapTupleIsValid(operator_tuple))
		elog(ERROR, "cache lookup failed for operator %u", entry->eq_opr);
	rendered = psprintf("OPERATOR(%s.%s)",
						quote_identifier(get_namespace_name(((Form_pg_operator) GETSTRUCT(operator_tuple))->oprnamespace)),
						NameStr(((Form_pg_operator) GETSTRUCT(operator_tuple))->oprname));
	ReleaseSysCache(operator_tuple);
	return rendered;
}

static SPIPlanPtr
prepare_kept(StringInfo query, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(query->data, nargs, types);

	if (plan == NULL)
		elog(ERROR, "could not prepare slot query \"%s\": %s", query->data,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Finds or builds the SlotTable for a table and the types the caller passes.
 * Must be called inside SPI.
 */
static SlotTable *
slot_table_for(Oid table_id, int key_count, const Oid *key_types, Oid slot_key_type, Oid value_type)
{
	SlotTable  *table;
	Oid			lookup_type = REGCLASSOID;
	Datum		lookup_value = ObjectIdGetDatum(table_id);
	HeapTuple	row;
	TupleDesc	descriptor;
	bool		isnull;
	ArrayType  *key_array;
	Datum	   *key_names;
	int			catalog_key_count;
	char	   *slot_key_name;
	char	   *value_name;
	Oid			overflow_id;
	Oid			conflicts_id;
	Relation	relation;
	StringInfoData keys_where;
	StringInfoData key_list;
	StringInfoData key_values;
	StringInfoData query;
	Oid		   *types;
	Oid			column_types[MAX_KEY_COLUMNS];
	MemoryContext old_context;
	int32		typmod;

	free_stale_slot_tables();
	for (table = slot_tables; table != NULL; table = table->next)
		if (table->valid && table->table_id == table_id && table->key_count == key_count &&
			memcmp(table->key_types, key_types, sizeof(Oid) * key_count) == 0 &&
			table->slot_key_argument_type == slot_key_type &&
			table->value_argument_type == value_type)
			return table;

	if (!invalidation_registered)
	{
		CacheRegisterRelcacheCallback(invalidate_slot_tables, (Datum) 0);
		invalidation_registered = true;
	}

	if (SPI_execute_with_args("SELECT key_columns::pg_catalog.text[], slot_key_name::pg_catalog.text,"
							  " value_name::pg_catalog.text, slots, combine, on_conflict,"
							  " overflow_table::pg_catalog.oid, conflicts_table::pg_catalog.oid"
							  " FROM sessionize.slot_tables WHERE table_id OPERATOR(pg_catalog.=) $1",
							  1, &lookup_type, &lookup_value, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the slot table catalog");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("relation \"%s\" is not a slot table", get_rel_name(table_id)),
				 errhint("Create slot tables with sessionize.create_slot_table().")));
	row = SPI_tuptable->vals[0];
	descriptor = SPI_tuptable->tupdesc;

	old_context = MemoryContextSwitchTo(TopMemoryContext);
	table = palloc0(sizeof(SlotTable));
	MemoryContextSwitchTo(old_context);
	table->table_id = table_id;
	table->key_count = key_count;
	memcpy(table->key_types, key_types, sizeof(Oid) * key_count);
	table->slot_key_argument_type = slot_key_type;
	table->value_argument_type = value_type;

	key_array = DatumGetArrayTypeP(SPI_getbinval(row, descriptor, 1, &isnull));
	deconstruct_array(key_array, TEXTOID, -1, false, TYPALIGN_INT, &key_names, NULL, &catalog_key_count);
	slot_key_name = TextDatumGetCString(SPI_getbinval(row, descriptor, 2, &isnull));
	value_name = TextDatumGetCString(SPI_getbinval(row, descriptor, 3, &isnull));
	table->slots = DatumGetInt32(SPI_getbinval(row, descriptor, 4, &isnull));
	table->combine = parse_combine(TextDatumGetCString(SPI_getbinval(row, descriptor, 5, &isnull)));
	table->record_conflicts = strcmp(TextDatumGetCString(SPI_getbinval(row, descriptor, 6, &isnull)), "record") == 0;
	overflow_id = DatumGetObjectId(SPI_getbinval(row, descriptor, 7, &isnull));
	conflicts_id = DatumGetObjectId(SPI_getbinval(row, descriptor, 8, &isnull));

	if (catalog_key_count != key_count)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("slot table \"%s\" has %d key columns, the message has %d",
						get_rel_name(table_id), catalog_key_count, key_count),
				 errhint("Pass a key of several columns as ROW(value, ...).")));

	types = palloc(sizeof(Oid) * (key_count + 2 * table->slots + 4));
	relation = table_open(table_id, AccessShareLock);
	initStringInfo(&keys_where);
	initStringInfo(&key_list);
	initStringInfo(&key_values);
	for (int i = 0; i < key_count; i++)
	{
		const char *name = quote_identifier(TextDatumGetCString(key_names[i]));

		column_types[i] = column_type(relation, TextDatumGetCString(key_names[i]), &typmod);
		appendStringInfo(&keys_where, "%s%s %s CAST($%d AS %s)", i > 0 ? " AND " : "",
						 name, equality_operator(column_types[i]), i + 1,
						 format_type_extended(column_types[i], typmod, FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
		appendStringInfo(&key_list, "%s%s", i > 0 ? ", " : "", name);
		appendStringInfo(&key_values, "%sCAST($%d AS %s)", i > 0 ? ", " : "", i + 1,
						 format_type_extended(column_types[i], typmod, FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
		types[i] = key_types[i];
	}
	table->slot_key_type = column_type(relation, psprintf("%s_1", slot_key_name), &typmod);
	table->value_type = column_type(relation, psprintf("%s_1", value_name), &typmod);
	/* every slot is read with the types of the first: its owner may have changed one */
	for (int i = 2; i <= table->slots; i++)
	{
		check_column_type(relation, psprintf("%s_%d", slot_key_name, i), table->slot_key_type);
		check_column_type(relation, psprintf("%s_%d", value_name, i), table->value_type);
	}
	check_column_type(relation, "computed", table->value_type);
	table_close(relation, AccessShareLock);
	relation = table_open(overflow_id, AccessShareLock);
	check_column_type(relation, slot_key_name, table->slot_key_type);
	check_column_type(relation, value_name, table->value_type);
	for (int i = 0; i < key_count; i++)
		check_column_type(relation, TextDatumGetCString(key_names[i]), column_types[i]);
	table_close(relation, AccessShareLock);
	relation = table_open(conflicts_id, AccessShareLock);
	check_column_type(relation, slot_key_name, table->slot_key_type);
	check_column_type(relation, "stored_value", table->value_type);
	check_column_type(relation, "offered_value", table->value_type);
	table_close(relation, AccessShareLock);

	get_typlenbyval(table->slot_key_type, &table->slot_key_length, &table->slot_key_by_value);
	get_typlenbyval(table->value_type, &table->value_length, &table->value_by_value);
	{
		TypeCacheEntry *slot_key_entry = lookup_type_cache(table->slot_key_type, TYPECACHE_CMP_PROC_FINFO);
		TypeCacheEntry *value_entry = lookup_type_cache(table->value_type,
														TYPECACHE_CMP_PROC_FINFO | TYPECACHE_EQ_OPR_FINFO);

		if (!OidIsValid(slot_key_entry->cmp_proc))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("slot keys of type %s cannot be ordered", format_type_be(table->slot_key_type))));
		fmgr_info_cxt(slot_key_entry->cmp_proc, &table->slot_key_compare, TopMemoryContext);
		fmgr_info_cxt(value_entry->eq_opr_finfo.fn_oid, &table->value_equal, TopMemoryContext);
		if (OidIsValid(value_entry->cmp_proc))
			fmgr_info_cxt(value_entry->cmp_proc, &table->value_compare, TopMemoryContext);
		if (table->combine == SLOT_COMBINE_SUM)
			fmgr_info_cxt(sum_function(table->value_type), &table->value_add, TopMemoryContext);
	}

	/* make sure the key's row exists, then read and lock it */
	initStringInfo(&query);
	appendStringInfo(&query, "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT DO NOTHING",
					 qualified_name(table_id), key_list.data, key_values.data);
	table->ensure_row = prepare_kept(&query, key_count, types);

	resetStringInfo(&query);
	appendStringInfoString(&query, "SELECT ");
	for (int i = 1; i <= table->slots; i++)
		appendStringInfo(&query, "%s%s, %s", i > 1 ? ", " : "",
						 quote_identifier(psprintf("%s_%d", slot_key_name, i)),
						 quote_identifier(psprintf("%s_%d", value_name, i)));
	appendStringInfo(&query, " FROM %s WHERE %s FOR UPDATE", qualified_name(table_id), keys_where.data);
	table->read_row = prepare_kept(&query, key_count, types);

	/* messages whose types differ from the columns' are cast by the server */
	table->needs_cast = slot_key_type != table->slot_key_type || value_type != table->value_type;
	if (table->needs_cast)
	{
		Oid			cast_types[2] = {slot_key_type, value_type};

		resetStringInfo(&query);
		appendStringInfo(&query, "SELECT CAST($1 AS %s), CAST($2 AS %s)",
						 format_type_be_qualified(table->slot_key_type),
						 format_type_be_qualified(table->value_type));
		table->cast_message = prepare_kept(&query, 2, cast_types);
	}

	resetStringInfo(&query);
	appendStringInfo(&query, "SELECT %s, %s FROM %s WHERE %s",
					 quote_identifier(slot_key_name), quote_identifier(value_name),
					 qualified_name(overflow_id), keys_where.data);
	table->read_overflow = prepare_kept(&query, key_count, types);

	resetStringInfo(&query);
	appendStringInfo(&query, "UPDATE %s SET computed = $%d", qualified_name(table_id), key_count + 1);
	types[key_count] = table->value_type;
	for (int i = 1; i <= table->slots; i++)
	{
		appendStringInfo(&query, ", %s = $%d, %s = $%d",
						 quote_identifier(psprintf("%s_%d", slot_key_name, i)), key_count + 2 * i,
						 quote_identifier(psprintf("%s_%d", value_name, i)), key_count + 2 * i + 1);
		types[key_count + 2 * i - 1] = table->slot_key_type;
		types[key_count + 2 * i] = table->value_type;
	}
	appendStringInfo(&query, " WHERE %s", keys_where.data);
	table->write_row = prepare_kept(&query, key_count + 1 + 2 * table->slots, types);

	resetStringInfo(&query);
	appendStringInfo(&query, "INSERT INTO %s (%s, %s, %s) VALUES (%s, $%d, $%d)",
					 qualified_name(overflow_id), key_list.data,
					 quote_identifier(slot_key_name), quote_identifier(value_name),
					 key_values.data, key_count + 1, key_count + 2);
	types[key_count] = table->slot_key_type;
	types[key_count + 1] = table->value_type;
	table->add_overflow = prepare_kept(&query, key_count + 2, types);

	resetStringInfo(&query);
	appendStringInfo(&query, "INSERT INTO %s (%s, %s, stored_value, offered_value) VALUES (%s, $%d, $%d, $%d)",
					 qualified_name(conflicts_id), key_list.data, quote_identifier(slot_key_name),
					 key_values.data, key_count + 1, key_count + 2, key_count + 3);
	types[key_count + 2] = table->value_type;
	table->record_conflict = prepare_kept(&query, key_count + 3, types);

	table->valid = true;
	table->next = slot_tables;
	slot_tables = table;
	return table;
}

/* A value as text, for messages. */
static char *
value_text(Oid type, Datum value, bool isnull)
{
	Oid			output;
	bool		varlena;

	if (isnull)
		return "NULL";
	getTypeOutputInfo(type, &output, &varlena);
	return OidOutputFunctionCall(output, value);
}

static int
slot_compare(SlotTable *table, Datum a, Datum b)
{
	return DatumGetInt32(FunctionCall2Coll(&table->slot_key_compare, DEFAULT_COLLATION_OID, a, b));
}

static bool
values_equal(SlotTable *table, const Slot *slot, Datum value, bool value_null)
{
	if (slot->value_null || value_null)
		return slot->value_null && value_null;
	return DatumGetBool(FunctionCall2Coll(&table->value_equal, DEFAULT_COLLATION_OID,
										  slot->value, value));
}

/* computed: the combine over every slot (NULL values are skipped, like SQL's) */
static Datum
combine_slots(SlotTable *table, Slot *slots, int count, bool *isnull)
{
	Datum		result = (Datum) 0;

	*isnull = true;
	if (table->combine == SLOT_COMBINE_LAST)
	{
		*isnull = slots[count - 1].value_null;
		return slots[count - 1].value;
	}
	for (int i = 0; i < count; i++)
	{
		if (slots[i].value_null)
			continue;
		if (*isnull)
			result = slots[i].value;
		else if (table->combine == SLOT_COMBINE_SUM)
			result = FunctionCall2(&table->value_add, result, slots[i].value);
		else
		{
			int			order = DatumGetInt32(FunctionCall2Coll(&table->value_compare, DEFAULT_COLLATION_OID,
																result, slots[i].value));

			if ((table->combine == SLOT_COMBINE_MIN && order > 0) ||
				(table->combine == SLOT_COMBINE_MAX && order < 0))
				result = slots[i].value;
		}
		*isnull = false;
	}
	return result;
}

static void
execute_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			result = SPI_execute_plan(plan, values, nulls, false, 0);

	if (result != expected)
		elog(ERROR, "slot query failed: %s", SPI_result_code_string(result));
}

/* A message: its slot key and value as the caller passed them. */
typedef struct SlotMessage
{
	Datum		slot_key;
	Datum		value;
	bool		value_null;
} SlotMessage;

/* The slot key and value of a message in the column types. */
static void
cast_message(SlotTable *table, const SlotMessage *message, Datum *slot_key, Datum *value, bool *value_null)
{
	Datum		arguments[2] = {message->slot_key, message->value};
	char		nulls[3] = {' ', message->value_null ? 'n' : ' ', '\0'};
	bool		isnull;

	if (!table->needs_cast)
	{
		*slot_key = message->slot_key;
		*value = message->value;
		*value_null = message->value_null;
		return;
	}
	execute_plan(table->cast_message, arguments, nulls, SPI_OK_SELECT);
	*slot_key = datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
						  table->slot_key_by_value, table->slot_key_length);
	*value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, value_null);
	if (!*value_null)
		*value = datumCopy(*value, table->value_by_value, table->value_length);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Applies messages of one key to its row: the row is made to exist, locked,
 * read once, changed in memory by every message, and written once.
 * outcomes[] counts what each message did.
 */
static void
apply_messages(SlotTable *table, Datum *key_values, const SlotMessage *messages, int message_count,
			   int64 *outcomes)
{
	int			key_count = table->key_count;
	int			parameter_count = key_count + 3 + 2 * table->slots;
	Datum	   *parameters = palloc(sizeof(Datum) * parameter_count);
	char	   *nulls = palloc(parameter_count + 1);
	HeapTuple	row;
	TupleDesc	descriptor;
	bool		isnull;
	Slot	   *slots;
	bool	   *stored_in_overflow;
	int			count = 0;
	int			capacity;
	bool		changed = false;
	Datum		computed;
	bool		computed_null;
	SPITupleTable *row_table;
	SPITupleTable *overflow_table;

	memset(nulls, ' ', parameter_count);
	nulls[parameter_count] = '\0';
	memcpy(parameters, key_values, sizeof(Datum) * key_count);

	execute_plan(table->ensure_row, parameters, nulls, SPI_OK_INSERT);
	execute_plan(table->read_row, parameters, nulls, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "slot table row vanished while locked");
	row_table = SPI_tuptable;
	row = row_table->vals[0];
	descriptor = row_table->tupdesc;
	execute_plan(table->read_overflow, parameters, nulls, SPI_OK_SELECT);
	overflow_table = SPI_tuptable;

	capacity = table->slots + (int) overflow_table->numvals + message_count;
	slots = palloc(sizeof(Slot) * capacity);
	stored_in_overflow = palloc(sizeof(bool) * capacity);
	for (int i = 0; i < table->slots; i++)
	{
		Datum		existing = SPI_getbinval(row, descriptor, 1 + 2 * i, &isnull);

		if (isnull)
			continue;
		slots[count].slot_key = existing;
		slots[count].value = SPI_getbinval(row, descriptor, 2 + 2 * i, &slots[count].value_null);
		stored_in_overflow[count++] = false;
	}
	for (uint64 i = 0; i < overflow_table->numvals; i++)
	{
		slots[count].slot_key = SPI_getbinval(overflow_table->vals[i], overflow_table->tupdesc, 1, &isnull);
		slots[count].value = SPI_getbinval(overflow_table->vals[i], overflow_table->tupdesc, 2,
										   &slots[count].value_null);
		stored_in_overflow[count++] = true;
	}
	/* the slots in slot key order */
	for (int i = 1; i < count; i++)
	{
		Slot		moving = slots[i];
		bool		moving_stored = stored_in_overflow[i];
		int			j = i;

		while (j > 0 && slot_compare(table, slots[j - 1].slot_key, moving.slot_key) > 0)
		{
			slots[j] = slots[j - 1];
			stored_in_overflow[j] = stored_in_overflow[j - 1];
			j--;
		}
		slots[j] = moving;
		stored_in_overflow[j] = moving_stored;
	}

	for (int m = 0; m < message_count; m++)
	{
		Datum		slot_key;
		Datum		value;
		bool		value_null;
		int			position;
		bool		found = false;

		cast_message(table, &messages[m], &slot_key, &value, &value_null);
		for (position = 0; position < count; position++)
		{
			int			order = slot_compare(table, slots[position].slot_key, slot_key);

			found = order == 0;
			if (order >= 0)
				break;
		}
		if (!found)
		{
			memmove(&slots[position + 1], &slots[position], sizeof(Slot) * (count - position));
			memmove(&stored_in_overflow[position + 1], &stored_in_overflow[position],
					sizeof(bool) * (count - position));
			slots[position].slot_key = slot_key;
			slots[position].value = value;
			slots[position].value_null = value_null;
			stored_in_overflow[position] = false;
			count++;
			changed = true;
			outcomes[SLOT_ADDED]++;
		}
		else if (values_equal(table, &slots[position], value, value_null))
			outcomes[SLOT_UNCHANGED]++;
		else if (!table->record_conflicts)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("conflicting value for slot key %s in slot table \"%s\"",
							value_text(table->slot_key_type, slot_key, false),
							get_rel_name(table->table_id)),
					 errdetail("The slot holds %s; the message offers %s.",
							   value_text(table->value_type, slots[position].value, slots[position].value_null),
							   value_text(table->value_type, value, value_null)),
					 errhint("A message's value must not change once delivered; create the table with on_conflict => 'record' to collect conflicts instead.")));
		else
		{
			parameters[key_count] = slot_key;
			parameters[key_count + 1] = slots[position].value;
			nulls[key_count + 1] = slots[position].value_null ? 'n' : ' ';
			parameters[key_count + 2] = value;
			nulls[key_count + 2] = value_null ? 'n' : ' ';
			execute_plan(table->record_conflict, parameters, nulls, SPI_OK_INSERT);
			nulls[key_count + 1] = nulls[key_count + 2] = ' ';
			outcomes[SLOT_CONFLICT]++;
		}
	}

	if (changed)
	{
		computed = combine_slots(table, slots, count, &computed_null);
		parameters[key_count] = computed;
		nulls[key_count] = computed_null ? 'n' : ' ';
		for (int i = 0; i < table->slots; i++)
		{
			int			at = key_count + 1 + 2 * i;

			if (i < count)
			{
				parameters[at] = slots[i].slot_key;
				nulls[at] = ' ';
				parameters[at + 1] = slots[i].value;
				nulls[at + 1] = slots[i].value_null ? 'n' : ' ';
			}
			else
				nulls[at] = nulls[at + 1] = 'n';
		}
		execute_plan(table->write_row, parameters, nulls, SPI_OK_UPDATE);

		/*
		 * Slots only ever join, so the overflow only grows: store each slot
		 * beyond the wide ones that is not stored there yet.  Overflow rows
		 * are keyed by slot key and read back in order.
		 */
		for (int i = table->slots; i < count; i++)
		{
			if (stored_in_overflow[i])
				continue;
			parameters[key_count] = slots[i].slot_key;
			nulls[key_count] = ' ';
			parameters[key_count + 1] = slots[i].value;
			nulls[key_count + 1] = slots[i].value_null ? 'n' : ' ';
			execute_plan(table->add_overflow, parameters, nulls, SPI_OK_INSERT);
		}
	}

	/* SPI keeps every result until SPI_finish: free them, or a batch grows */
	SPI_freetuptable(overflow_table);
	SPI_freetuptable(row_table);
}

/*
 * Reads a key argument: a ROW() of the key columns, or a single value.
 * Unknown-typed literals are passed on as text, to be cast by the queries.
 */
static int
key_argument(Oid type, Datum value, Datum *values, Oid *types)
{
	if (type == UNKNOWNOID)
	{
		values[0] = CStringGetTextDatum(DatumGetCString(value));
		types[0] = TEXTOID;
		return 1;
	}
	if (type_is_rowtype(type))
	{
		HeapTupleHeader header = DatumGetHeapTupleHeader(value);
		TupleDesc	descriptor = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(header),
														HeapTupleHeaderGetTypMod(header));
		HeapTupleData tuple;
		bool		nulls[MAX_KEY_COLUMNS];
		int			count = descriptor->natts;

		if (count > MAX_KEY_COLUMNS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("a slot table key has at most %d columns", MAX_KEY_COLUMNS)));
		tuple.t_len = HeapTupleHeaderGetDatumLength(header);
		tuple.t_data = header;
		heap_deform_tuple(&tuple, descriptor, values, nulls);
		for (int i = 0; i < count; i++)
		{
			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("slot table key must not contain nulls")));
			types[i] = TupleDescAttr(descriptor, i)->atttypid;
			if (types[i] == UNKNOWNOID)
			{
				values[i] = CStringGetTextDatum(DatumGetCString(values[i]));
				types[i] = TEXTOID;
			}
		}
		ReleaseTupleDesc(descriptor);
		return count;
	}
	values[0] = value;
	types[0] = type;
	return 1;
}

/* An argument of type "any" as a Datum the queries accept. */
static Datum
plain_argument(Oid *type, Datum value)
{
	if (*type == UNKNOWNOID)
	{
		*type = TEXTOID;
		return CStringGetTextDatum(DatumGetCString(value));
	}
	return value;
}

/* Applies messages to a table, which no invalidation frees meanwhile. */
static void
apply_messages_using(SlotTable *table, Datum *key_values, const SlotMessage *messages, int count,
					 int64 *outcomes)
{
	table->users++;
	PG_TRY();
	{
		apply_messages(table, key_values, messages, count, outcomes);
	}
	PG_FINALLY();
	{
		table->users--;
	}
	PG_END_TRY();
}

static const char *const outcome_names[] = {"added", "unchanged", "conflict"};

/* slot_upsert(target regclass, key "any", slot_key "any", value "any") -> text */
Datum
slot_upsert(PG_FUNCTION_ARGS)
{
	Oid			table_id;
	Datum		key_values[MAX_KEY_COLUMNS];
	Oid			key_types[MAX_KEY_COLUMNS];
	int			key_count;
	Oid			slot_key_type = get_fn_expr_argtype(fcinfo->flinfo, 2);
	Oid			value_type = get_fn_expr_argtype(fcinfo->flinfo, 3);
	Datum		slot_key;
	Datum		value = (Datum) 0;
	SlotTable  *table;
	SlotMessage message;
	int64		outcomes[3] = {0, 0, 0};
	SlotOutcome outcome = SLOT_ADDED;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("slot table must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("slot table key must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("slot key must not be null"),
				 errdetail("The slot key tells a message's slot; without it a re-delivery cannot be recognised.")));
	table_id = PG_GETARG_OID(0);
	key_count = key_argument(get_fn_expr_argtype(fcinfo->flinfo, 1), PG_GETARG_DATUM(1),
							 key_values, key_types);
	slot_key = plain_argument(&slot_key_type, PG_GETARG_DATUM(2));
	if (!PG_ARGISNULL(3))
		value = plain_argument(&value_type, PG_GETARG_DATUM(3));
	else if (value_type == UNKNOWNOID)
		value_type = TEXTOID;

	message.slot_key = slot_key;
	message.value = value;
	message.value_null = PG_ARGISNULL(3);
	SPI_connect();
	table = slot_table_for(table_id, key_count, key_types, slot_key_type, value_type);
	apply_messages_using(table, key_values, &message, 1, outcomes);
	SPI_finish();
	for (int i = 0; i < 3; i++)
		if (outcomes[i] > 0)
			outcome = (SlotOutcome) i;
	PG_RETURN_TEXT_P(cstring_to_text(outcome_names[outcome]));
}

/* One array argument of slot_upsert_many, taken apart. */
typedef struct MessageArray
{
	Oid			element_type;
	Datum	   *elements;
	bool	   *nulls;
	int			count;
} MessageArray;

static void
message_array(FunctionCallInfo fcinfo, int argno, const char *what, MessageArray *array)
{
	Oid			array_type = get_fn_expr_argtype(fcinfo->flinfo, argno);
	int16		length;
	bool		by_value;
	char		align;

	array->element_type = get_element_type(array_type);
	if (!OidIsValid(array->element_type))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s must be an array", what),
				 errhint("Collect messages with array_agg().")));
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	get_typlenbyvalalign(array->element_type, &length, &by_value, &align);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), array->element_type, length, by_value, align,
					  &array->elements, &array->nulls, &array->count);
}

/* The messages of slot_upsert_many with their keys taken apart. */
typedef struct KeyedMessage
{
	Datum		key_values[MAX_KEY_COLUMNS];
	SlotMessage message;
} KeyedMessage;

typedef struct KeyOrder
{
	int			key_count;
	FmgrInfo   *compare;		/* per key column; NULL when unordered */
} KeyOrder;

static int
keyed_message_compare(const void *a, const void *b, void *argument)
{
	const KeyedMessage *x = a;
	const KeyedMessage *y = b;
	KeyOrder   *order = argument;

	for (int i = 0; i < order->key_count; i++)
	{
		int			result = DatumGetInt32(FunctionCall2Coll(&order->compare[i], DEFAULT_COLLATION_OID,
															 x->key_values[i], y->key_values[i]));

		if (result != 0)
			return result;
	}
	return 0;
}

/*
 * slot_upsert_many(target regclass, keys anyarray, slot_keys anyarray,
 *					vals anyarray) -> (added, unchanged, conflicts)
 *
 * Applies message i = (keys[i], slot_keys[i], vals[i]) for every i.  The
 * result does not depend on message order, so the messages are sorted by key
 * and each key's row is read and written once for all its messages.
 */
Datum
slot_upsert_many(PG_FUNCTION_ARGS)
{
	MessageArray keys;
	MessageArray slot_keys;
	MessageArray values;
	int64		outcomes[3] = {0, 0, 0};
	SlotTable  *table = NULL;
	TupleDesc	descriptor;
	Datum		result[3];
	bool		result_nulls[3] = {false, false, false};
	KeyedMessage *messages;
	Oid			key_types[MAX_KEY_COLUMNS];
	int			key_count = 0;
	KeyOrder	order;
	Oid			slot_key_type;
	Oid			value_type;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("slot table must not be null")));
	message_array(fcinfo, 1, "keys", &keys);
	message_array(fcinfo, 2, "slot_keys", &slot_keys);
	message_array(fcinfo, 3, "vals", &values);
	if (keys.count != slot_keys.count || keys.count != values.count)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("keys, slot_keys and vals must have the same length"),
				 errdetail("They have %d, %d and %d elements.", keys.count, slot_keys.count, values.count)));
	if (get_call_result_type(fcinfo, NULL, &descriptor) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "slot_upsert_many must return a record");

	messages = palloc_extended(sizeof(KeyedMessage) * Max(keys.count, 1), MCXT_ALLOC_HUGE);
	for (int i = 0; i < keys.count; i++)
	{
		Oid			types[MAX_KEY_COLUMNS];
		int			count;

		if (keys.nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("slot table key must not be null"),
					 errdetail("Message %d has a null key.", i + 1)));
		if (slot_keys.nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("slot key must not be null"),
					 errdetail("Message %d has a null slot key.", i + 1)));
		count = key_argument(keys.element_type, keys.elements[i], messages[i].key_values, types);
		if (i == 0)
		{
			key_count = count;
			memcpy(key_types, types, sizeof(Oid) * count);
		}
		else if (count != key_count || memcmp(types, key_types, sizeof(Oid) * count) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("every key of slot_upsert_many must have the same columns and types"),
					 errdetail("Message %d differs from message 1.", i + 1)));
		slot_key_type = slot_keys.element_type;
		messages[i].message.slot_key = plain_argument(&slot_key_type, slot_keys.elements[i]);
		value_type = values.element_type;
		messages[i].message.value = values.nulls[i] ? (Datum) 0 : plain_argument(&value_type, values.elements[i]);
		messages[i].message.value_null = values.nulls[i];
	}
	slot_key_type = slot_keys.element_type == UNKNOWNOID ? TEXTOID : slot_keys.element_type;
	value_type = values.element_type == UNKNOWNOID ? TEXTOID : values.element_type;

	order.key_count = key_count;
	order.compare = palloc(sizeof(FmgrInfo) * Max(key_count, 1));
	for (int i = 0; i < key_count && order.compare != NULL; i++)
	{
		TypeCacheEntry *entry = lookup_type_cache(key_types[i], TYPECACHE_CMP_PROC_FINFO);

		if (OidIsValid(entry->cmp_proc))
			fmgr_info_copy(&order.compare[i], &entry->cmp_proc_finfo, CurrentMemoryContext);
		else
			order.compare = NULL;
	}
	if (order.compare != NULL)
		qsort_arg(messages, keys.count, sizeof(KeyedMessage), keyed_message_compare, &order);

	SPI_connect();
	if (keys.count > 0)
		table = slot_table_for(PG_GETARG_OID(0), key_count, key_types, slot_key_type, value_type);
	for (int first = 0; first < keys.count;)
	{
		int			next = first + 1;
		SlotMessage *group;

		/* a run of messages with the same key (all of them alone when keys cannot be ordered) */
		while (order.compare != NULL && next < keys.count &&
			   keyed_message_compare(&messages[first], &messages[next], &order) == 0)
			next++;
		group = palloc(sizeof(SlotMessage) * (next - first));
		for (int i = first; i < next; i++)
			group[i - first] = messages[i].message;
		apply_messages_using(table, messages[first].key_values, group, next - first, outcomes);
		pfree(group);
		first = next;
	}
	SPI_finish();

	for (int i = 0; i < 3; i++)
		result[i] = Int64GetDatum(outcomes[i]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(descriptor), result, result_nulls)));
}
