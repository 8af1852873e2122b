/*
 * repair_http.h — the worker's own REST client for gap repair: non-blocking
 * (libcurl's multi interface driven from the worker's loop), paced, and
 * polite to VoIPBIN's per-customer rate limit.
 *
 * Unlike rest.c, which serves a backend's SQL call and raises ERRORs, nothing
 * here raises: every outcome is a result the caller reads.  libcurl's
 * callbacks only copy bytes and keep the socket list; no PostgreSQL there.
 */
#ifndef VOIPBIN_REPAIR_HTTP_H
#define VOIPBIN_REPAIR_HTTP_H

#include "voipbin.h"

#include "base/endpoint.h"

/* At most this many requests in flight (docs/voipbin.md, "Rate limit: 17 requests a second": 4 or fewer). */
#define RH_MAX_RUNNING 4

typedef struct RhResult
{
	void	   *tag;			/* as given to rh_submit() */
	long		status;			/* HTTP status; 0 when no answer came */
	char	   *body;			/* malloc'd, NUL-terminated; NULL when none */
	size_t		len;
	char		error[256];		/* status 0: why, without the credential */
} RhResult;

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
 * a result: the request waits its Retry-After and is sent again (at most
 * RH_MAX_429 times), and nothing else is sent meanwhile.
 */
extern long rh_step(void);

/* The next finished request, or NULL; free it with rh_result_free(). */
extern RhResult *rh_take(void);
extern void rh_result_free(RhResult *r);

/* Requests queued, running or finished but not taken. */
extern int	rh_outstanding(void);

/* Drops every queued and running request and every untaken result. */
extern void rh_cancel_all(void);

/* Between repairs: closes the connections libcurl keeps for reuse. */
extern void rh_close_idle(void);

/* The descriptor the loop waits on (readable when a socket of curl's is ready), or -1. */
extern int	rh_wait_fd(void);

/* Pure: the pacer, a token bucket of rate per second holding at most burst. */
typedef struct RhBucket
{
	double		tokens;
	int64		at_us;			/* when tokens was computed */
} RhBucket;

extern double rh_burst_for(double rate);
extern bool rh_bucket_take(RhBucket *b, double rate, double burst, int64 now_us);
extern int64 rh_bucket_next_us(const RhBucket *b, double rate, int64 now_us);

#endif
