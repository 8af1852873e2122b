# voipbin — PGXS build.  `make && make install`, then see README.md.
EXTENSION = voipbin
MODULE_big = voipbin
EXTVERSION = 1.0
DATA = voipbin--$(EXTVERSION).sql
OBJS = src/voipbin.o src/status.o src/topic.o src/frame.o src/endpoint.o \
       src/store.o src/subscriptions.o src/worker.o src/ws_client.o src/spool.o \
       src/rest.o src/customer.o src/dedupe.o

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -Isrc $(shell pkg-config --cflags libwebsockets)
PG_CFLAGS = -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
            -Wno-missing-field-initializers -pthread
SHLIB_LINK = $(shell pkg-config --libs libwebsockets) -lssl -lcrypto -lcurl -pthread -lm

REGRESS = install topics classify settings rest workflows
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# the network thread must not see PostgreSQL's headers
src/ws_client.o: src/ws_client.c src/ws_client.h src/spool.h
	$(CC) $(CFLAGS) $(PG_CFLAGS) $(shell pkg-config --cflags libwebsockets) -fPIC -c -o $@ $<
src/spool.o: src/spool.c src/spool.h
	$(CC) $(CFLAGS) $(PG_CFLAGS) -fPIC -c -o $@ $<
