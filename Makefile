# voipbin — PGXS build.  `make && make install`, then see README.md.
EXTENSION = voipbin
MODULE_big = voipbin
EXTVERSION = 1.2
# 1.0 and 1.1 are released and frozen; a fresh install runs 1.0, then the update scripts.
DATA = voipbin--1.0.sql voipbin--1.0--1.1.sql voipbin--1.1--1.2.sql

# src/net/: code that runs off the worker's main thread.  It is compiled
# without PostgreSQL's include path, so a PostgreSQL header there fails the build.
NET_OBJS = src/net/journal/journal.o src/net/journal/spool_1_0.o \
           src/net/ws/ws_client.o \
           src/net/webhook/webhook_receiver.o src/net/webhook/http_gate.o \
           src/net/webhook/request_line.o src/net/webhook/webhook_request.o \
           src/net/webhook/secret_fetch.o \
           src/net/http/http_client.o
# One line per folder, lowest first: a file uses only its own folder and the
# folders on the lines above its own (test_layout.py checks it).
BASE_OBJS = src/base/settings.o src/base/status.o src/base/db.o src/base/time.o src/base/guard.o \
            src/base/endpoint.o src/base/rest.o src/base/fault.o src/base/backoff.o \
            src/base/loop_http.o
INGEST_OBJS = src/ingest/frame.o src/ingest/frame_json.o src/ingest/dedupe.o \
              src/ingest/store.o src/ingest/store_retry.o src/ingest/store_report.o src/ingest/position.o \
              src/ingest/boundaries.o src/ingest/before_triggers.o src/ingest/spool_import.o
MAINTENANCE_OBJS = src/maintenance/partitions.o src/maintenance/prune.o
REPAIR_OBJS = src/repair/gaps.o src/repair/repair.o src/repair/repair_walk.o src/repair/repair_job.o \
              src/repair/repair_http.o
REQUESTS_OBJS = src/requests/request_rules.o src/requests/request_queue.o src/requests/request_outcome.o \
                src/requests/request_recover.o src/requests/request_retention.o src/requests/request_send.o \
                src/requests/request_worker.o
WORKER_OBJS = src/worker/worker.o src/worker/connection.o src/worker/connection_failure.o \
              src/worker/intake.o src/worker/timers.o src/worker/activity.o \
              src/worker/subscriptions.o src/worker/webhook_ctl.o \
              src/worker/database_wait.o
SQL_OBJS = src/sql/status.o src/sql/topic.o src/sql/customer.o src/sql/dead_letters.o \
           src/sql/vocabulary.o src/sql/customer_cache.o src/sql/requests.o
OBJS = src/voipbin.o $(SQL_OBJS) $(WORKER_OBJS) $(REQUESTS_OBJS) $(REPAIR_OBJS) $(MAINTENANCE_OBJS) \
       $(INGEST_OBJS) $(BASE_OBJS) $(NET_OBJS)

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags libwebsockets)
PG_CFLAGS = -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
            -Wno-missing-field-initializers -pthread
# every object depends on the headers it includes (-MMD): a header change
# rebuilds its users, so a struct never has two layouts in one library
PG_CFLAGS += -MMD -MP
SHLIB_LINK = $(shell pkg-config --libs libwebsockets) $(shell pkg-config --libs libmicrohttpd) -lssl -lcrypto -lcurl -pthread -lm

REGRESS = install topics classify settings rest workflows store_errors vocabulary
# installcheck brings its own server, as pg_cron's does: a temporary instance
# with the library preloaded, so it needs no cluster, only a user initdb
# accepts (not root).  Under pg_buildext (debian/) the files are still in
# DESTDIR, so the instance also looks there.
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/regress.conf
REGRESS_PREP = regress-prep
ifdef DESTDIR
REGRESS_OPTS += --temp-config=tmp_check_destdir.conf
endif
EXTRA_CLEAN = tmp_check_destdir.conf $(OBJS:.o=.d)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: regress-prep
regress-prep:
	@if [ "$$(id -u)" = 0 ]; then \
	    echo "make installcheck: run it as an ordinary user (initdb refuses root); test/run does that for root" >&2; \
	    exit 1; \
	fi
# The files in DESTDIR: through Debian's extension_destdir up to 17; 18 has
# no such patch but extension_control_path (each directory gets /extension
# appended), and strips module_pathname's $libdir/ to search
# dynamic_library_path.
ifdef DESTDIR
ifeq ($(filter 15 16 17,$(MAJORVERSION)),)
	printf "extension_control_path = '%s:\$$system'\ndynamic_library_path = '%s:\$$libdir'\n" \
	    '$(abspath $(DESTDIR))$(datadir)' '$(abspath $(DESTDIR))$(pkglibdir)' > tmp_check_destdir.conf
else
	printf "extension_destdir = '%s'\ndynamic_library_path = '%s:\$$libdir'\n" \
	    '$(abspath $(DESTDIR))' '$(abspath $(DESTDIR))$(pkglibdir)' > tmp_check_destdir.conf
endif
endif

# pg_buildext (debian/) builds in build-<version>/ with VPATH: the object
# directories must exist there.
ifneq ($(srcdir),.)
$(shell mkdir -p src/base src/ingest src/maintenance src/repair src/requests src/worker src/sql src/net/journal src/net/ws src/net/webhook src/net/http)
endif

NET_CFLAGS = $(CFLAGS) $(PG_CFLAGS) -fPIC -I$(srcdir)/src $(shell pkg-config --cflags libwebsockets)
src/net/%.o: src/net/%.c $(wildcard $(srcdir)/src/net/*/*.h)
	$(CC) $(NET_CFLAGS) -c -o $@ $<

# The release archive PGXN takes (META.json at its top): the committed tree.
DISTVERSION = $(EXTVERSION).0
DISTFILE = $(EXTENSION)-$(DISTVERSION).zip
.PHONY: dist
dist:
	git archive --format=zip --prefix=$(EXTENSION)-$(DISTVERSION)/ -o $(DISTFILE) HEAD

# libFuzzer targets and the suite under ASAN+UBSAN, each built apart from
# this build (test/fuzz/Makefile, a copy of the tree): see README.md.
.PHONY: fuzz sanitize
fuzz sanitize:
	test/$@.sh

-include $(OBJS:.o=.d)
