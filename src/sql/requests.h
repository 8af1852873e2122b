/*
 * requests.h — the SQL functions of the outbox (requests.c):
 * voipbin_request() queues a request in the caller's transaction, and
 * voipbin_api() makes one at once.  Only fmgr entry points: nothing to
 * declare for other files.
 */
#ifndef VOIPBIN_SQL_REQUESTS_H
#define VOIPBIN_SQL_REQUESTS_H

#include "voipbin.h"

#endif
