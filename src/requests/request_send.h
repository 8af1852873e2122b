/*
 * request_send.h — the requests' lane of the worker's REST engine
 * (base/loop_http.h): claimed rows sent in queue order at
 * voipbin.request_rate, a few at a time, to voipbin.api_url with the
 * worker's credential.
 */
#ifndef VOIPBIN_REQUEST_SEND_H
#define VOIPBIN_REQUEST_SEND_H

#include "postgres.h"

#include "base/loop_http.h"
#include "requests/request_queue.h"

/* At most this many requests in flight (docs/voipbin.md, "Rate limit: 17 requests a second": 4 or fewer). */
#define REQUEST_MAX_RUNNING 4

/*
 * Whether the lane has a target to send to: the credential and api_url are
 * (re)read when the lane is idle and a reload asked for it, or a minute
 * passed.  False (after a LOG line, once per reason) while there is no
 * credential or api_url is wrong: requests then stay queued.
 */
extern bool request_send_ready(void);

/* A reload: the credential and api_url are read again once nothing is in flight. */
extern void request_send_reloaded(void);

/*
 * How many rows may be claimed now: what may leave within ahead_ms, by the
 * pace and the limit (the engine holds them until their turn).
 */
extern int	request_send_capacity(long ahead_ms);

/* Sends row (claimed and committed); row stays the caller's until its result is taken. */
extern void request_send_submit(RequestRow *row);

/* Moves the engine on (base/loop_http.h's lh_step()); ms the loop may sleep. */
extern long request_send_step(void);

/* The next finished attempt (its tag: the RequestRow), or NULL; free with lh_result_free(). */
extern LhResult *request_send_take(void);

/* In how many ms another request could leave; -1 while the lane is full (a result will wake the loop). */
extern long request_send_next_ms(void);

#endif
