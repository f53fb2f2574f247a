-- sessionize 0.4.0 -> 0.5.0.  This script is assembled with the install
-- fragments that define what 0.5.0 makes anew (see Makefile), so an upgraded
-- database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.5.0'" to load this file. \quit

-- grant_reader() also grants the views of a pipeline's profiles
-- (47_profiles.sql makes it anew).
DROP FUNCTION sessionize.sessionize_set_reader(regrole, text, regrole, boolean);
