/*-------------------------------------------------------------------------
 *
 * sessionize.h
 *	  Declarations shared by the C files of the sessionize extension.
 *
 * Session semantics live in sessions.c only: every face (window function,
 * aggregate, pipeline) builds on the SessionSet and the stepping helpers
 * declared here, so that batch queries and the pipelines always agree.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SESSIONIZE_H
#define SESSIONIZE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "postmaster/bgworker.h"
#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/uuid.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/*
 * One session, or a piece of one.  The closed range [started_at, expires_at]
 * is the union of [ts, ts + gap] over its events; two pieces belong to the
 * same session exactly when their ranges touch or overlap.
 */
typedef struct SessionInterval
{
	TimestampTz started_at;		/* first event time */
	TimestampTz ended_at;		/* last event time */
	TimestampTz expires_at;		/* greatest ts + gap */
	int64		events;			/* number of events */
} SessionInterval;

/*
 * A set of sessions of one key, built from events in any order.
 *
 * Without max_duration the items are intervals that are coalesced whenever
 * they touch, so the set stays as small as the number of sessions.  With
 * max_duration, where a session's extent depends on where it started, the
 * items are single events kept until the final pass replays them in time
 * order.  The item added last stays in the set itself (newest) until
 * another item or a reader (session_set_compact(), session_set_merge())
 * moves it into the array: readers of items call session_set_compact()
 * first.
 */
typedef struct SessionSet
{
	bool		has_max_duration;	/* max_duration known (set by first row) */
	bool		compact;		/* items sorted and coalesced */
	bool		has_newest;		/* the newest item is below, not in items */
	bool		stream_items;	/* items are written past the cache */
	int32		count;			/* items in use */
	int32		capacity;		/* items allocated */
	int64		max_duration;	/* microseconds; 0 = no limit */
	SessionInterval *items;
	SessionInterval newest;
} SessionSet;

/* sessions.c: argument checks shared by every face */
extern int64 sessionize_interval_usecs(const Interval *value, const char *what);
extern int64 sessionize_gap_value(Datum gap, bool isnull);
extern int64 sessionize_max_duration_value(Datum max_duration, bool isnull, int64 gap);
extern void sessionize_check_event_time(TimestampTz ts);
extern TimestampTz sessionize_add_usecs(TimestampTz ts, int64 usecs);

/* sessions.c: the one place that decides whether an event continues a session */
extern bool session_continues(const SessionInterval *session, TimestampTz ts,
							  int64 max_duration);
extern void session_start_with(SessionInterval *session, TimestampTz ts, int64 gap);
extern void session_extend_with(SessionInterval *session, TimestampTz ts, int64 gap);
extern int64 sessionize_add_events(int64 a, int64 b);

/* sessions.c: sets of sessions built from unordered input */
extern SessionSet *session_set_create(MemoryContext context);
extern void session_set_init(SessionSet *set, MemoryContext context);
extern void session_set_clear(SessionSet *set);
extern void session_set_set_max_duration(SessionSet *set, int64 max_duration);
extern void session_set_add_event(SessionSet *set, TimestampTz ts, int64 gap);
extern void session_set_add_interval(SessionSet *set, const SessionInterval *item);
extern void session_set_merge(SessionSet *into, SessionSet *from);
extern void session_set_compact(SessionSet *set);

/* session_set.c: the stored form of a SessionSet, and aggregate states of it */
extern SessionSet *session_set_read(Datum value);
extern SessionSet *session_set_state(FunctionCallInfo fcinfo, int argno, MemoryContext aggcontext,
									 Datum *datum);
extern SessionInterval *session_set_sessions(SessionSet *set, int32 *count);

/* fingerprint.c: content fingerprints */
typedef enum SessionizeHash
{
	SESSIONIZE_HASH_MD5,
	SESSIONIZE_HASH_SHA256
} SessionizeHash;

#define SESSIONIZE_MAX_DIGEST_LENGTH 32

extern int	sessionize_fingerprint_jsonb(Jsonb *event, const char **exclude,
										 const int *exclude_lengths, int exclude_count,
										 SessionizeHash algorithm, uint8 *digest);

/* dedup.c: the dedup memory */
extern void sessionize_first_seen_many(Datum namespace, const pg_uuid_t *fingerprints,
									   const bool *is_null, int count, Interval *ttl, bool *is_new);

/*
 * A pipeline's batch: the events a source delivered, what becomes of each,
 * and what the pipeline needs to know to merge them (batch.c).  The sinks
 * (sink_sessions.c) read and write the pipeline's tables for it.
 */
typedef enum EventFate
{
	EVENT_PENDING,				/* not decided yet */
	EVENT_MERGED,				/* merged into a session */
	EVENT_DUPLICATE,			/* seen before: dropped */
	EVENT_LATE,					/* set aside in the late table */
	EVENT_DEAD					/* in the dead-letter table */
} EventFate;

typedef struct BatchEvent
{
	int64		position;		/* 1, 2, ... in the order the source gave */
	Datum		key;
	bool		key_null;
	TimestampTz ts;
	bool		ts_null;
	text	   *ts_text;		/* a time still to be read, or NULL */
	text	   *event_type;		/* NULL: none */
	Jsonb	   *event;			/* the event as kept when late or dead */
	pg_uuid_t	fingerprint;
	bool		fingerprint_null;
	char	   *problem;		/* why the source could not use it, or NULL */
	Datum	   *measure_values; /* per measure: the argument's value */
	bool	   *measure_skips;	/* per measure: filtered out, or null */
	EventFate	fate;
	char	   *reason;			/* why late or dead */
} BatchEvent;

/*
 * measures.c: the mergeable states of session measures, shared by the
 * pipelines and the SQL aggregates first, last and approx_count_distinct.
 */
typedef enum MeasureKind
{
	MEASURE_COUNT_ROWS,			/* count(*) */
	MEASURE_COUNT,
	MEASURE_SUM,
	MEASURE_MIN,
	MEASURE_MAX,
	MEASURE_FIRST,
	MEASURE_LAST,
	MEASURE_BOOL_OR,
	MEASURE_BOOL_AND,
	MEASURE_APPROX_COUNT_DISTINCT
} MeasureKind;

typedef struct DistinctSketch DistinctSketch;

/* What adding values of one type to a measure takes. */
typedef struct MeasureInput
{
	MeasureKind kind;
	Oid			type;			/* of the values */
	Oid			collation;
	int16		length;
	bool		byval;
	char		align;
	FmgrInfo	compare;		/* btree order: min, max, first, last */
	FmgrInfo	hash;			/* extended hash: approx_count_distinct */
} MeasureInput;

typedef struct MeasureState
{
	bool		has_value;		/* false: nothing added yet */
	Datum		value;			/* int8 count or sum, numeric sum, bool, or a value */
	TimestampTz at;				/* first, last: the time of the value */
	DistinctSketch *sketch;		/* approx_count_distinct */
} MeasureState;

extern const char *measure_kind_name(MeasureKind kind);
extern Oid	measure_result_type(MeasureKind kind, Oid argument_type);
extern void measure_input_init(MeasureInput *input, MeasureKind kind, Oid type, Oid collation);
extern void measure_add(const MeasureInput *input, MeasureState *state, Datum value, bool isnull,
						TimestampTz at, MemoryContext context);
extern void measure_combine(const MeasureInput *input, MeasureState *state, const MeasureState *other,
							MemoryContext context);
extern Datum measure_result(const MeasureInput *input, const MeasureState *state, bool *isnull);
extern DistinctSketch *distinct_sketch_create(void);
extern void distinct_sketch_add(DistinctSketch *sketch, uint64 hash);
extern void distinct_sketch_merge(DistinctSketch *sketch, const DistinctSketch *other);
extern int64 distinct_sketch_estimate(const DistinctSketch *sketch);
extern bytea *distinct_sketch_serialize(const DistinctSketch *sketch);
extern DistinctSketch *distinct_sketch_deserialize(const bytea *serialized);

/* measure_list.c: a pipeline's measures, as its batches read them */
typedef struct PipelineMeasure
{
	char	   *name;
	char	   *argument;		/* SQL over measure_row; NULL for count(*) */
	char	   *filter;			/* NULL: none */
	Oid			result_type;
	int32		added_in;		/* the measures version that added it */
	MeasureInput input;
} PipelineMeasure;

typedef struct PipelineMeasures
{
	int			count;
	PipelineMeasure *items;
	List	   *fields;			/* payload fields the measures read */
	int32		version;		/* > 0: sessions keep measured_since */
} PipelineMeasures;

extern PipelineMeasures *sessionize_read_measures(const char *pipeline);
extern char *sessionize_measure_row(const char *row, const char *payload_column, List *names);

/*
 * sources.c: the query a batch reads its events with, per kind of source,
 * and what it needs to know of the pipeline to build it.
 */
typedef enum SourceKind
{
	SOURCE_STAGING,				/* $1: how many rows to claim */
	SOURCE_CHANGES,				/* $1: [relation message, change] pairs */
	SOURCE_LATE,				/* $1: late events, as jsonb */
	SOURCE_TABLE				/* a table of past events; $1 unused */
} SourceKind;

typedef struct SourcePipeline
{
	const char *source;			/* the source table, quoted as regclass */
	const char *key_column;
	const char *time_column;
	const char *type_column;	/* NULL: none */
	const char *payload_column; /* NULL: the source's columns */
	const char *time_zone;
	const char *fingerprint_exclude;	/* a text[] literal */
	const char *key_type;		/* of the key in the pipeline's tables */
	bool		time_without_zone;	/* the time column is a timestamp */
	const PipelineMeasures *measures;	/* their arguments and filters */
} SourcePipeline;

extern void sessionize_read_source(SourcePipeline *source, HeapTupleHeader pipeline);
extern char *sessionize_source_query(const SourcePipeline *pipeline, SourceKind kind, bool measured);
extern char *sessionize_measures_query(const SourcePipeline *pipeline);

/* What a batch is given: its source's query and argument, its measures. */
typedef struct BatchSource
{
	const char *query;
	Oid			argument_type;	/* of $1 */
	Datum		argument;
	ArrayType  *incomplete;		/* positions of updates that miss values */
	const PipelineMeasures *measures;
	const char *measures_query; /* NULL without measures */
	const char *measured_query; /* the query that also measures, or NULL */
} BatchSource;

typedef struct PipelineBatch
{
	char	   *name;
	Oid			owner;
	int64		gap;			/* microseconds, days of 24 hours */
	bool		has_watermark;
	TimestampTz watermark;
	bool		replay;			/* late events merged whatever the watermark */
	Interval   *dedup_window;	/* NULL: remembered forever */
	Oid			key_type;
	Oid			key_collation;
	int16		key_length;
	bool		key_byval;
	char		key_align;
	FmgrInfo	key_compare;	/* btree order of keys */
	const PipelineMeasures *measures;
	const char *measures_query;
	char	   *stored_sessions;	/* qualified, quoted names of its tables */
	char	   *late_events;
	char	   *changes;
	int			count;
	BatchEvent *events;
} PipelineBatch;

/* A stored session of a key, as the batch reads it. */
typedef struct StoredSession
{
	ItemPointerData row;
	SessionInterval session;
	Jsonb	   *type_counts;	/* NULL: none */
	int32		revision;
	int32		measured_since; /* measures added later are NULL for it */
	MeasureState *measures;
	bool		touched;		/* an event of the batch reaches it */
} StoredSession;

/* The events of one key in a batch, in time order, and its stored sessions. */
typedef struct KeyGroup
{
	Datum		key;
	BatchEvent **events;
	int			event_count;
	TimestampTz low;			/* earliest event time */
	TimestampTz high;			/* latest event time + gap */
	StoredSession *stored;		/* by start */
	int			stored_count;
} KeyGroup;

/* A session the batch writes, and how it came to be. */
typedef struct MergedSession
{
	Datum		key;
	SessionInterval session;
	Jsonb	   *type_counts;
	int32		revision;
	int32		measured_since; /* the least of what it merges */
	MeasureState *measures;
	int			replaced;		/* stored sessions it replaces */
} MergedSession;

/* batch.c: what a batch did */
typedef struct BatchResult
{
	int64		consumed;
	int64		merged;
	int64		duplicates;
	int64		late;
	int64		dead_lettered;
	bool		has_max_merged;
	TimestampTz max_merged;		/* greatest time merged */
	bool		has_last_ts;
	TimestampTz last_ts;		/* greatest finite time the source gave */
} BatchResult;

extern void sessionize_consume_events(HeapTupleHeader pipeline, bool has_watermark, TimestampTz watermark,
									  bool replay, const BatchSource *source, BatchResult *result);

/* sink_sessions.c: the pipeline's tables, written as one batch */
extern void sink_key_type(const char *pipeline, Oid *type, int32 *typmod, Oid *collation);
extern void sink_read_sessions(PipelineBatch *batch, KeyGroup *groups, int group_count);
extern void sink_write_sessions(PipelineBatch *batch, KeyGroup *groups, int group_count,
								MergedSession *merged, int merged_count);
extern void sink_write_rejects(PipelineBatch *batch, int first, int last);

/* pgoutput.c: what a message of the pgoutput plugin is */
typedef struct PgoutputMessage
{
	char		kind;			/* B, C, R, I, U, D, T, ... */
	Oid			relation;		/* of I, U, D and R */
	XLogRecPtr	commit_lsn;		/* of B */
	TimestampTz commit_time;	/* of B */
	bool		missing_values; /* of U: the new row cannot be read whole */
} PgoutputMessage;

extern void sessionize_pgoutput_describe(const char *data, int length, PgoutputMessage *message);

/*
 * The changes a batch of a logical pipeline takes, streamed by its worker
 * (source_logical.c) or peeked from the slot (pipeline.c).  A checkpoint is
 * the place of the last change applied: (commit LSN, change LSN, row at that
 * LSN), as the rows of one COPY share the LSN of their WAL record.
 */
typedef struct CheckpointPosition
{
	XLogRecPtr	commit_lsn;
	XLogRecPtr	lsn;
	int64		lsn_row;
} CheckpointPosition;

typedef struct TakenChanges
{
	int			taken;
	ArrayType  *messages;		/* [relation message, change] pairs */
	ArrayType  *incomplete;		/* positions of updates that miss values */
	CheckpointPosition last;	/* of the last change taken */
	XLogRecPtr	advance;		/* how far the slot may pass after commit */
	XLogRecPtr	restart_lsn;	/* where decoding the slot starts */
	bool		peek_full;		/* a peek reached its limit */
} TakenChanges;

/* source_logical.c: the decoding stream of a logical pipeline's worker */
extern bool sessionize_stream_changes(HeapTupleHeader pipeline, const char *slot,
									  const CheckpointPosition *checkpoint, XLogRecPtr slot_advance_to,
									  int max_events, TakenChanges *changes);
extern int64 sessionize_worker_pipeline_id;
extern bool sessionize_stream_after_error(void);

/* privileges.c: queries run as a pipeline's owner */
extern int	sessionize_execute_as(Oid role, const char *query, Oid argument_type,
								  Datum argument, bool argument_null);
extern void sessionize_check_columns(TupleDesc found, TupleDesc expected);

/* sessionize.c: settings */
extern char *sessionize_database;
extern int	sessionize_max_workers;
extern int	sessionize_naptime_ms;
extern int	sessionize_batch_size;
extern int	sessionize_worker_turn_ms;

/* sessionize.c: helpers the aggregates and the sinks share */
extern MemoryContext sessionize_aggregate_context(FunctionCallInfo fcinfo, const char *function);
extern Datum sessionize_make_array(Datum *values, bool *nulls, int count, Oid element_type);

/* privileges.c: the locks that keep a pipeline to one worker, a database to one scheduler */
extern bool sessionize_lock_pipeline_worker(int64 pipeline_id);
extern void sessionize_lock_pipeline_batch_of(const char *name);
extern bool sessionize_lock_scheduler(void);

/* launcher.c: the launcher, which starts a scheduler in every database */
extern void sessionize_register_launcher(void);
extern void sessionize_reap_worker(BackgroundWorkerHandle **handle, TimestampTz started_at,
								   int *quick_exits, int longest_ms, TimestampTz *not_before);

/*
 * Behavioral analytics: funnels, retention and sequences (ClickHouse's
 * windowFunnel, retention, sequenceMatch/Count, sequenceNextNode).  Every
 * aggregate keeps the events of its group in one BehaviorState; results are
 * computed over the events sorted by a total order, so that they never depend
 * on input order, batches or parallel workers.
 */
#define BEHAVIOR_MAX_STEPS 32

typedef enum BehaviorKind
{
	BEHAVIOR_FUNNEL = 1,
	BEHAVIOR_RETENTION,
	BEHAVIOR_SEQUENCE,
	BEHAVIOR_NEXT_NODE
} BehaviorKind;

/* window_funnel modes, a set of flags */
#define FUNNEL_STRICT_ORDER			0x01
#define FUNNEL_STRICT_DEDUPLICATION	0x02
#define FUNNEL_STRICT_INCREASE		0x04
#define FUNNEL_STRICT_ONCE			0x08
#define FUNNEL_ALLOW_REENTRY		0x10
#define FUNNEL_ALL_MODES			0x1f

/* sequence_next_node: direction and base, packed in BehaviorState.mode */
#define NEXT_NODE_BACKWARD			0x01
#define NEXT_NODE_BASE_SHIFT		1
typedef enum NextNodeBase
{
	NEXT_NODE_HEAD = 0,
	NEXT_NODE_TAIL,
	NEXT_NODE_FIRST_MATCH,
	NEXT_NODE_LAST_MATCH
} NextNodeBase;

/* One event: its time, and the steps (conditions) it satisfies as bits. */
typedef struct BehaviorEvent
{
	TimestampTz ts;
	uint32		steps;			/* bit i: step i + 1 held */
	uint32		flags;			/* next node: BEHAVIOR_EVENT_BASE */
} BehaviorEvent;

#define BEHAVIOR_EVENT_BASE 0x01

struct SequencePattern;

typedef struct BehaviorState
{
	BehaviorKind kind;
	int			nsteps;			/* 0 until a row tells */
	bool		with_tz;		/* times are timestamptz (else timestamp) */
	uint32		seen;			/* retention: steps that held in any row */
	int64		window;			/* funnel: microseconds */
	uint32		mode;			/* funnel modes, or next node's direction and base */
	char	   *setting;		/* funnel: mode; next node: direction (as given) */
	char	   *setting2;		/* next node: base (as given) */
	char	   *pattern;		/* sequence: the pattern's text */
	struct SequencePattern *parsed; /* sequence: the pattern, parsed */
	bool		sorted;			/* events are in behavior order */
	int			count;
	int			capacity;
	BehaviorEvent *events;
	text	  **values;			/* next node: the value of each event, or NULL */
} BehaviorState;

/* behavior_events.c: the state shared by every behavioral aggregate */
extern BehaviorState *behavior_state_create(MemoryContext context, BehaviorKind kind);
extern void behavior_state_append(BehaviorState *state, TimestampTz ts, uint32 steps,
								  uint32 flags, text *value, MemoryContext context);
extern void behavior_state_combine(BehaviorState *state, const BehaviorState *other,
								   MemoryContext context);
extern void behavior_state_sort(BehaviorState *state);
extern bytea *behavior_state_serialize(const BehaviorState *state);
extern BehaviorState *behavior_state_deserialize(bytea *serialized, BehaviorKind kind,
												 MemoryContext context);

/* funnels.c: window_funnel's modes and chains */
extern uint32 funnel_parse_mode(const char *mode);
extern int64 funnel_window_value(const Interval *window);
extern int	funnel_level(BehaviorState *state, TimestampTz *chain);

/* sequences.c: patterns, their matches, and sequence_next_node */
extern struct SequencePattern *sequence_parse_pattern(const char *pattern, int nconditions,
													  MemoryContext context);
extern int64 sequence_count_matches(BehaviorState *state, bool first_only,
									TimestampTz *times, int *ntimes);
extern int	sequence_pattern_events(const struct SequencePattern *pattern);
extern uint32 next_node_parse(const char *direction, const char *base);
extern int	next_node_index(BehaviorState *state);

/* rollups.c: a pipeline's KPI rollups, moved by each batch */
extern void rollups_write(PipelineBatch *batch, KeyGroup *groups, int group_count,
						  MergedSession *merged, int merged_count);

/*
 * profiles.c: a pipeline's user profiles, per key, day and dimension; each
 * numeric dimension keeps PROFILE_MOMENTS values (n, sx, sxx, min, max).
 */
#define PROFILE_MOMENTS 5

typedef struct ProfileDefinition
{
	char	   *name;
	int			categorical_count;
	char	  **categorical;
	int			numeric_count;
	char	  **numeric;
	text	   *zone;			/* the days' time zone */
	char	   *payload_column; /* NULL: the source's columns */
	char	   *days_table;		/* qualified, quoted */
	char	   *values_table;
	char	   *population_table;
} ProfileDefinition;

extern ProfileDefinition *profile_definitions(const char *pipeline, const char *only, int *count);
extern void profiles_write(PipelineBatch *batch, KeyGroup *groups, int group_count);
extern void profile_moments_combine(double *into, const double *other);
extern DateADT profile_day(text *zone, TimestampTz ts);

#endif							/* SESSIONIZE_H */
