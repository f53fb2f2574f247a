-- Creating slot tables: the tables belong to the caller, their row in
-- sessionize.slot_tables to the extension.

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
AS 'MODULE_PATHNAME', 'call_as_extension_in_schema'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.create_slot_table(text, text[], regtype[], regtype, regtype, integer, text, text, text, text) IS
	'creates a slot table (key columns, slot_key_1, value_1, ..., computed) with its overflow and conflicts tables';

-- The body of create_slot_table(), run as the extension's owner: the caller
-- gets the three tables, made in its current schema (caller_schema) unless
-- the name has one, and their row in the catalog, which it cannot write.
CREATE FUNCTION sessionize.sessionize_create_slot_table(
	caller regrole, caller_schema text, table_name text, key_columns text[], key_types regtype[],
	slot_key_type regtype, value_type regtype, slots integer, combine text, value_name text,
	slot_key_name text, on_conflict text)
RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
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
	unusable regtype;
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
				  DETAIL = format('The table would have %s slots.', slots);
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
	IF cardinality(key_columns) < 1 OR cardinality(key_columns) <> cardinality(key_types) THEN
		RAISE EXCEPTION 'key_columns and key_types must name the same, non-zero number of columns'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM sessionize.sessionize_check_combine(value_type, combine);

	name_parts := parse_ident(table_name);
	IF cardinality(name_parts) = 2 THEN
		schema_name := name_parts[1];
		base_name := name_parts[2];
	ELSIF cardinality(name_parts) = 1 THEN
		schema_name := caller_schema;
		base_name := name_parts[1];
	ELSE
		RAISE EXCEPTION 'invalid table name "%"', table_name
			USING ERRCODE = 'invalid_name', HINT = 'Use table or schema.table.';
	END IF;
	IF schema_name IS NULL THEN
		RAISE EXCEPTION 'no schema has been selected to create in'
			USING ERRCODE = 'invalid_schema_name', HINT = 'Qualify the table name with a schema.';
	END IF;
	IF to_regnamespace(quote_ident(schema_name)) IS NULL THEN
		RAISE EXCEPTION 'schema "%" does not exist', schema_name USING ERRCODE = 'invalid_schema_name';
	END IF;
	IF caller IS NULL OR NOT has_schema_privilege(caller, to_regnamespace(quote_ident(schema_name)), 'CREATE') THEN
		RAISE EXCEPTION 'permission denied for schema %', schema_name USING ERRCODE = 'insufficient_privilege';
	END IF;
	SELECT t INTO unusable
	FROM unnest(key_types || slot_key_type || value_type) t
	WHERE NOT coalesce(has_type_privilege(caller, t, 'USAGE'), false)
	LIMIT 1;
	IF unusable IS NOT NULL THEN
		RAISE EXCEPTION 'permission denied for type %', unusable USING ERRCODE = 'insufficient_privilege';
	END IF;
	qualified := format('%I.%I', schema_name, base_name);

	SELECT string_agg(format('%I %s NOT NULL', k.column_name, format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   string_agg(format('%I %s', k.column_name, format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   string_agg(format('%I', k.column_name), ', ' ORDER BY k.position)
	INTO keys_sql, keys_nullable_sql, key_list
	FROM ROWS FROM (unnest(key_columns), unnest(key_types::oid[]))
		 WITH ORDINALITY AS k(column_name, type_id, position);

	FOR i IN 1..slots LOOP
		slot_columns := slot_columns || format(', %I %s, %I %s',
			slot_key_name || '_' || i, format_type(slot_key_type, NULL),
			value_name || '_' || i, format_type(value_type, NULL));
	END LOOP;

	EXECUTE format('CREATE TABLE %s (%s%s, computed %s, PRIMARY KEY (%s))',
				   qualified, keys_sql, slot_columns, format_type(value_type, NULL), key_list);
	created := qualified::regclass;
	EXECUTE format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, %I %s, PRIMARY KEY (%s, %I))',
				   schema_name, base_name || '_overflow', keys_sql,
				   slot_key_name, format_type(slot_key_type, NULL),
				   value_name, format_type(value_type, NULL), key_list, slot_key_name);
	overflow := format('%I.%I', schema_name, base_name || '_overflow')::regclass;
	EXECUTE format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, stored_value %s, offered_value %s,'
				   ' reported_at timestamptz NOT NULL DEFAULT pg_catalog.now())',
				   schema_name, base_name || '_conflicts', keys_nullable_sql,
				   slot_key_name, format_type(slot_key_type, NULL),
				   format_type(value_type, NULL), format_type(value_type, NULL));
	conflicts := format('%I.%I', schema_name, base_name || '_conflicts')::regclass;
	EXECUTE format('ALTER TABLE %s OWNER TO %s', created, caller);
	EXECUTE format('ALTER TABLE %s OWNER TO %s', overflow, caller);
	EXECUTE format('ALTER TABLE %s OWNER TO %s', conflicts, caller);

	INSERT INTO sessionize.slot_tables
	VALUES (created, overflow, conflicts, key_columns::name[], slot_key_name, value_name,
			slots, combine, on_conflict);
	RETURN created;
END $$;
