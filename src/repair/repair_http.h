/*
 * repair_http.h — gap repair's lane of the worker's REST engine
 * (base/loop_http.h): GETs, paced at voipbin.repair_rate, a 429 waited out
 * and sent again.
 */
#ifndef VOIPBIN_REPAIR_HTTP_H
#define VOIPBIN_REPAIR_HTTP_H

#include "voipbin.h"

#include "base/endpoint.h"
#include "base/loop_http.h"

/* At most this many requests in flight (docs/voipbin.md, "Rate limit: 17 requests a second": 4 or fewer). */
#define RH_MAX_RUNNING 4

typedef LhResult RhResult;

/*
 * Where requests go and with which credential (copied); false with *error
 * when libcurl cannot be set up.  Cancels whatever is queued or running.
 */
extern bool rh_configure(const char *api_url, const char *credential, CredentialKind kind,
						 const char *ca_file, const char **error);

/* Queues GET api_url + path (path and query, already URL-encoded). */
extern void rh_submit(const char *path, void *tag);

/*
 * Starts what the pace allows, moves transfers on, collects finished ones;
 * returns how many ms the loop may sleep (-1: nothing to do).  A 429 is not
 * a result: the request waits its Retry-After and is sent again (at most 8
 * times), and nothing else is sent meanwhile.
 */
extern long rh_step(void);

/* The next finished request, or NULL; free it with rh_result_free(). */
extern RhResult *rh_take(void);
extern void rh_result_free(RhResult *r);

/* Requests queued, running or finished but not taken. */
extern int	rh_outstanding(void);

/* Drops every queued and running request and every untaken result. */
extern void rh_cancel_all(void);

/* Between repairs: closes the connections libcurl keeps for reuse (when no other lane uses them). */
extern void rh_close_idle(void);

#endif
