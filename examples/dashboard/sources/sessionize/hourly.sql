-- Sessions per UTC hour they started in, the 7 days up to the latest hour.
SELECT bucket, sessions, users, events, bounced,
       round((100 * bounce_rate)::numeric, 1) AS bounce_rate_pct
FROM sessionize.${pipeline}_kpi_hourly
WHERE bucket > (SELECT max(bucket) FROM sessionize.${pipeline}_kpi_hourly) - interval '7 days'
ORDER BY bucket
