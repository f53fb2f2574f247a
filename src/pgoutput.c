/*-------------------------------------------------------------------------
 *
 * pgoutput.c
 *	  Reading the messages of PostgreSQL's built-in pgoutput plugin, for
 *	  pipelines whose source is a logical replication slot.
 *
 * run_pipeline() peeks a bounded number of changes from the pipeline's slot
 * with pg_logical_slot_peek_binary_changes() and hands every message to
 * these functions: sessionize_pgoutput_message() says what a message is (and
 * for a transaction's BEGIN, the LSN its commit has, which orders the
 * stream), and sessionize_pgoutput_row() turns the new tuple of an INSERT or
 * UPDATE into a row of the source table's type, through each column's input
 * function.  Columns are matched by name to the relation message pgoutput
 * sent for the change, so a column dropped and added again is never misread.
 * Messages are protocol version 1, columns in text form.
 *
 * Messages are read with pqformat's bounds-checked readers, so a truncated or
 * garbled message is an error, never a read past its end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(pgoutput_message);
PG_FUNCTION_INFO_V1(pgoutput_row);
PG_FUNCTION_INFO_V1(pgoutput_row_by_name);
PG_FUNCTION_INFO_V1(pgoutput_problem);
PG_FUNCTION_INFO_V1(pgoutput_commit_time);

/* Wraps a bytea in a StringInfo for the pq_getmsg* readers (read only). */
static void
message_reader(bytea *data, StringInfo reader)
{
	reader->data = VARDATA_ANY(data);
	reader->len = VARSIZE_ANY_EXHDR(data);
	reader->maxlen = reader->len;
	reader->cursor = 0;
}

/*
 * Skips one TupleData, returning its column count and, in *kinds (palloc'd),
 * each column's kind byte: 'n' null, 'u' unchanged TOAST value (not sent),
 * 't' text.
 */
static int
skip_tuple(StringInfo reader, char **kinds)
{
	int			columns = pq_getmsgint(reader, 2);

	*kinds = palloc(Max(columns, 1));
	for (int column = 0; column < columns; column++)
	{
		char		kind = (char) pq_getmsgbyte(reader);

		(*kinds)[column] = kind;
		if (kind == 't' || kind == 'b')
			(void) pq_getmsgbytes(reader, pq_getmsgint(reader, 4));
	}
	return columns;
}

/*
 * Whether the UPDATE message in reader (past its relation) leaves a column
 * out of its new tuple that no old tuple supplies.  PostgreSQL does not log
 * an out-of-line (TOASTed) value that an UPDATE leaves unchanged; only the
 * whole old row, logged under REPLICA IDENTITY FULL, carries it.
 */
static bool
update_misses_values(StringInfo reader)
{
	char		tuple_kind = (char) pq_getmsgbyte(reader);
	char	   *old_kinds = NULL;
	int			old_columns = 0;
	char	   *new_kinds;
	int			new_columns;

	if (tuple_kind == 'K' || tuple_kind == 'O')
	{
		old_columns = skip_tuple(reader, &old_kinds);
		if (tuple_kind == 'K')
			old_columns = 0;	/* key columns only: no help */
		tuple_kind = (char) pq_getmsgbyte(reader);
	}
	if (tuple_kind != 'N')
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("an update message without a new tuple")));
	new_columns = skip_tuple(reader, &new_kinds);
	for (int column = 0; column < new_columns; column++)
		if (new_kinds[column] == 'u' && (column >= old_columns || old_kinds[column] != 't'))
			return true;
	return false;
}

/*
 * What a pgoutput message is: its type byte (B, C, R, I, U, D, T, ...), the
 * relation of an I, U, D or R (else InvalidOid), the commit LSN and time of
 * a B (else InvalidXLogRecPtr and 0), and whether the new row of a U cannot
 * be read whole from the message.
 */
void
sessionize_pgoutput_describe(const char *data, int length, PgoutputMessage *message)
{
	StringInfoData reader;

	reader.data = (char *) data;
	reader.len = length;
	reader.maxlen = length;
	reader.cursor = 0;
	message->kind = (char) pq_getmsgbyte(&reader);
	message->relation = InvalidOid;
	message->commit_lsn = InvalidXLogRecPtr;
	message->commit_time = 0;
	message->missing_values = false;
	switch (message->kind)
	{
		case 'B':
			message->commit_lsn = (XLogRecPtr) pq_getmsgint64(&reader);
			message->commit_time = (TimestampTz) pq_getmsgint64(&reader);
			break;
		case 'I':
		case 'U':
		case 'D':
		case 'R':
			message->relation = (Oid) pq_getmsgint(&reader, 4);
			if (message->kind == 'U')
				message->missing_values = update_misses_values(&reader);
			break;
		default:
			break;
	}
}

/*
 * sessionize_pgoutput_message(data bytea,
 *		OUT kind "char", OUT relation oid, OUT commit_lsn pg_lsn,
 *		OUT missing_values boolean)
 *
 * sessionize_pgoutput_describe() for SQL.
 */
Datum
pgoutput_message(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	PgoutputMessage message;
	TupleDesc	result_desc;
	Datum		values[4];
	bool		nulls[4] = {false};

	if (get_call_result_type(fcinfo, NULL, &result_desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	sessionize_pgoutput_describe(VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), &message);
	values[0] = CharGetDatum(message.kind);
	values[1] = ObjectIdGetDatum(message.relation);
	nulls[1] = !OidIsValid(message.relation);
	values[2] = LSNGetDatum(message.commit_lsn);
	nulls[2] = XLogRecPtrIsInvalid(message.commit_lsn);
	values[3] = BoolGetDatum(message.missing_values);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));
}

/*
 * sessionize_pgoutput_commit_time(data bytea) returns timestamptz
 *
 * When the transaction a BEGIN message opens committed; NULL for any other
 * message.  How long the oldest change a logical pipeline has not taken has
 * waited.
 */
Datum
pgoutput_commit_time(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	PgoutputMessage message;

	sessionize_pgoutput_describe(VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), &message);
	if (message.kind != 'B')
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(message.commit_time);
}

/* How to build rows of one composite type, kept across calls. */
typedef struct RowBuilder
{
	Oid			type_id;
	TupleDesc	desc;
	int			live_columns;	/* columns pgoutput sends: not dropped, not generated */
	int		   *attribute_of;	/* live column i -> attribute index */
	FmgrInfo   *input;			/* per attribute */
	Oid		   *input_param;	/* per attribute */
} RowBuilder;

static RowBuilder *
row_builder(FunctionCallInfo fcinfo, Oid type_id)
{
	RowBuilder *builder = (RowBuilder *) fcinfo->flinfo->fn_extra;
	MemoryContext old_context;
	TupleDesc	cached;
	TupleDesc	desc;

	if (builder != NULL && builder->type_id == type_id)
		return builder;

	old_context = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	cached = lookup_rowtype_tupdesc(type_id, -1);
	desc = CreateTupleDescCopy(cached);
	ReleaseTupleDesc(cached);
	builder = palloc0(sizeof(RowBuilder));
	builder->type_id = type_id;
	builder->desc = desc;
	builder->attribute_of = palloc(sizeof(int) * desc->natts);
	builder->input = palloc0(sizeof(FmgrInfo) * desc->natts);
	builder->input_param = palloc0(sizeof(Oid) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attribute = TupleDescAttr(desc, i);
		Oid			input_function;

		if (attribute->attisdropped || attribute->attgenerated)
			continue;
		builder->attribute_of[builder->live_columns++] = i;
		getTypeInputInfo(attribute->atttypid, &input_function, &builder->input_param[i]);
		fmgr_info_cxt(input_function, &builder->input[i], fcinfo->flinfo->fn_mcxt);
	}
	MemoryContextSwitchTo(old_context);
	fcinfo->flinfo->fn_extra = builder;
	return builder;
}

/*
 * Reads one TupleData into values/nulls of the builder's row type.  Over an
 * old row already read (over_old_row), a column the message leaves out keeps
 * the old row's value; otherwise it is NULL.
 */
static void
read_tuple(StringInfo reader, RowBuilder *builder, const int *attribute_of, int known_columns,
		   Datum *values, bool *nulls, bool over_old_row)
{
	int			columns = pq_getmsgint(reader, 2);

	if (columns > known_columns)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("a logical change has %d columns, the source table %d", columns, builder->live_columns),
				 errdetail("Columns of the source table were dropped after the change was written.")));

	/* columns added after the change was written stay NULL */
	if (!over_old_row)
		for (int i = 0; i < builder->desc->natts; i++)
			nulls[i] = true;

	for (int column = 0; column < columns; column++)
	{
		int			attribute = attribute_of[column];
		char		kind = (char) pq_getmsgbyte(reader);

		switch (kind)
		{
			case 'n':
				nulls[attribute] = true;
				break;
			case 'u':			/* unchanged TOAST value: not sent */
				break;
			case 't':
				{
					int			length = pq_getmsgint(reader, 4);
					char	   *text;

					if (length < 0 || length > reader->len - reader->cursor)
						ereport(ERROR,
								(errcode(ERRCODE_PROTOCOL_VIOLATION),
								 errmsg("invalid column length %d in a logical change", length)));
					text = palloc(length + 1);
					memcpy(text, pq_getmsgbytes(reader, length), length);
					text[length] = '\0';
					values[attribute] = InputFunctionCall(&builder->input[attribute], text,
														  builder->input_param[attribute],
														  TupleDescAttr(builder->desc, attribute)->atttypmod);
					nulls[attribute] = false;
					break;
				}
			default:
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("unexpected column kind 0x%02x in a logical change", (unsigned char) kind),
						 errhint("Changes must be decoded with pgoutput in text form (no binary option).")));
		}
	}
}

/*
 * Matches the columns of a relation message (R) to the attributes of the
 * builder's row type by name.  Returns NULL and fills attribute_of[] (one
 * entry per column of the message) and *columns, or returns why the
 * columns cannot be matched: a column the table no longer has, or has with
 * another type.
 */
static char *
match_columns(bytea *relation, RowBuilder *builder, int **attribute_of, int *columns)
{
	StringInfoData reader;

	message_reader(relation, &reader);
	if ((char) pq_getmsgbyte(&reader) != 'R')
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("a relation message was expected")));
	(void) pq_getmsgint(&reader, 4);	/* relation */
	(void) pq_getmsgstring(&reader);	/* schema */
	(void) pq_getmsgstring(&reader);	/* table */
	(void) pq_getmsgbyte(&reader);	/* replica identity */
	*columns = pq_getmsgint(&reader, 2);
	*attribute_of = palloc(sizeof(int) * Max(*columns, 1));
	for (int column = 0; column < *columns; column++)
	{
		const char *name;
		Oid			type_id;
		int32		type_modifier;
		int			found = -1;

		(void) pq_getmsgbyte(&reader);	/* flags */
		name = pq_getmsgstring(&reader);
		type_id = (Oid) pq_getmsgint(&reader, 4);
		type_modifier = pq_getmsgint(&reader, 4);
		for (int live = 0; live < builder->live_columns; live++)
		{
			Form_pg_attribute attribute = TupleDescAttr(builder->desc, builder->attribute_of[live]);

			if (strcmp(NameStr(attribute->attname), name) == 0)
			{
				found = builder->attribute_of[live];
				if (attribute->atttypid != type_id || attribute->atttypmod != type_modifier)
					return psprintf("column \"%s\" of the change is of type %s, the source table's of type %s",
									name, format_type_extended(type_id, type_modifier, FORMAT_TYPE_ALLOW_INVALID | FORMAT_TYPE_TYPEMOD_GIVEN),
									format_type_with_typemod(attribute->atttypid, attribute->atttypmod));
				break;
			}
		}
		if (found < 0)
			return psprintf("column \"%s\" of the change is not a column of the source table any more", name);
		(*attribute_of)[column] = found;
	}
	return NULL;
}

/*
 * Reads the new tuple of an INSERT or UPDATE message into a row of the
 * builder's type, its columns placed by attribute_of; NULL for any other
 * message.  An unchanged TOAST value of an UPDATE is taken from the old row
 * when the message has it (REPLICA IDENTITY FULL), and is NULL otherwise:
 * run_pipeline() dead-letters such an event, told by
 * sessionize_pgoutput_message().
 */
static HeapTuple
read_change(bytea *data, RowBuilder *builder, const int *attribute_of, int columns)
{
	StringInfoData reader;
	Datum	   *values;
	bool	   *nulls;
	bool		have_old_row = false;
	char		kind;
	char		tuple_kind;

	message_reader(data, &reader);
	kind = (char) pq_getmsgbyte(&reader);
	if (kind != 'I' && kind != 'U')
		return NULL;
	(void) pq_getmsgint(&reader, 4);	/* relation */

	values = palloc(sizeof(Datum) * builder->desc->natts);
	nulls = palloc(sizeof(bool) * builder->desc->natts);

	tuple_kind = (char) pq_getmsgbyte(&reader);
	if (kind == 'U' && tuple_kind == 'O')
	{
		read_tuple(&reader, builder, attribute_of, columns, values, nulls, false);
		have_old_row = true;
		tuple_kind = (char) pq_getmsgbyte(&reader);
	}
	else if (kind == 'U' && tuple_kind == 'K')
	{
		char	   *unused;

		(void) skip_tuple(&reader, &unused);
		tuple_kind = (char) pq_getmsgbyte(&reader);
	}
	if (tuple_kind != 'N')
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("a change message without a new tuple")));

	read_tuple(&reader, builder, attribute_of, columns, values, nulls, have_old_row);
	return heap_form_tuple(builder->desc, values, nulls);
}

static Oid
template_type(FunctionCallInfo fcinfo)
{
	Oid			type_id = get_fn_expr_argtype(fcinfo->flinfo, 1);

	if (!type_is_rowtype(type_id))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("template must be of a row type")));
	return type_id;
}

/*
 * sessionize_pgoutput_row(data bytea, template anyelement) returns anyelement
 *
 * The change as a row of template's type (the source table's row type),
 * its columns taken in the order of the table's columns.  The function of
 * version 0.1.0, kept for its SQL definition until the extension is updated.
 */
Datum
pgoutput_row(PG_FUNCTION_ARGS)
{
	RowBuilder *builder;
	HeapTuple	row;

	(void) template_type(fcinfo);
	/* not STRICT, so that the template may be a NULL of the row type */
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	builder = row_builder(fcinfo, template_type(fcinfo));
	row = read_change(PG_GETARG_BYTEA_PP(0), builder, builder->attribute_of, builder->live_columns);
	if (row == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(HeapTupleGetDatum(row));
}

/*
 * sessionize_pgoutput_row(data bytea, template anyelement, relation bytea)
 * returns anyelement
 *
 * The change as a row of template's type, its columns matched by name to
 * those of relation, the relation message (R) that pgoutput sent for the
 * change; NULL for a message that is not an INSERT or UPDATE, or whose
 * columns cannot be matched (sessionize_pgoutput_problem() says why).
 */
Datum
pgoutput_row_by_name(PG_FUNCTION_ARGS)
{
	RowBuilder *builder;
	int		   *attribute_of;
	int			columns;
	HeapTuple	row;

	(void) template_type(fcinfo);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	builder = row_builder(fcinfo, template_type(fcinfo));
	if (match_columns(PG_GETARG_BYTEA_PP(2), builder, &attribute_of, &columns) != NULL)
		PG_RETURN_NULL();
	row = read_change(PG_GETARG_BYTEA_PP(0), builder, attribute_of, columns);
	if (row == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(HeapTupleGetDatum(row));
}

/*
 * sessionize_pgoutput_problem(data bytea, template anyelement, relation
 * bytea) returns text: why the change cannot be read as a row of template's
 * type, or NULL when it can.
 */
Datum
pgoutput_problem(PG_FUNCTION_ARGS)
{
	RowBuilder *builder;
	int		   *attribute_of;
	int			columns;

	(void) template_type(fcinfo);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(2))
		PG_RETURN_TEXT_P(cstring_to_text("no relation message came before the change: its columns cannot be matched"));
	builder = row_builder(fcinfo, template_type(fcinfo));
	{
		char	   *problem = match_columns(PG_GETARG_BYTEA_PP(2), builder, &attribute_of, &columns);

		if (problem != NULL)
			PG_RETURN_TEXT_P(cstring_to_text(problem));
	}
	PG_RETURN_NULL();
}
