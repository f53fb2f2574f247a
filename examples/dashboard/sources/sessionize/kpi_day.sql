-- The KPIs of the latest UTC day the pipeline has sessions of, as shown:
-- bounce rate in percent, median duration in minutes, one decimal.
SELECT to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
       sessions, users, events,
       round((100 * bounce_rate)::numeric, 1) AS bounce_rate_pct,
       round((p50_duration / 60)::numeric, 1) AS p50_minutes,
       round((p90_duration / 60)::numeric, 1) AS p90_minutes
FROM sessionize.${pipeline}_kpi_daily
ORDER BY bucket DESC
LIMIT 1
