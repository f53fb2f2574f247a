-- sessionize install script, assembled from sql/install/*.sql in name order.
\echo Use "CREATE EXTENSION sessionize" to load this file. \quit

COMMENT ON SCHEMA sessionize IS 'session windows, event dedup, idempotent slot upserts and pipelines';
