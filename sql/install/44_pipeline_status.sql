-- What users read of their pipelines: status and dead letters, each row for
-- the roles with the rights of the pipeline's owner.

-- Whether a worker serves a pipeline, and if not, why (src/service.c).
CREATE FUNCTION sessionize.sessionize_pipeline_service(id bigint, state text, failures integer,
														OUT worker_pid integer, OUT waiting_reason text,
														OUT can_run boolean)
AS 'MODULE_PATHNAME', 'pipeline_service'
LANGUAGE C STABLE;
COMMENT ON FUNCTION sessionize.sessionize_pipeline_service(bigint, text, integer) IS
	'the worker of a pipeline, or why it has none; whether it can run as things stand';

-- A role sees the pipelines whose owner's rights it has, and those whose
-- results it reads; security_barrier, so that no function of the reader's
-- sees the rows it may not.
CREATE VIEW sessionize.pipeline_status WITH (security_barrier) AS
SELECT p.name, p.state, p.source_kind,
	   w.worker_pid, w.waiting_reason,
	   s.consumed, s.merged, s.duplicates, s.late, s.dead_lettered, s.batches,
	   b.backlog, b.oldest_waiting_at,
	   s.max_event_time, s.watermark,
	   -- nothing is behind while no event waits; a change of a logical
	   -- source says how long it has waited; otherwise the age of the
	   -- newest event merged is the best that is known
	   CASE WHEN b.backlog OPERATOR(pg_catalog.=) 0 THEN '0'::pg_catalog.interval
			WHEN b.oldest_waiting_at IS NOT NULL
			THEN pg_catalog.now() OPERATOR(pg_catalog.-) b.oldest_waiting_at
			ELSE pg_catalog.now() OPERATOR(pg_catalog.-) s.last_event_time END AS lag,
	   s.last_batch_at, s.last_error, s.last_error_at, s.failures,
	   s.checkpoint_lsn,
	   -- WAL the slot of a logical source keeps from being recycled
	   pg_catalog.pg_wal_lsn_diff(
		   CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
				ELSE pg_catalog.pg_current_wal_lsn() END, r.restart_lsn)::bigint AS retained_wal_bytes,
	   p.owner
FROM sessionize.pipelines p
JOIN sessionize.pipeline_state s ON s.pipeline OPERATOR(pg_catalog.=) p.name
CROSS JOIN LATERAL sessionize.sessionize_pipeline_service(p.id, p.state, s.failures) w
-- a role with the owner's rights, or a reader of the results (grant_reader())
CROSS JOIN LATERAL (SELECT pg_catalog.pg_has_role(p.owner, 'USAGE')
							OR pg_catalog.has_table_privilege(
								pg_catalog.to_regclass(pg_catalog.format('sessionize.%I', p.name OPERATOR(pg_catalog.||) '_sessions')),
								'SELECT') AS may_read) a
-- counted only for the rows the role may read
CROSS JOIN LATERAL sessionize.pipeline_waiting(CASE WHEN a.may_read THEN p.name END) b
LEFT JOIN pg_catalog.pg_replication_slots r
	   ON p.source_kind OPERATOR(pg_catalog.=) 'logical'
	  AND r.slot_name OPERATOR(pg_catalog.=) pg_catalog.format('sessionize_%s_%s',
			(SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),
			p.name)
WHERE a.may_read;
COMMENT ON VIEW sessionize.pipeline_status IS 'one row per pipeline the current role may use or whose results it reads: state, worker or why it waits for one, counts, backlog, watermark, lag, last error';

-- A role sees the dead letters of the pipelines whose owner's rights it has.
CREATE VIEW sessionize.pipeline_dead_letters WITH (security_barrier) AS
SELECT d.id, d.pipeline, d.event, d.error, d.failed_at
FROM sessionize.dead_letter d
JOIN sessionize.pipelines p ON p.name OPERATOR(pg_catalog.=) d.pipeline
WHERE pg_catalog.pg_has_role(p.owner, 'USAGE');
COMMENT ON VIEW sessionize.pipeline_dead_letters IS 'the dead letters of the pipelines the current role may use';
