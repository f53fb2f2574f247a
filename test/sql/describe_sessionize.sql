-- Describes every object of schema sessionize (and the extension's other
-- parts) as sorted text lines, so that two databases can be compared: an
-- upgraded one must give the same lines as a fresh one.  A missing ACL is
-- shown as the default it stands for.
WITH objects(line) AS (
	SELECT 'schema ' || n.nspname || ' acl=' || coalesce(n.nspacl, acldefault('n', n.nspowner))::text || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '-')
	FROM pg_namespace n WHERE n.nspname = 'sessionize'
	UNION ALL
	SELECT 'function ' || p.oid::regprocedure || ' kind=' || p.prokind::text || ' acl=' || coalesce(p.proacl, acldefault('f', p.proowner))::text
		   || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
		   || E'\n' || CASE WHEN p.prokind = 'a'
							THEN (SELECT format('aggregate sfunc=%s stype=%s final=%s combine=%s serial=%s deserial=%s',
												a.aggtransfn, a.aggtranstype::regtype, a.aggfinalfn, a.aggcombinefn,
												a.aggserialfn, a.aggdeserialfn)
								  FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
							ELSE pg_get_functiondef(p.oid) END
	FROM pg_proc p WHERE p.pronamespace = 'sessionize'::regnamespace
	UNION ALL
	SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
		   || ' acl=' || coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))::text || ' options=' || coalesce(c.reloptions::text, '-')
		   || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
		   || ' member=' || EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		   || coalesce(E'\n' || pg_get_viewdef(c.oid), '')
		   || coalesce(E'\n' || (SELECT string_agg(format('  column %s %s notnull=%s default=%s identity=%s comment=%s',
															a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
															pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
															coalesce(col_description(c.oid, a.attnum), '-')),
												  E'\n' ORDER BY a.attnum)
								FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
								WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
		   || coalesce(E'\n' || (SELECT string_agg('  constraint ' || pg_get_constraintdef(co.oid), E'\n' ORDER BY pg_get_constraintdef(co.oid))
								FROM pg_constraint co WHERE co.conrelid = c.oid), '')
		   || coalesce(E'\n' || (SELECT string_agg('  index ' || regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \S+ ON', 'INDEX ON'),
												  E'\n' ORDER BY pg_get_indexdef(i.indexrelid))
								FROM pg_index i WHERE i.indrelid = c.oid), '')
	FROM pg_class c WHERE c.relnamespace = 'sessionize'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm', 'p', 'c')
	UNION ALL
	SELECT 'type ' || t.oid::regtype || ' kind=' || t.typtype::text || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '-')
	FROM pg_type t WHERE t.typnamespace = 'sessionize'::regnamespace AND t.typtype <> 'b'
	UNION ALL
	SELECT 'publication ' || p.pubname || ' inserts=' || p.pubinsert || ' updates=' || p.pubupdate
		   || ' tables=' || coalesce((SELECT string_agg(pr.prrelid::regclass::text, ',' ORDER BY pr.prrelid::regclass::text)
									  FROM pg_publication_rel pr WHERE pr.prpubid = p.oid), '-')
	FROM pg_publication p WHERE p.pubname LIKE 'sessionize%'
	UNION ALL
	SELECT 'configuration ' || (SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text) FROM unnest(e.extconfig) c)
		   || ' version=' || e.extversion
	FROM pg_extension e WHERE e.extname = 'sessionize')
SELECT line FROM objects ORDER BY line;
