/*-------------------------------------------------------------------------
 *
 * source_logical.c
 *	  A logical source, streamed: the worker of a logical pipeline keeps one
 *	  decoding context open across its batches.
 *
 * run_pipeline() called by hand or by pg_cron peeks its changes from the
 * slot with pg_logical_slot_peek_binary_changes(), which decodes from the
 * slot's restart point every time: a source transaction larger than a
 * batch is decoded again for each batch that takes a part of it.  The
 * pipeline's worker instead decodes the WAL once, the way a walsender does,
 * with a decoding context that lives as long as the worker:
 *
 * - pgoutput's messages for the source table's inserts (and updates, when
 *	 they are events) go into a queue, a temporary file that outlives
 *	 transactions, so that the memory a large transaction needs is bounded;
 *	 the relation messages they need are kept beside it;
 * - a batch takes the next changes from the queue; the queue forgets them
 *	 only when the batch's transaction commits, and an abort leaves them
 *	 queued for the next batch;
 * - the slot holds its position as before: a batch records in its
 *	 transaction how far the slot may pass (slot_advance_to), and the next
 *	 batch confirms that position to the slot, so a crash between a commit
 *	 and the confirmation decodes again what the checkpoint then skips;
 * - the slot is acquired only while a batch decodes, so a run_pipeline() by
 *	 hand between two batches of the worker still works.
 *
 * After an error, and whenever the pipeline's definition changes, the stream
 * is thrown away and decoding starts again from the slot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "storage/buffile.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"

#include "sessionize.h"


/* Set by a pipeline worker: the pipeline it serves. */
int64		sessionize_worker_pipeline_id = 0;

/* The head of a change in the queue; its message follows. */
typedef struct QueuedChange
{
	XLogRecPtr	commit_lsn;		/* of its transaction */
	XLogRecPtr	lsn;			/* of the change */
	int64		lsn_row;		/* rows of one COPY share an LSN */
	XLogRecPtr	end_lsn;		/* of its transaction's commit record */
	int32		relation_version;	/* its relation message; -1 none */
	bool		missing_values;
	uint32		length;
} QueuedChange;

/* A place in the queue file. */
typedef struct QueuePosition
{
	int			file;
	off_t		offset;
	int64		count;			/* changes before it */
} QueuePosition;

typedef struct LogicalStream
{
	int64		pipeline_id;
	Oid			source;
	bool		updates_as_events;
	MemoryContext context;		/* the stream's, and the WAL reader's */
	MemoryContext message_context;	/* reset for each message */
	LogicalDecodingContext *decoding;
	bool		decoding_now;	/* an error now leaves the context unusable */
	BufFile    *queue;
	QueuePosition written;		/* the end of the queue */
	QueuePosition read;			/* what committed batches took */
	QueuePosition taking;		/* what the batch in progress takes */
	bool		taking_pending;
	XLogRecPtr	commit_lsn;		/* of the transaction being decoded */
	XLogRecPtr	last_commit_lsn;	/* of the change queued last */
	XLogRecPtr	last_lsn;
	int64		lsn_row;
	List	   *relations;		/* bytea relation messages, by version */
} LogicalStream;

static LogicalStream *stream = NULL;
static bool callback_registered = false;

/* Ends the stream; the caller holds the slot (the plugin's shutdown needs it). */
static void
free_stream(void)
{
	if (stream == NULL)
		return;
	FreeDecodingContext(stream->decoding);
	if (stream->queue != NULL)
		BufFileClose(stream->queue);
	MemoryContextDelete(stream->context);
	stream = NULL;
}

/* A committed batch's changes leave the queue; an aborted one's stay. */
static void
stream_transaction_end(XactEvent event, void *argument)
{
	if (stream == NULL || !stream->taking_pending)
		return;
	if (event == XACT_EVENT_COMMIT)
		stream->read = stream->taking;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		stream->taking_pending = false;
}

/*
 * After a failed batch (the transaction is aborted): the slot goes back.
 * Returns false when the stream failed while decoding: the decoding state
 * (of the plugin too) cannot be trusted, and only a new process has none.
 */
bool
sessionize_stream_after_error(void)
{
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	return stream == NULL || !stream->decoding_now;
}

static void
write_queue(void *data, size_t length)
{
	BufFileWrite(stream->queue, data, length);
}

static void
read_queue(void *data, size_t length)
{
	if (BufFileRead(stream->queue, data, length) != length)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the change queue of a logical pipeline")));
}

static void
stream_prepare_write(LogicalDecodingContext *context, XLogRecPtr lsn, TransactionId xid, bool last_write)
{
	resetStringInfo(context->out);
}

/* Keeps what the batches need of each message pgoutput writes. */
static void
stream_write(LogicalDecodingContext *context, XLogRecPtr lsn, TransactionId xid, bool last_write)
{
	PgoutputMessage message;
	QueuedChange change;
	MemoryContext old_context = MemoryContextSwitchTo(stream->message_context);

	MemoryContextReset(stream->message_context);
	sessionize_pgoutput_describe(context->out->data, context->out->len, &message);
	MemoryContextSwitchTo(old_context);
	switch (message.kind)
	{
		case 'B':
			stream->commit_lsn = message.commit_lsn;
			return;
		case 'R':
			if (message.relation == stream->source)
			{
				MemoryContext old_context = MemoryContextSwitchTo(stream->context);
				bytea	   *relation = palloc(VARHDRSZ + context->out->len);

				SET_VARSIZE(relation, VARHDRSZ + context->out->len);
				memcpy(VARDATA(relation), context->out->data, context->out->len);
				stream->relations = lappend(stream->relations, relation);
				MemoryContextSwitchTo(old_context);
			}
			return;
		case 'I':
		case 'U':
			if (message.relation != stream->source || (message.kind == 'U' && !stream->updates_as_events))
				return;
			break;
		default:
			return;
	}

	change.commit_lsn = stream->commit_lsn;
	change.lsn = lsn;
	/* a change's place is (commit LSN, LSN, row): the rows of a COPY share an LSN */
	if (stream->commit_lsn == stream->last_commit_lsn && lsn == stream->last_lsn)
		change.lsn_row = ++stream->lsn_row;
	else
		change.lsn_row = stream->lsn_row = 1;
	stream->last_commit_lsn = stream->commit_lsn;
	stream->last_lsn = lsn;
	change.end_lsn = context->reader->EndRecPtr;
	change.relation_version = list_length(stream->relations) - 1;
	change.missing_values = message.missing_values;
	change.length = context->out->len;
	BufFileSeek(stream->queue, stream->written.file, stream->written.offset, SEEK_SET);
	write_queue(&change, sizeof(change));
	write_queue(context->out->data, context->out->len);
	BufFileTell(stream->queue, &stream->written.file, &stream->written.offset);
	stream->written.count++;
}

/*
 * Empties the queue file once every change in it is taken; the relation
 * message the next changes refer to is kept.
 */
static void
restart_queue(void)
{
	MemoryContext old_context = MemoryContextSwitchTo(stream->context);
	List	   *latest = stream->relations == NIL ? NIL : list_make1(llast(stream->relations));

	BufFileClose(stream->queue);
	stream->queue = BufFileCreateTemp(true);
	memset(&stream->written, 0, sizeof(QueuePosition));
	memset(&stream->read, 0, sizeof(QueuePosition));
	list_free(stream->relations);
	stream->relations = latest;
	MemoryContextSwitchTo(old_context);
}

/* Makes the stream of a pipeline, decoding from its slot's restart point. */
static void
open_stream(int64 pipeline_id, Oid source, bool updates_as_events)
{
	MemoryContext context = AllocSetContextCreate(TopMemoryContext, "sessionize logical stream",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old_context = MemoryContextSwitchTo(context);
	List	   *options;

	if (!callback_registered)
	{
		RegisterXactCallback(stream_transaction_end, NULL);
		callback_registered = true;
	}
	stream = palloc0(sizeof(LogicalStream));
	stream->pipeline_id = pipeline_id;
	stream->source = source;
	stream->updates_as_events = updates_as_events;
	stream->context = context;
	stream->message_context = AllocSetContextCreate(context, "sessionize logical message", ALLOCSET_SMALL_SIZES);
	stream->queue = BufFileCreateTemp(true);
	options = list_make2(makeDefElem("proto_version", (Node *) makeString("1"), -1),
						 makeDefElem("publication_names",
									 (Node *) makeString("sessionize_pipelines,sessionize_pipeline_updates"), -1));
	stream->decoding = CreateDecodingContext(InvalidXLogRecPtr, options, false,
											 XL_ROUTINE(.page_read = read_local_xlog_page,
														.segment_open = wal_segment_open,
														.segment_close = wal_segment_close),
											 stream_prepare_write, stream_write, NULL);
	XLogBeginRead(stream->decoding->reader, MyReplicationSlot->data.restart_lsn);
	MemoryContextSwitchTo(old_context);
}

/* Decodes the WAL flushed now until the queue holds wanted changes. */
static void
decode(int64 wanted)
{
	XLogRecPtr	end_of_wal = GetFlushRecPtr(NULL);
	LogicalDecodingContext *decoding = stream->decoding;
	/* the reader allocates what it keeps from one record to the next */
	MemoryContext old_context = MemoryContextSwitchTo(stream->context);

	stream->decoding_now = true;
	InvalidateSystemCaches();
	while (decoding->reader->EndRecPtr < end_of_wal &&
		   stream->written.count - stream->read.count < wanted)
	{
		char	   *error = NULL;
		XLogRecord *record = XLogReadRecord(decoding->reader, &error);

		if (error != NULL)
			elog(ERROR, "could not find record for logical decoding: %s", error);
		if (record != NULL)
			LogicalDecodingProcessRecord(decoding, decoding->reader);
		CHECK_FOR_INTERRUPTS();
	}
	InvalidateSystemCaches();
	stream->decoding_now = false;
	MemoryContextSwitchTo(old_context);
}

static bool
after_checkpoint(const QueuedChange *change, const CheckpointPosition *checkpoint)
{
	if (change->commit_lsn != checkpoint->commit_lsn)
		return change->commit_lsn > checkpoint->commit_lsn;
	if (change->lsn != checkpoint->lsn)
		return change->lsn > checkpoint->lsn;
	return change->lsn_row > checkpoint->lsn_row;
}

/*
 * In the worker of a logical pipeline: confirms slot_advance_to to the slot,
 * decodes what is new, and gives the next changes after the checkpoint as
 * run_pipeline() reads them ([relation message, change] pairs; the positions
 * of updates that miss values), the place of the last one, and how far the
 * slot may pass once this batch commits.  Anywhere else returns false, and
 * run_pipeline() peeks from the slot instead.
 */
bool
sessionize_stream_changes(HeapTupleHeader pipeline, const char *slot, const CheckpointPosition *checkpoint,
						  XLogRecPtr slot_advance_to, int max_events, TakenChanges *changes)
{
	int64		pipeline_id;
	Oid			source;
	bool		updates_as_events;
	bool		isnull;
	Datum	   *messages;
	bool	   *message_nulls;
	Datum	   *incomplete;
	int			taken = 0;
	int			incomplete_count = 0;
	QueuedChange last = {0};
	XLogRecPtr	advance = InvalidXLogRecPtr;

	pipeline_id = DatumGetInt64(GetAttributeByName(pipeline, "id", &isnull));
	if (MyBgworkerEntry == NULL || pipeline_id != sessionize_worker_pipeline_id)
		return false;

	source = DatumGetObjectId(GetAttributeByName(pipeline, "source", &isnull));
	updates_as_events = DatumGetBool(GetAttributeByName(pipeline, "updates_as_events", &isnull));

	CheckLogicalDecodingRequirements();
	ReplicationSlotAcquire(slot, true);
	if (slot_advance_to > MyReplicationSlot->data.confirmed_flush)
	{
		/* the batches before this one are committed: the slot may pass them */
		LogicalConfirmReceivedLocation(slot_advance_to);
		ReplicationSlotMarkDirty();
	}
	if (stream != NULL && (stream->pipeline_id != pipeline_id || stream->source != source ||
						   stream->updates_as_events != updates_as_events))
		free_stream();
	if (stream != NULL && stream->read.count == stream->written.count && stream->written.count > 0)
		restart_queue();
	if (stream == NULL)
		open_stream(pipeline_id, source, updates_as_events);
	else
	{
		/* what CreateDecodingContext() does for a slot acquired anew */
		LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
		MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
		ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
		LWLockRelease(ProcArrayLock);
	}
	decode(max_events);
	changes->restart_lsn = MyReplicationSlot->data.restart_lsn;
	ReplicationSlotRelease();

	/* take the next changes after the checkpoint */
	messages = palloc(sizeof(Datum) * 2 * max_events);
	message_nulls = palloc0(sizeof(bool) * 2 * max_events);
	incomplete = palloc(sizeof(Datum) * max_events);
	stream->taking = stream->read;
	BufFileSeek(stream->queue, stream->read.file, stream->read.offset, SEEK_SET);
	while (taken < max_events && stream->taking.count < stream->written.count)
	{
		QueuedChange change;
		bytea	   *data;

		read_queue(&change, sizeof(change));
		if (stream->taking.count > stream->read.count && change.end_lsn != last.end_lsn)
			advance = last.end_lsn; /* the transaction before it is taken whole */
		data = palloc(VARHDRSZ + change.length);
		SET_VARSIZE(data, VARHDRSZ + change.length);
		read_queue(VARDATA(data), change.length);
		BufFileTell(stream->queue, &stream->taking.file, &stream->taking.offset);
		stream->taking.count++;
		last = change;
		if (!after_checkpoint(&change, checkpoint))
			continue;
		if (change.relation_version >= 0)
			messages[2 * taken] = PointerGetDatum(list_nth(stream->relations, change.relation_version));
		else
			message_nulls[2 * taken] = true;
		messages[2 * taken + 1] = PointerGetDatum(data);
		taken++;
		if (change.missing_values)
			incomplete[incomplete_count++] = Int64GetDatum(taken);
		changes->last.commit_lsn = change.commit_lsn;
		changes->last.lsn = change.lsn;
		changes->last.lsn_row = change.lsn_row;
	}
	if (stream->taking.count == stream->written.count)
	{
		/* everything decoded is taken: the slot may pass all of it */
		advance = stream->decoding->reader->EndRecPtr;
	}
	else if (stream->taking.count > stream->read.count)
	{
		QueuedChange next;

		read_queue(&next, sizeof(next));
		if (next.end_lsn != last.end_lsn)
			advance = last.end_lsn;
	}
	stream->taking_pending = true;

	changes->peek_full = false;
	changes->taken = taken;
	if (taken > 0)
	{
		int			dimensions[2] = {taken, 2};
		int			lower_bounds[2] = {1, 1};

		changes->messages = construct_md_array(messages, message_nulls, 2, dimensions, lower_bounds,
											   BYTEAOID, -1, false, TYPALIGN_INT);
	}
	if (incomplete_count > 0)
		changes->incomplete = construct_array(incomplete, incomplete_count, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	changes->advance = advance;
	return true;
}
