/*
 * request_worker.h — the worker's step that sends voipbin_requests: after
 * frames are stored, never blocking (the transfers run on the loop's REST
 * engine), woken by a committed voipbin_request() and by its own due times.
 */
#ifndef VOIPBIN_REQUEST_WORKER_H
#define VOIPBIN_REQUEST_WORKER_H

#include "postgres.h"

/*
 * Records finished attempts, claims and sends what is due, deletes old
 * finished rows now and then; returns how many ms the loop may sleep (-1:
 * as long as it likes).  Each database part runs guarded: an error is logged
 * and tried again later.
 */
extern long request_worker_step(void);

/* Whether the step has work under way (for what pg_stat_activity shows). */
extern bool request_worker_busy(void);

/* A reload: the credential, api_url and rate are read again. */
extern void request_worker_reloaded(void);

#endif
