-- DROP EXTENSION sessionize (or DROP SCHEMA sessionize) is refused while
-- pipelines exist, and otherwise drops the publications of logical sources
-- first, so that nothing of sessionize is left behind (src/extension_drop.c).
CREATE FUNCTION sessionize.sessionize_guard_extension_drop()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'guard_extension_drop'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_guard_extension_drop() IS
	'refuses to drop sessionize while it has pipelines; drops its publications otherwise';

CREATE EVENT TRIGGER sessionize_guard_extension_drop ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
	EXECUTE FUNCTION sessionize.sessionize_guard_extension_drop();
COMMENT ON EVENT TRIGGER sessionize_guard_extension_drop IS
	'refuses DROP EXTENSION sessionize while pipelines exist; drops the publications sessionize made otherwise';
