# sessionize — PGXS build.  The version lives in sessionize.control only.
EXTENSION = sessionize
EXTVERSION = $(shell grep -m1 '^default_version' $(EXTENSION).control | sed -e "s/.*'\(.*\)'.*/\1/")

MODULE_big = $(EXTENSION)
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PGFILEDESC = "sessionize - sessions, dedup and exactly-once pipelines"

# The install script is assembled from one fragment per concern, in name order.
# Scripts of earlier versions are kept as they shipped; an upgrade script is
# assembled from its own steps and the fragments that define what it
# (re)creates, so that an upgraded and a fresh install share one text.
INSTALL_PARTS = $(sort $(wildcard sql/install/*.sql))
UPGRADE_0.4.0--0.5.0 = sql/upgrade/0.4.0--0.5.0.sql sql/install/11_session_set.sql \
	sql/install/43_pipeline_backlog.sql sql/install/44_pipeline_status.sql sql/install/47_profiles.sql \
	sql/install/90_privileges.sql
DATA_built = $(EXTENSION)--$(EXTVERSION).sql $(EXTENSION)--0.4.0--0.5.0.sql
DATA = $(EXTENSION)--0.1.0.sql $(EXTENSION)--0.2.0.sql $(EXTENSION)--0.3.0.sql $(EXTENSION)--0.4.0.sql \
	$(EXTENSION)--0.1.0--0.2.0.sql $(EXTENSION)--0.2.0--0.3.0.sql $(EXTENSION)--0.3.0--0.4.0.sql

# pg_regress suites: every sql/*.sql (install fragments live in sql/install/).
REGRESS = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

EXTRA_CLEAN = results regression.diffs regression.out tmp_check

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

override CFLAGS += -std=gnu99 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

# every C file includes the one header
$(OBJS): src/sessionize.h

$(EXTENSION)--$(EXTVERSION).sql: $(INSTALL_PARTS) $(EXTENSION).control
	cat $(INSTALL_PARTS) > $@

$(EXTENSION)--0.4.0--0.5.0.sql: $(UPGRADE_0.4.0--0.5.0) sql/install/41_pipeline_batch_state.sql
	cat $(UPGRADE_0.4.0--0.5.0) > $@
	sed -e 's/^CREATE FUNCTION/CREATE OR REPLACE FUNCTION/' sql/install/41_pipeline_batch_state.sql >> $@

# The two commands of the README quick start, and their parts.
.PHONY: demo test deps bench
deps:
	bash scripts/install-deps.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
bench:
	BENCH=$(BENCH) bash scripts/bench.sh
