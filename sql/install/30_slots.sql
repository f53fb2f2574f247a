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

CREATE FUNCTION sessionize.sessionize_check_combine(value_type regtype, combine text)
RETURNS void
AS 'MODULE_PATHNAME', 'slot_check_combine'
LANGUAGE C STABLE;

CREATE FUNCTION sessionize.create_slot_table(
	table_name text,
	key_columns text[],
	key_types regtype[],
	slot_key_type regtype,
	value_type regtype,
	slots integer DEFAULT 2,
	combine text DEFAULT 'sum',
	value_name text DEFAULT 'value',
	slot_key_name text DEFAULT 'slot_key',
	on_conflict text DEFAULT 'error')
RETURNS regclass
LANGUAGE plpgsql
AS $$
-- Runs with the caller's search_path, so that an unqualified table name
-- lands in the caller's schema; every function below is qualified.
DECLARE
	name_parts text[];
	schema_name text;
	base_name text;
	qualified text;
	keys_sql text;
	keys_nullable_sql text;
	key_list text;
	slot_columns text := '';
	created regclass;
	overflow regclass;
	conflicts regclass;
BEGIN
	IF table_name IS NULL OR key_columns IS NULL OR key_types IS NULL OR slot_key_type IS NULL
	   OR value_type IS NULL OR slots IS NULL OR combine IS NULL OR value_name IS NULL
	   OR slot_key_name IS NULL OR on_conflict IS NULL THEN
		RAISE EXCEPTION 'arguments of create_slot_table must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF slots < 1 THEN
		RAISE EXCEPTION 'slots must be at least 1'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('The table would have %s slots.', slots);
	END IF;
	IF combine NOT IN ('sum', 'min', 'max', 'last') THEN
		RAISE EXCEPTION 'unknown combine "%"', combine
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use sum, min, max or last.';
	END IF;
	IF on_conflict NOT IN ('error', 'record') THEN
		RAISE EXCEPTION 'unknown on_conflict "%"', on_conflict
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use error or record.';
	END IF;
	IF pg_catalog.cardinality(key_columns) < 1 OR pg_catalog.cardinality(key_columns) <> pg_catalog.cardinality(key_types) THEN
		RAISE EXCEPTION 'key_columns and key_types must name the same, non-zero number of columns'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM sessionize.sessionize_check_combine(value_type, combine);

	name_parts := pg_catalog.parse_ident(table_name);
	IF pg_catalog.cardinality(name_parts) = 2 THEN
		schema_name := name_parts[1];
		base_name := name_parts[2];
	ELSIF pg_catalog.cardinality(name_parts) = 1 THEN
		schema_name := pg_catalog.current_schema();
		base_name := name_parts[1];
	ELSE
		RAISE EXCEPTION 'invalid table name "%"', table_name
			USING ERRCODE = 'invalid_name', HINT = 'Use table or schema.table.';
	END IF;
	qualified := pg_catalog.format('%I.%I', schema_name, base_name);

	SELECT pg_catalog.string_agg(pg_catalog.format('%I %s NOT NULL', k.column_name, pg_catalog.format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   pg_catalog.string_agg(pg_catalog.format('%I %s', k.column_name, pg_catalog.format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   pg_catalog.string_agg(pg_catalog.format('%I', k.column_name), ', ' ORDER BY k.position)
	INTO keys_sql, keys_nullable_sql, key_list
	FROM ROWS FROM (pg_catalog.unnest(key_columns), pg_catalog.unnest(key_types::pg_catalog.oid[]))
		 WITH ORDINALITY AS k(column_name, type_id, position);

	FOR i IN 1..slots LOOP
		slot_columns := slot_columns || pg_catalog.format(', %I %s, %I %s',
			slot_key_name || '_' || i, pg_catalog.format_type(slot_key_type, NULL),
			value_name || '_' || i, pg_catalog.format_type(value_type, NULL));
	END LOOP;

	EXECUTE pg_catalog.format('CREATE TABLE %s (%s%s, computed %s, PRIMARY KEY (%s))',
				   qualified, keys_sql, slot_columns, pg_catalog.format_type(value_type, NULL), key_list);
	created := qualified::pg_catalog.regclass;
	EXECUTE pg_catalog.format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, %I %s, PRIMARY KEY (%s, %I))',
				   schema_name, base_name || '_overflow', keys_sql,
				   slot_key_name, pg_catalog.format_type(slot_key_type, NULL),
				   value_name, pg_catalog.format_type(value_type, NULL), key_list, slot_key_name);
	overflow := pg_catalog.format('%I.%I', schema_name, base_name || '_overflow')::pg_catalog.regclass;
	EXECUTE pg_catalog.format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, stored_value %s, offered_value %s,'
				   ' reported_at timestamptz NOT NULL DEFAULT pg_catalog.now())',
				   schema_name, base_name || '_conflicts', keys_nullable_sql,
				   slot_key_name, pg_catalog.format_type(slot_key_type, NULL),
				   pg_catalog.format_type(value_type, NULL), pg_catalog.format_type(value_type, NULL));
	conflicts := pg_catalog.format('%I.%I', schema_name, base_name || '_conflicts')::pg_catalog.regclass;

	INSERT INTO sessionize.slot_tables
	VALUES (created, overflow, conflicts, key_columns::pg_catalog.name[], slot_key_name, value_name,
			slots, combine, on_conflict);
	RETURN created;
END $$;
COMMENT ON FUNCTION sessionize.create_slot_table(text, text[], regtype[], regtype, regtype, integer, text, text, text, text) IS
	'creates a slot table (key columns, slot_key_1, value_1, ..., computed) with its overflow and conflicts tables';

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
