-- Totals of the 90 days up to the latest: sums of the daily rollups.
SELECT sum(sessions) AS sessions, sum(events) AS events,
       round(100 * sum(bounced) / sum(sessions), 1) AS bounce_rate_pct,
       count(*) AS days
FROM sessionize.${pipeline}_kpi_daily
WHERE bucket > (SELECT max(bucket) FROM sessionize.${pipeline}_kpi_daily) - interval '90 days'
