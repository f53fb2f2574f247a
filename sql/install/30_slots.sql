-- Idempotent multi-slot upserts.  A slot table keeps each contributing message
-- in its own slot (slot key and value), ordered by slot key, plus a computed
-- total, so re-delivered or reordered messages can never count twice.  The
-- slot logic is in src/slots.c; this file creates the tables it works on.

CREATE TABLE sessionize.slot_tables (
	table_id regclass PRIMARY KEY,
	overflow_table regclass NOT NULL,
	conflicts_table regclass NOT NULL,
	key_columns name[] NOT NULL,
	slot_key_name name NOT NULL,
	value_name name NOT NULL,
	slots integer NOT NULL CHECK (slots >= 1),
	combine text NOT NULL CHECK (combine IN ('sum', 'min', 'max', 'last')),
	on_conflict text NOT NULL CHECK (on_conflict IN ('error', 'record'))
);
COMMENT ON TABLE sessionize.slot_tables IS 'the slot tables made by create_slot_table() and their shape';
SELECT pg_catalog.pg_extension_config_dump('sessionize.slot_tables', '');
-- slot_upsert() reads it as its caller; only create_slot_table() writes it
GRANT SELECT ON sessionize.slot_tables TO PUBLIC;

CREATE FUNCTION sessionize.sessionize_check_combine(value_type regtype, combine text)
RETURNS void
AS 'MODULE_PATHNAME', 'slot_check_combine'
LANGUAGE C STABLE STRICT;

CREATE FUNCTION sessionize.slot_upsert(target regclass, key "any", slot_key "any", value "any")
RETURNS text
AS 'MODULE_PATHNAME', 'slot_upsert'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION sessionize.slot_upsert(regclass, "any", "any", "any") IS
	'applies one message to a slot table: added, unchanged (a re-delivery) or conflict; key is a value or a ROW() of values';

CREATE FUNCTION sessionize.slot_upsert_many(target regclass, keys "any", slot_keys "any", vals "any",
											OUT added bigint, OUT unchanged bigint, OUT conflicts bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'slot_upsert_many'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION sessionize.slot_upsert_many(regclass, "any", "any", "any") IS
	'applies arrays of messages (keys, slot keys, values) to a slot table in one call';
