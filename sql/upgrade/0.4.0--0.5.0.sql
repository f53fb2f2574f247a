-- sessionize 0.4.0 -> 0.5.0.  This script is assembled with the install
-- fragments that define what 0.5.0 makes anew (see Makefile), so an upgraded
-- database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.5.0'" to load this file. \quit
