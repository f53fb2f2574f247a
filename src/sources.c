/*-------------------------------------------------------------------------
 *
 * sources.c
 *	  Where a batch's events come from: the query that hands them over, per
 *	  kind of source.
 *
 * A batch reads its events as the rows of one query, run as the pipeline's
 * owner, whose columns batch.c expects in this order:
 *
 *	 (position, key, ts, ts_text, event_type, event, fingerprint, problem)
 *
 * Four sources build that query:
 *
 * - a staging table: its rows are claimed with DELETE ... RETURNING, oldest
 *	 event time first (through the index on the time column, so that a
 *	 backlog never makes its own events late), skipping rows other
 *	 transactions hold; $1 is the number of rows to take;
 * - logical changes: $1 is an array of [relation message, change] pairs of
 *	 pgoutput, decoded into rows of the source table's type;
 * - late events being replayed: $1 is an array of source rows as jsonb;
 * - a table of past events, read whole to rebuild a profile (profiles.c);
 *	 $1 is unused.
 *
 * How an event is read from a row (key, time, type, what is fingerprinted,
 * what makes it a dead letter) is decided once, by event_expressions(), for
 * a table of columns or for a jsonb payload column.  Every identifier is
 * quoted and every literal quoted as a literal; functions and operators the
 * queries call are those of pg_catalog and sessionize (the owner's search
 * path is pinned to pg_catalog, pg_temp while they run).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

static char *measured_from(const SourcePipeline *pipeline, const char *row);

/* SQL expressions that read an event from a row of the source. */
typedef struct EventExpressions
{
	const char *key;
	const char *ts;				/* a timestamptz, or NULL::timestamptz */
	const char *ts_text;		/* a time as text, read when the batch applies */
	const char *event_type;
	const char *content;		/* what is fingerprinted */
	const char *problem;		/* why the row is a dead letter, or NULL */
} EventExpressions;

static const char *
text_attribute(HeapTupleHeader pipeline, const char *name)
{
	bool		isnull;
	Datum		value = GetAttributeByName(pipeline, name, &isnull);

	return isnull ? NULL : TextDatumGetCString(value);
}

static const char *
name_attribute(HeapTupleHeader pipeline, const char *name)
{
	bool		isnull;
	Datum		value = GetAttributeByName(pipeline, name, &isnull);

	return isnull ? NULL : pstrdup(NameStr(*DatumGetName(value)));
}

/* Reads what a source's query needs of a row of sessionize.pipelines. */
void
sessionize_read_source(SourcePipeline *source, HeapTupleHeader pipeline)
{
	bool		isnull;
	const char *name = text_attribute(pipeline, "name");
	Oid			key_type;
	int32		key_typmod;
	Oid			key_collation;
	Oid			relation = DatumGetObjectId(GetAttributeByName(pipeline, "source", &isnull));
	bool		exclude_null;
	Datum		exclude = GetAttributeByName(pipeline, "fingerprint_exclude", &exclude_null);
	Oid			output;
	bool		varlena;

	source->source = DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(relation)));
	source->key_column = name_attribute(pipeline, "key_column");
	source->time_column = name_attribute(pipeline, "time_column");
	source->type_column = name_attribute(pipeline, "type_column");
	source->payload_column = name_attribute(pipeline, "payload_column");
	source->time_zone = text_attribute(pipeline, "time_zone");
	getTypeOutputInfo(TEXTARRAYOID, &output, &varlena);
	source->fingerprint_exclude = exclude_null ? "{}" : OidOutputFunctionCall(output, exclude);
	sink_key_type(name, &key_type, &key_typmod, &key_collation);
	source->key_type = format_type_with_typemod(key_type, key_typmod);
	source->time_without_zone = source->payload_column == NULL &&
		get_atttype(relation, get_attnum(relation, source->time_column)) == TIMESTAMPOID;
}

static const char *
column_of(const char *row, const char *column)
{
	return psprintf("%s.%s", row, quote_identifier(column));
}

/* format()'s %s in a message, with the % of a name escaped */
static const char *
message_literal(const char *format, const char *name)
{
	StringInfoData escaped;

	initStringInfo(&escaped);
	for (const char *c = name; *c != '\0'; c++)
	{
		if (*c == '%')
			appendStringInfoChar(&escaped, '%');
		appendStringInfoChar(&escaped, *c);
	}
	return quote_literal_cstr(psprintf(format, escaped.data));
}

/*
 * The expressions that read an event from row (an SQL expression of the
 * source's row type).  content_of_row is what is fingerprinted for a source
 * of columns: the row as jsonb, named by the query.
 */
static EventExpressions
event_expressions(const SourcePipeline *pipeline, const char *row, const char *content_of_row)
{
	EventExpressions expressions;
	const char *payload;

	if (pipeline->payload_column == NULL)
	{
		const char *ts = column_of(row, pipeline->time_column);

		expressions.key = psprintf("CAST(%s AS %s)", column_of(row, pipeline->key_column), pipeline->key_type);
		/* a timestamp without time zone is a time in the pipeline's zone */
		expressions.ts = pipeline->time_without_zone
			? psprintf("pg_catalog.timezone(%s::pg_catalog.text, %s)", quote_literal_cstr(pipeline->time_zone), ts)
			: ts;
		expressions.ts_text = "NULL::pg_catalog.text";
		expressions.event_type = pipeline->type_column == NULL ? "NULL::pg_catalog.text"
			: psprintf("%s::pg_catalog.text", column_of(row, pipeline->type_column));
		expressions.content = content_of_row;
		expressions.problem = "NULL::pg_catalog.text";
		return expressions;
	}

	payload = column_of(row, pipeline->payload_column);
	expressions.key =
		psprintf("CASE WHEN pg_catalog.jsonb_typeof(%1$s OPERATOR(pg_catalog.->) %2$s::pg_catalog.text)"
				 " OPERATOR(pg_catalog.=) ANY ('{string,number,boolean}'::pg_catalog.text[])"
				 " THEN %1$s OPERATOR(pg_catalog.->>) %2$s::pg_catalog.text END",
				 payload, quote_literal_cstr(pipeline->key_column));
	expressions.ts = "NULL::pg_catalog.timestamptz";
	expressions.ts_text =
		psprintf("CASE WHEN pg_catalog.jsonb_typeof(%1$s OPERATOR(pg_catalog.->) %2$s::pg_catalog.text)"
				 " OPERATOR(pg_catalog.=) 'string'"
				 " THEN %1$s OPERATOR(pg_catalog.->>) %2$s::pg_catalog.text END",
				 payload, quote_literal_cstr(pipeline->time_column));
	expressions.event_type = pipeline->type_column == NULL ? "NULL::pg_catalog.text"
		: psprintf("%s OPERATOR(pg_catalog.->>) %s::pg_catalog.text", payload,
				   quote_literal_cstr(pipeline->type_column));
	expressions.content = payload;
	expressions.problem =
		psprintf("CASE WHEN %1$s IS NULL THEN 'the payload is null'"
				 " WHEN pg_catalog.jsonb_typeof(%1$s) OPERATOR(pg_catalog.<>) 'object'"
				 " THEN pg_catalog.format(%2$s, pg_catalog.jsonb_typeof(%1$s))"
				 " WHEN pg_catalog.jsonb_typeof(%1$s OPERATOR(pg_catalog.->) %3$s::pg_catalog.text)"
				 " OPERATOR(pg_catalog.=) ANY ('{object,array}'::pg_catalog.text[])"
				 " THEN pg_catalog.format(%4$s, pg_catalog.jsonb_typeof(%1$s OPERATOR(pg_catalog.->) %3$s::pg_catalog.text))"
				 " WHEN pg_catalog.jsonb_typeof(%1$s OPERATOR(pg_catalog.->) %5$s::pg_catalog.text)"
				 " OPERATOR(pg_catalog.<>) ALL ('{string,\"null\"}'::pg_catalog.text[])"
				 " THEN pg_catalog.format(%6$s, pg_catalog.jsonb_typeof(%1$s OPERATOR(pg_catalog.->) %5$s::pg_catalog.text))"
				 " END",
				 payload,
				 quote_literal_cstr("the payload is a JSON %s, not an object"),
				 quote_literal_cstr(pipeline->key_column),
				 message_literal("the key field \"%s\" is a JSON %%s, not a string or a number", pipeline->key_column),
				 quote_literal_cstr(pipeline->time_column),
				 message_literal("the time field \"%s\" is a JSON %%s, not a string", pipeline->time_column));
	return expressions;
}

static const char *
fingerprint_of(const SourcePipeline *pipeline, const char *content)
{
	return psprintf("sessionize.fingerprint_bytes(%s, %s::pg_catalog.text[])", content,
					quote_literal_cstr(pipeline->fingerprint_exclude));
}

/*
 * The query a batch reads its events' measures with: $1 is an array of
 * events, each its source row as jsonb, read back into a row of the source
 * (input functions and domain checks run as the owner, as for late events);
 * it returns (position, value_0, filter_0, value_1, ...), the argument and
 * the FILTER condition of each measure.  Apart from the claim, so that an
 * event whose measure fails (a field that is not a number) is a dead letter
 * alone.
 */
char *
sessionize_measures_query(const SourcePipeline *pipeline)
{
	return psprintf("SELECT e.position, measured.*"
					" FROM pg_catalog.unnest($1::pg_catalog.jsonb[]) WITH ORDINALITY AS e(event, position),"
					" LATERAL pg_catalog.jsonb_populate_record(NULL::%s, e.event) r, %s",
					pipeline->source, measured_from(pipeline, "r"));
}

/*
 * "LATERAL (SELECT value_0, filter_0, ...) measured": the argument and the
 * FILTER condition of each measure over the source row row.
 */
static char *
measured_from(const SourcePipeline *pipeline, const char *row)
{
	StringInfoData measured;

	initStringInfo(&measured);
	appendStringInfoString(&measured, "LATERAL (SELECT ");
	for (int m = 0; m < pipeline->measures->count; m++)
	{
		const PipelineMeasure *measure = &pipeline->measures->items[m];

		appendStringInfo(&measured, "%s(%s) AS value_%d, coalesce((%s), false) AS filter_%d", m == 0 ? "" : ", ",
						 measure->argument != NULL ? measure->argument : "NULL::pg_catalog.bool", m,
						 measure->filter != NULL ? measure->filter : "true", m);
	}
	appendStringInfo(&measured, " FROM %s) measured",
					 sessionize_measure_row(row, pipeline->payload_column, pipeline->measures->fields));
	return measured.data;
}

/*
 * The query a batch reads its events with, for a source of the given kind;
 * what $1 is depends on the kind (see the head of this file).  With
 * measured, a staging table's claim also returns the measures' arguments
 * and FILTER conditions, as sessionize_measures_query() does: one pass over
 * the rows, but an error of one event's measure fails the claim (the batch
 * then claims again without them); NULL for the other kinds.
 */
char *
sessionize_source_query(const SourcePipeline *pipeline, SourceKind kind, bool measured)
{
	EventExpressions read;

	if (measured && (kind != SOURCE_STAGING || pipeline->measures->count == 0))
		return NULL;
	switch (kind)
	{
		case SOURCE_STAGING:
			read = event_expressions(pipeline, "c", "e.event");
			return psprintf("WITH claimed AS ("
							" DELETE FROM ONLY %1$s s"
							" WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT ctid FROM ONLY %1$s%2$s"
							" LIMIT $1 FOR UPDATE SKIP LOCKED))"
							" RETURNING s.*)"
							" SELECT pg_catalog.row_number() OVER (), %3$s, %4$s, %5$s, %6$s, e.event, %7$s, %8$s%9$s"
							" FROM claimed c, LATERAL (SELECT pg_catalog.to_jsonb(c) AS event) e%10$s",
							pipeline->source,
							pipeline->payload_column == NULL
							? psprintf(" ORDER BY %s", quote_identifier(pipeline->time_column)) : "",
							read.key, read.ts, read.ts_text, read.event_type,
							fingerprint_of(pipeline, read.content), read.problem,
							measured ? ", measured.*" : "",
							measured ? psprintf(", %s", measured_from(pipeline, "c")) : "");
		case SOURCE_CHANGES:
			/*
			 * The pairs are read by unnest: a subscript into an array of
			 * variable-length values walks it from its start.
			 */
			read = event_expressions(pipeline, "(d.r)", "e.event");
			return psprintf("SELECT m.position::pg_catalog.int8, %2$s, %3$s, %4$s, %5$s, e.event, %6$s,"
							" coalesce(d.problem, %7$s)"
							" FROM (SELECT u.position OPERATOR(pg_catalog./) 2 AS position, u.relation, u.change"
							" FROM (SELECT u.change, u.position,"
							" pg_catalog.lag(u.change) OVER (ORDER BY u.position) AS relation"
							" FROM pg_catalog.unnest($1::pg_catalog.bytea[]) WITH ORDINALITY AS u(change, position)) u"
							" WHERE u.position OPERATOR(pg_catalog.%%) 2 OPERATOR(pg_catalog.=) 0) m,"
							" LATERAL (SELECT sessionize.sessionize_pgoutput_row(m.change, NULL::%1$s, m.relation) AS r,"
							" sessionize.sessionize_pgoutput_problem(m.change, NULL::%1$s, m.relation) AS problem"
							" OFFSET 0) d,"
							" LATERAL (SELECT coalesce(pg_catalog.to_jsonb(d.r),"
							" pg_catalog.jsonb_build_object('undecodable_change',"
							" pg_catalog.encode(m.change, 'base64'))) AS event) e",
							pipeline->source, read.key, read.ts, read.ts_text, read.event_type,
							fingerprint_of(pipeline, read.content), read.problem);
		case SOURCE_TABLE:
			read = event_expressions(pipeline, "r", "e.event");
			return psprintf("SELECT pg_catalog.row_number() OVER (), %2$s, %3$s, %4$s, %5$s, e.event, %6$s, %7$s"
							" FROM %1$s r, LATERAL (SELECT pg_catalog.to_jsonb(r) AS event) e",
							pipeline->source, read.key, read.ts, read.ts_text, read.event_type,
							fingerprint_of(pipeline, read.content), read.problem);
		case SOURCE_LATE:
			/* input functions and domain checks run as the owner */
			read = event_expressions(pipeline, "r", "e.event");
			return psprintf("SELECT e.position, %2$s, %3$s, %4$s, %5$s, e.event, NULL::pg_catalog.uuid, %6$s"
							" FROM pg_catalog.unnest($1::pg_catalog.jsonb[]) WITH ORDINALITY AS e(event, position),"
							" LATERAL pg_catalog.jsonb_populate_record(NULL::%1$s, e.event) r",
							pipeline->source, read.key, read.ts, read.ts_text, read.event_type, read.problem);
	}
	elog(ERROR, "unknown kind of source %d", (int) kind);
	return NULL;
}
