/*-------------------------------------------------------------------------
 *
 * extension_drop.c
 *	  DROP EXTENSION sessionize leaves nothing behind, or is refused.
 *
 * A pipeline's tables, its replication slot and the two publications of
 * logical sources are not members of the extension: pg_dump must dump the
 * tables, and a slot or a publication cannot belong to an extension.  So
 * an event trigger of the extension, run before DROP EXTENSION and DROP
 * SCHEMA, refuses to drop sessionize while pipelines exist (naming
 * drop_pipeline(), which drops all of a pipeline), and otherwise drops the
 * publications, the last thing sessionize made that the drop would leave.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "sessionize.h"

PG_FUNCTION_INFO_V1(guard_extension_drop);

/* Whether a DROP statement drops the extension sessionize or its schema. */
static bool
drops_sessionize(DropStmt *drop)
{
	ListCell   *cell;

	if (drop->removeType != OBJECT_EXTENSION && drop->removeType != OBJECT_SCHEMA)
		return false;
	foreach(cell, drop->objects)
	{
		Node	   *object = lfirst(cell);

		if (IsA(object, String) && strcmp(strVal(object), "sessionize") == 0)
			return true;
	}
	return false;
}

/* guard_extension_drop() returns event_trigger */
Datum
guard_extension_drop(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigger = (EventTriggerData *) fcinfo->context;
	bool		isnull;
	int64		pipelines;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("guard_extension_drop() must be called as an event trigger")));
	if (!IsA(trigger->parsetree, DropStmt) || !drops_sessionize((DropStmt *) trigger->parsetree))
		PG_RETURN_NULL();
	if (!OidIsValid(get_relname_relid("pipelines", get_namespace_oid("sessionize", true))))
		PG_RETURN_NULL();

	SPI_connect();

	/*
	 * A role that may not drop sessionize gets the error of the DROP itself,
	 * and learns nothing of the pipelines here.
	 */
	if (SPI_execute("SELECT pg_catalog.pg_has_role(e.extowner, 'USAGE') FROM pg_catalog.pg_extension e"
					" WHERE e.extname OPERATOR(pg_catalog.=) 'sessionize'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the owner of sessionize");
	if (SPI_processed != 1 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	if (SPI_execute("SELECT pg_catalog.count(*) FROM sessionize.pipelines", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the pipelines of sessionize");
	pipelines = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (pipelines > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop sessionize while it has " INT64_FORMAT " pipeline%s", pipelines,
						pipelines == 1 ? "" : "s"),
				 errdetail("A pipeline's tables, replication slot and publication would be left behind."),
				 errhint("Drop the pipelines first: SELECT sessionize.drop_pipeline(name) FROM sessionize.pipelines;")));
	if (SPI_execute("DROP PUBLICATION IF EXISTS sessionize_pipelines, sessionize_pipeline_updates", false, 0) !=
		SPI_OK_UTILITY)
		elog(ERROR, "could not drop the publications of sessionize");
	SPI_finish();
	PG_RETURN_NULL();
}
