-- How fresh the results are, when the dashboard's data was read.  Times in
-- UTC; the backlog is what waits in the staging table.
SELECT name, state, coalesce(waiting_reason, 'a worker runs it') AS waiting_reason,
       consumed, merged, duplicates, late, dead_lettered, backlog, batches,
       to_char(last_batch_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS last_batch_at,
       to_char(watermark AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS watermark,
       to_char(max_event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS max_event_time,
       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS read_at
FROM sessionize.pipeline_status
WHERE name = '${pipeline}'
