-- Events per type (the pipeline's type column) and UTC day, over the 90 days
-- up to the latest; no rows for a pipeline without a type column.
SELECT d.bucket, t.type, t.events::bigint AS events
FROM sessionize.${pipeline}_kpi_daily d,
     jsonb_each_text(coalesce(to_jsonb(d) -> 'type_counts', '{}')) AS t(type, events)
WHERE d.bucket > (SELECT max(bucket) FROM sessionize.${pipeline}_kpi_daily) - interval '90 days'
ORDER BY d.bucket, t.type
