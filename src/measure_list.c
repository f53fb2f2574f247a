/*-------------------------------------------------------------------------
 *
 * measure_list.c
 *	  A pipeline's measures, declared as a list of aggregate calls
 *	  ("first(url) AS landing_page, count(*) FILTER (WHERE ...) AS views"),
 *	  read with PostgreSQL's own parser and checked against the source.
 *
 * Each call gives a measure: its name (the alias), its aggregate, the SQL
 * text of its argument and of its FILTER condition.  The texts are cut out
 * of the list where the parser found them (the scanner finds their ends),
 * and run later, per event, over a row of the source called measure_row:
 * the source table's columns, or for a source of JSON documents the fields
 * the measures name, as text.  The check runs each expression once over no
 * rows, as the pipeline's owner (planning may run the owner's functions),
 * in a SELECT list to learn its type and in a WHERE clause, where
 * PostgreSQL refuses aggregates, window functions and set-returning
 * functions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "parser/scanner.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(parse_measures);

/* Names a measure may not take: the columns of a pipeline's tables and views. */
static const char *const reserved_names[] = {
	"key", "session_start", "last_event_at", "expires_at", "events", "type_counts", "revision",
	"updated_at", "status", "change_id", "change", "changed_at", "measured_since", NULL
};

static const struct
{
	const char *name;
	MeasureKind kind;
}			aggregates[] = {
	{"count", MEASURE_COUNT},
	{"sum", MEASURE_SUM},
	{"min", MEASURE_MIN},
	{"max", MEASURE_MAX},
	{"first", MEASURE_FIRST},
	{"last", MEASURE_LAST},
	{"bool_or", MEASURE_BOOL_OR},
	{"bool_and", MEASURE_BOOL_AND},
	{"approx_count_distinct", MEASURE_APPROX_COUNT_DISTINCT},
};

typedef struct ParsedMeasure
{
	char	   *name;
	MeasureKind kind;
	char	   *argument;		/* NULL for count(*) */
	char	   *filter;			/* NULL: none */
	Oid			argument_type;
} ParsedMeasure;

static void
measure_error(const char *list, int location, const char *message, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid measures: %s", message),
			 hint != NULL ? errhint("%s", hint) : 0,
			 location >= 0 ? errdetail("At \"%.40s\".", list + location) : 0));
}

/*
 * The end of the expression that starts at start in text: the offset of
 * the ")" or "," that closes it, found with PostgreSQL's scanner so that
 * quotes, comments and nested parentheses are read as the parser reads
 * them.
 */
static int
expression_end(const char *text, int start)
{
	core_yy_extra_type extra;
	core_yyscan_t scanner = scanner_init(text, &extra, &ScanKeywords, ScanKeywordTokens);
	core_YYSTYPE value;
	int			location = 0;
	int			depth = 0;
	int			token;

	while ((token = core_yylex(&value, &location, scanner)) != 0)
	{
		if (location < start)
			continue;
		if (token == '(' || token == '[')
			depth++;
		else if (token == ')' || token == ']' || token == ',')
		{
			if (depth == 0)
				break;
			if (token != ',')
				depth--;
		}
	}
	scanner_finish(scanner);
	if (token == 0)
		elog(ERROR, "could not find the end of an expression in a measure");
	return location;
}

static char *
expression_text(const char *list, Node *expression)
{
	int			start = exprLocation(expression);

	if (start < 0)
		measure_error(list, -1, "an expression has no place in the list", NULL);
	return pnstrdup(list + start, expression_end(list, start) - start);
}

/* Collects the single names an expression refers to (fields of a payload). */
static bool
collect_names(Node *node, List **names)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		ColumnRef  *reference = (ColumnRef *) node;

		if (list_length(reference->fields) != 1 || !IsA(linitial(reference->fields), String))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid measures: refer to a column by its name alone"),
					 errdetail("A measure reads one event: its columns need no table name.")));
		{
			char	   *name = strVal(linitial(reference->fields));
			ListCell   *cell;

			foreach(cell, *names)
				if (strcmp(lfirst(cell), name) == 0)
					return false;
			*names = lappend(*names, name);
		}
		return false;
	}
	return raw_expression_tree_walker(node, collect_names, names);
}

static ParsedMeasure *
read_call(const char *list, ResTarget *target, List **names)
{
	ParsedMeasure *measure = palloc0(sizeof(ParsedMeasure));
	FuncCall   *call;
	const char *aggregate;
	int			a;

	if (!IsA(target->val, FuncCall))
		measure_error(list, exprLocation(target->val), "each measure is an aggregate call",
					  "Write a list such as: count(*) AS events, first(url) AS landing_page.");
	call = (FuncCall *) target->val;
	if (target->name == NULL)
		measure_error(list, call->location, "a measure needs a name",
					  "Name it with AS, as in: sum(price) AS revenue.");
	measure->name = target->name;
	if (list_length(call->funcname) != 1)
		measure_error(list, call->location, "name the aggregate without a schema", NULL);
	aggregate = strVal(linitial(call->funcname));
	for (a = 0; a < lengthof(aggregates); a++)
		if (strcmp(aggregate, aggregates[a].name) == 0)
			break;
	if (a == lengthof(aggregates))
		measure_error(list, call->location, psprintf("aggregate %s is not supported", aggregate),
					  "Use count, sum, min, max, first, last, bool_or, bool_and or approx_count_distinct.");
	measure->kind = aggregates[a].kind;
	if (call->agg_distinct)
		measure_error(list, call->location, "DISTINCT is not supported in a measure",
					  "Use approx_count_distinct(value).");
	if (call->agg_order != NIL || call->agg_within_group || call->over != NULL || call->func_variadic)
		measure_error(list, call->location, "a measure takes no ORDER BY, WITHIN GROUP, OVER or VARIADIC", NULL);
	if (call->agg_star)
	{
		if (measure->kind != MEASURE_COUNT)
			measure_error(list, call->location, psprintf("%s(*) is not an aggregate", aggregate), NULL);
		measure->kind = MEASURE_COUNT_ROWS;
	}
	else if (list_length(call->args) != 1)
		measure_error(list, call->location, psprintf("%s takes one argument", aggregate),
					  measure->kind == MEASURE_FIRST || measure->kind == MEASURE_LAST
					  ? "The time is the event's: write first(value)." : NULL);
	else
	{
		measure->argument = expression_text(list, linitial(call->args));
		collect_names(linitial(call->args), names);
	}
	if (call->agg_filter != NULL)
	{
		measure->filter = expression_text(list, call->agg_filter);
		collect_names(call->agg_filter, names);
	}
	return measure;
}

/*
 * The raw parse of a list; a syntax error says where in the list, not
 * where in the statement that called create_pipeline().
 */
static List *
parse_list(const char *list)
{
	MemoryContext context = CurrentMemoryContext;
	List	   *statements = NIL;

	PG_TRY();
	{
#if PG_VERSION_NUM >= 140000
		statements = raw_parser(list, RAW_PARSE_DEFAULT);
#else
		statements = raw_parser(list);
#endif
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		if (error->sqlerrcode != ERRCODE_SYNTAX_ERROR)
			PG_RE_THROW();
		FlushErrorState();
		measure_error(list, error->cursorpos > 0 ? error->cursorpos - 1 : -1, error->message, NULL);
	}
	PG_END_TRY();
	return statements;
}

static void
check_name(const char *list, ParsedMeasure *measure, ParsedMeasure **earlier, int count)
{
	for (int r = 0; reserved_names[r] != NULL; r++)
		if (strcmp(measure->name, reserved_names[r]) == 0)
			measure_error(list, -1, psprintf("the name \"%s\" is reserved", measure->name),
						  "A session has a column of that name already: choose another name.");
	if (strstr(measure->name, "__") != NULL)
		measure_error(list, -1, psprintf("the name \"%s\" contains \"__\"", measure->name),
					  "Names with two underscores in a row are kept for the pipeline's own columns.");
	if (strlen(measure->name) > NAMEDATALEN - 1 - strlen("__sketch"))
		measure_error(list, -1, psprintf("the name \"%s\" is too long", measure->name), NULL);
	for (int e = 0; e < count; e++)
		if (strcmp(measure->name, earlier[e]->name) == 0)
			measure_error(list, -1, psprintf("two measures are named \"%s\"", measure->name), NULL);
}

/*
 * The row the measures read an event from, as a FROM item over the source
 * row row_alias: the source's columns, or the named payload fields as text.
 */
char *
sessionize_measure_row(const char *row, const char *payload_column, List *names)
{
	StringInfoData select;
	ListCell   *cell;

	if (payload_column == NULL)
		return psprintf("(SELECT %s.*) AS measure_row", row);
	initStringInfo(&select);
	appendStringInfoString(&select, "(SELECT ");
	foreach(cell, names)
		appendStringInfo(&select, "%s%s.%s OPERATOR(pg_catalog.->>) %s AS %s",
						 cell == list_head(names) ? "" : ", ", row, quote_identifier(payload_column),
						 quote_literal_cstr(lfirst(cell)), quote_identifier(lfirst(cell)));
	if (names == NIL)
		appendStringInfoString(&select, "1 AS no_field");
	appendStringInfoString(&select, ") AS measure_row");
	return select.data;
}

static void
measure_context(void *argument)
{
	errcontext("measure \"%s\"", ((ParsedMeasure *) argument)->name);
}

/* Runs a measure's expressions over no rows of the source, as the owner. */
static void
check_expressions(ParsedMeasure *measure, const char *source, const char *payload_column, List *names, Oid owner)
{
	ErrorContextCallback context = {.previous = error_context_stack, .callback = measure_context, .arg = measure};
	const char *argument = measure->argument != NULL ? measure->argument : "NULL::pg_catalog.bool";
	const char *filter = measure->filter != NULL ? measure->filter : "true";
	const char *rows = psprintf("FROM ONLY %s sessionize_probe", source);
	const char *measure_row = sessionize_measure_row("sessionize_probe", payload_column, names);
	TupleDesc	columns;
	MeasureInput input;

	error_context_stack = &context;
	sessionize_execute_as(owner, psprintf("SELECT m.* %s, LATERAL (SELECT (%s) AS value, (%s) AS filter FROM %s) m"
										  " LIMIT 0", rows, argument, filter, measure_row),
						  INT4OID, (Datum) 0, true);
	columns = SPI_tuptable->tupdesc;
	if (TupleDescAttr(columns, 1)->atttypid != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the FILTER of measure \"%s\" is of type %s, not boolean", measure->name,
						format_type_be(TupleDescAttr(columns, 1)->atttypid))));
	measure->argument_type = TupleDescAttr(columns, 0)->atttypid;
	if (measure->argument_type == UNKNOWNOID)
		measure->argument_type = TEXTOID;
	sessionize_execute_as(owner, psprintf("SELECT 1 %s, LATERAL (SELECT 1 FROM %s WHERE ((%s) IS NULL OR true) AND (%s)) m"
										  " LIMIT 0", rows, measure_row, argument, filter),
						  INT4OID, (Datum) 0, true);
	measure_input_init(&input, measure->kind, measure->argument_type, InvalidOid);
	error_context_stack = context.previous;
}

/*
 * sessionize_parse_measures(source regclass, payload_column name, owner
 *		regrole, measures text)
 *	-> (names text[], aggregates text[], arguments text[], filters text[],
 *		argument_types regtype[], result_types regtype[])
 *
 * The measures of a list, checked; arguments are null for count(*), filters
 * null when none.
 */
Datum
parse_measures(PG_FUNCTION_ARGS)
{
	const char *list;
	List	   *statements;
	SelectStmt *select;
	List	   *names = NIL;
	ParsedMeasure **measures;
	int			count;
	int			m = 0;
	ListCell   *cell;
	TupleDesc	result_type;
	Datum		columns[6];
	bool		nulls[6] = {false};
	Datum	   *values[6];
	bool	   *value_nulls[6];
	const Oid	element_types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, REGTYPEOID, REGTYPEOID};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source, owner and measures must not be null")));
	if (get_call_result_type(fcinfo, NULL, &result_type) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	list = psprintf("SELECT %s", text_to_cstring(PG_GETARG_TEXT_PP(3)));
	statements = parse_list(list);
	if (list_length(statements) != 1 || !IsA(((RawStmt *) linitial(statements))->stmt, SelectStmt))
		measure_error(list, -1, "the list is not one list of aggregate calls", NULL);
	select = (SelectStmt *) ((RawStmt *) linitial(statements))->stmt;
	if (select->fromClause != NIL || select->whereClause != NULL || select->groupClause != NIL ||
		select->havingClause != NULL || select->windowClause != NIL || select->distinctClause != NIL ||
		select->sortClause != NIL || select->limitCount != NULL || select->limitOffset != NULL ||
		select->valuesLists != NIL || select->op != SETOP_NONE || select->intoClause != NULL ||
		select->withClause != NULL || select->lockingClause != NIL)
		measure_error(list, -1, "the list is not a list of aggregate calls alone", NULL);

	count = list_length(select->targetList);
	measures = palloc(sizeof(ParsedMeasure *) * Max(count, 1));
	foreach(cell, select->targetList)
	{
		measures[m] = read_call(list, lfirst_node(ResTarget, cell), &names);
		check_name(list, measures[m], measures, m);
		m++;
	}
	SPI_connect();
	for (m = 0; m < count; m++)
		check_expressions(measures[m],
						  DatumGetCString(DirectFunctionCall1(regclassout, PG_GETARG_DATUM(0))),
						  PG_ARGISNULL(1) ? NULL : NameStr(*PG_GETARG_NAME(1)), names, PG_GETARG_OID(2));
	SPI_finish();

	for (int c = 0; c < 6; c++)
	{
		values[c] = palloc(sizeof(Datum) * Max(count, 1));
		value_nulls[c] = palloc0(sizeof(bool) * Max(count, 1));
	}
	for (m = 0; m < count; m++)
	{
		values[0][m] = CStringGetTextDatum(measures[m]->name);
		values[1][m] = CStringGetTextDatum(measure_kind_name(measures[m]->kind));
		value_nulls[2][m] = measures[m]->argument == NULL;
		if (measures[m]->argument != NULL)
			values[2][m] = CStringGetTextDatum(measures[m]->argument);
		value_nulls[3][m] = measures[m]->filter == NULL;
		if (measures[m]->filter != NULL)
			values[3][m] = CStringGetTextDatum(measures[m]->filter);
		value_nulls[4][m] = measures[m]->argument == NULL;
		values[4][m] = ObjectIdGetDatum(measures[m]->argument_type);
		values[5][m] = ObjectIdGetDatum(measure_result_type(measures[m]->kind, measures[m]->argument_type));
	}
	for (int c = 0; c < 6; c++)
	{
		int			dimensions[1] = {count};
		int			lower_bounds[1] = {1};
		int16		length;
		bool		byval;
		char		align;

		get_typlenbyvalalign(element_types[c], &length, &byval, &align);
		columns[c] = PointerGetDatum(construct_md_array(values[c], value_nulls[c], 1, dimensions, lower_bounds,
														element_types[c], length, byval, align));
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_type), columns, nulls)));
}

static MeasureKind
kind_named(const char *aggregate, bool has_argument)
{
	for (int a = 0; a < lengthof(aggregates); a++)
		if (strcmp(aggregate, aggregates[a].name) == 0)
			return aggregates[a].kind == MEASURE_COUNT && !has_argument ? MEASURE_COUNT_ROWS : aggregates[a].kind;
	elog(ERROR, "unknown aggregate \"%s\" in sessionize.pipeline_measures", aggregate);
	return MEASURE_COUNT;
}

/* The single names an expression of a stored measure refers to. */
static void
collect_expression_names(const char *expression, List **names)
{
	const char *select = psprintf("SELECT %s", expression);
	List	   *statements;
	SelectStmt *parsed;
	ListCell   *cell;

#if PG_VERSION_NUM >= 140000
	statements = raw_parser(select, RAW_PARSE_DEFAULT);
#else
	statements = raw_parser(select);
#endif
	parsed = (SelectStmt *) ((RawStmt *) linitial(statements))->stmt;
	foreach(cell, parsed->targetList)
		collect_names(lfirst_node(ResTarget, cell)->val, names);
}

/*
 * The measures of a pipeline, in their order, from sessionize.
 * pipeline_measures.  The caller is connected to SPI; what is returned is
 * allocated in the current memory context.
 */
PipelineMeasures *
sessionize_read_measures(const char *pipeline)
{
	MemoryContext context = CurrentMemoryContext;
	PipelineMeasures *measures = palloc0(sizeof(PipelineMeasures));
	Oid			type = TEXTOID;
	Datum		name = CStringGetTextDatum(pipeline);
	SPITupleTable *rows;
	bool		isnull;
	Oid			namespace = get_namespace_oid("sessionize", true);
	bool		measures_versioned;

	/*
	 * Until ALTER EXTENSION sessionize UPDATE, the tables are those of 0.3.0,
	 * whose measures are all as old as their pipelines.
	 */
	measures_versioned = OidIsValid(namespace) &&
		get_attnum(get_relname_relid("pipeline_state", namespace), "measures_version") != InvalidAttrNumber;
	if (measures_versioned)
	{
		if (SPI_execute_with_args("SELECT measures_version FROM sessionize.pipeline_state"
								  " WHERE pipeline OPERATOR(pg_catalog.=) $1",
								  1, &type, &name, NULL, true, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the measures of pipeline \"%s\"", pipeline);
		measures->version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
	}
	if (SPI_execute_with_args(psprintf("SELECT name::pg_catalog.text, aggregate, argument, filter,"
									   " argument_type::pg_catalog.oid, result_type::pg_catalog.oid, %s"
									   " FROM sessionize.pipeline_measures WHERE pipeline OPERATOR(pg_catalog.=) $1"
									   " ORDER BY position", measures_versioned ? "added_in" : "0"),
							  1, &type, &name, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the measures of pipeline \"%s\"", pipeline);
	rows = SPI_tuptable;
	measures->count = (int) SPI_processed;
	measures->items = MemoryContextAllocZero(context, sizeof(PipelineMeasure) * Max(measures->count, 1));
	for (int m = 0; m < measures->count; m++)
	{
		PipelineMeasure *measure = &measures->items[m];
		MemoryContext old = MemoryContextSwitchTo(context);
		Datum		values[7];
		bool		nulls[7];

		heap_deform_tuple(rows->vals[m], rows->tupdesc, values, nulls);
		measure->name = TextDatumGetCString(values[0]);
		measure->argument = nulls[2] ? NULL : TextDatumGetCString(values[2]);
		measure->filter = nulls[3] ? NULL : TextDatumGetCString(values[3]);
		measure->result_type = DatumGetObjectId(values[5]);
		measure->added_in = DatumGetInt32(values[6]);
		measure_input_init(&measure->input, kind_named(TextDatumGetCString(values[1]), !nulls[2]),
						   nulls[4] ? InvalidOid : DatumGetObjectId(values[4]), InvalidOid);
		if (measure->argument != NULL)
			collect_expression_names(measure->argument, &measures->fields);
		if (measure->filter != NULL)
			collect_expression_names(measure->filter, &measures->fields);
		MemoryContextSwitchTo(old);
	}
	SPI_freetuptable(rows);
	return measures;
}
