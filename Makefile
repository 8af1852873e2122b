# voipbin — PGXS build.  `make && make install`, then see README.md.
EXTENSION = voipbin
MODULE_big = voipbin
EXTVERSION = 1.1
# 1.0 is released and frozen; a fresh install runs it, then the upgrade scripts.
DATA = voipbin--1.0.sql voipbin--1.0--1.1.sql

# src/net/: code that runs off the worker's main thread.  It is compiled
# without PostgreSQL's include path, so a PostgreSQL header there fails the build.
NET_OBJS = src/net/ws_client.o src/net/journal.o \
           src/net/http_receiver.o src/net/http_gate.o src/net/request_line.o \
           src/net/webhook_request.o src/net/secret_fetch.o \
           src/net/spool_1_0.o
OBJS = src/voipbin.o src/status.o src/topic.o src/frame.o src/frame_json.o src/endpoint.o \
       src/store.o src/partitions.o src/boundaries.o src/subscriptions.o src/worker.o \
       src/rest.o src/customer.o src/dedupe.o src/position.o \
       src/gaps.o src/repair.o src/repair_walk.o src/repair_http.o src/store_errors.o src/dead_letters.o src/webhook.o \
       src/spool_import.o src/fault.o src/before_triggers.o $(NET_OBJS)

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags libwebsockets)
PG_CFLAGS = -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
            -Wno-missing-field-initializers -pthread
SHLIB_LINK = $(shell pkg-config --libs libwebsockets) $(shell pkg-config --libs libmicrohttpd) -lssl -lcrypto -lcurl -pthread -lm

REGRESS = install topics classify settings rest workflows store_errors
# installcheck brings its own server, as pg_cron's does: a temporary instance
# with the library preloaded, so it needs no cluster, only a user initdb
# accepts (not root).  Under pg_buildext (debian/) the files are still in
# DESTDIR, so the instance also looks there.
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/regress.conf
REGRESS_PREP = regress-prep
ifdef DESTDIR
REGRESS_OPTS += --temp-config=tmp_check_destdir.conf
endif
EXTRA_CLEAN = tmp_check_destdir.conf

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: regress-prep
regress-prep:
	@if [ "$$(id -u)" = 0 ]; then \
	    echo "make installcheck: run it as an ordinary user (initdb refuses root); test/run does that for root" >&2; \
	    exit 1; \
	fi
ifdef DESTDIR
	printf "extension_destdir = '%s'\ndynamic_library_path = '%s:\$$libdir'\n" \
	    '$(abspath $(DESTDIR))' '$(abspath $(DESTDIR))$(pkglibdir)' > tmp_check_destdir.conf
endif

# pg_buildext (debian/) builds in build-<version>/ with VPATH: the object
# directories must exist there.
ifneq ($(srcdir),.)
$(shell mkdir -p src/net)
endif

NET_CFLAGS = $(CFLAGS) $(PG_CFLAGS) -fPIC $(shell pkg-config --cflags libwebsockets)
src/net/%.o: src/net/%.c $(wildcard $(srcdir)/src/net/*.h)
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
