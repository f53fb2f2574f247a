-- sessionize: the changes run_pipeline() peeks from a logical source's slot
-- when it runs outside the pipeline's worker.

-- The next changes of a logical source after its checkpoint, peeked from
-- its slot: what run_pipeline() takes anywhere but in the pipeline's worker,
-- which streams them (src/source_logical.c).  Each peek decodes from the
-- slot's restart point (the slot does not move), up to the WAL flushed now
-- and a bounded number of changes; pgoutput sends whole transactions in
-- commit order, so (commit LSN, change LSN, row at that LSN) orders the
-- stream, and a large transaction is taken over several batches.  Returns
-- [relation message, change] pairs, the positions of updates that miss
-- values, the place of the last change taken, and how far the slot may pass
-- once the batch commits: past every transaction whose changes are all
-- taken, or past all the WAL peeked when the peek reached its end and left
-- nothing.
CREATE FUNCTION sessionize.sessionize_peek_changes(pipeline sessionize.pipelines, slot name,
												   slot_advance_to pg_lsn, checkpoint_commit_lsn pg_lsn,
												   checkpoint_lsn pg_lsn, checkpoint_lsn_row bigint,
												   max_events integer,
												   OUT messages bytea[], OUT incomplete bigint[],
												   OUT commit_lsn pg_lsn, OUT lsn pg_lsn, OUT lsn_row bigint,
												   OUT advance pg_lsn, OUT restart_lsn pg_lsn, OUT peek_full boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	peek_end pg_lsn;
	peek_limit bigint := 3 * max_events::bigint + 3;
	peeked bigint;
	taken_count bigint;
BEGIN
	-- Only now that earlier batches are committed may the slot pass them.
	PERFORM pg_replication_slot_advance(s.slot_name, slot_advance_to) FROM pg_replication_slots s
	WHERE s.slot_name = slot AND s.confirmed_flush_lsn < slot_advance_to;
	SELECT s.restart_lsn INTO restart_lsn FROM pg_replication_slots s WHERE s.slot_name = slot;
	peek_end := pg_current_wal_flush_lsn();
	-- Changes the slot still holds but the checkpoint has passed can fill a
	-- peek (its restart point lags behind what earlier batches took): peek
	-- further until the batch is full or the WAL flushed now is reached.
	LOOP
		WITH peeked AS (
			SELECT p.position, p.lsn, p.data, m.kind, m.relation, m.missing_values,
				   max(m.commit_lsn) OVER (ORDER BY p.position) AS commit_lsn,
				   -- the relation message that gives the change its columns
				   max(p.position) FILTER (WHERE m.kind = 'R' AND m.relation = pipeline.source::oid)
					   OVER (ORDER BY p.position) AS relation_position
			FROM pg_logical_slot_peek_binary_changes(slot, peek_end, least(peek_limit, 2147483647)::integer,
													 'proto_version', '1',
													 'publication_names', 'sessionize_pipelines,sessionize_pipeline_updates')
				 WITH ORDINALITY AS p(lsn, xid, data, position),
				 sessionize.sessionize_pgoutput_message(p.data) m),
		relevant AS (
			SELECT *, row_number() OVER (PARTITION BY peeked.commit_lsn, peeked.lsn ORDER BY position) AS lsn_row
			FROM peeked
			WHERE relation = pipeline.source::oid AND (kind = 'I' OR (kind = 'U' AND pipeline.updates_as_events))),
		pending AS (
			SELECT * FROM relevant r
			WHERE (r.commit_lsn, r.lsn, r.lsn_row) > (coalesce(checkpoint_commit_lsn, '0/0'),
													  coalesce(checkpoint_lsn, '0/0'),
													  coalesce(checkpoint_lsn_row, 0))),
		taken AS (
			SELECT *, row_number() OVER (ORDER BY position) AS taken_row FROM pending ORDER BY position LIMIT max_events),
		last_taken AS (
			SELECT t.commit_lsn, t.lsn, t.lsn_row FROM taken t ORDER BY position DESC LIMIT 1),
		first_left AS (
			SELECT min(p.commit_lsn) AS commit_lsn FROM pending p
			WHERE position > coalesce((SELECT max(position) FROM taken), 0))
		SELECT (SELECT array_agg(ARRAY[r.data, t.data] ORDER BY t.position)
				FROM taken t LEFT JOIN peeked r ON r.position = t.relation_position),
			   (SELECT array_agg(t.taken_row ORDER BY t.position) FILTER (WHERE t.missing_values) FROM taken t),
			   (SELECT l.commit_lsn FROM last_taken l),
			   (SELECT l.lsn FROM last_taken l),
			   (SELECT l.lsn_row FROM last_taken l),
			   (SELECT count(*) FROM peeked),
			   CASE WHEN (SELECT count(*) FROM peeked) < peek_limit AND (SELECT f.commit_lsn FROM first_left f) IS NULL
					THEN peek_end
					ELSE (SELECT max(p.lsn) FROM peeked p, first_left f
						  WHERE p.kind = 'C' AND (f.commit_lsn IS NULL OR p.commit_lsn < f.commit_lsn)) END,
			   (SELECT count(*) FROM taken)
		INTO messages, incomplete, commit_lsn, lsn, lsn_row, peeked, advance, taken_count;
		peek_full := peeked >= peek_limit;
		EXIT WHEN NOT peek_full OR taken_count >= max_events OR peek_limit >= 2147483647;
		peek_limit := least(peek_limit * 4, 2147483647);
	END LOOP;
END $$;
