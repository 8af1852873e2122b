/*
 * loop_http.h — the worker's non-blocking REST engine: libcurl's multi
 * interface driven from the worker's loop, in lanes.
 *
 * Gap repair and the requests of voipbin_requests each have a lane: its own
 * queue, pace (a token bucket at a rate setting) and limit of transfers in
 * flight, its own target (api_url, credential).  All lanes share one multi
 * handle, one descriptor for the loop's WaitEventSet, and one window over
 * their last starts at VoIPBIN's per-customer limit (LH_WINDOW_MAX, 17):
 * a start needs its lane's token and a place in that window, so the lanes
 * together never send more than 17 requests in any second.
 *
 * Unlike rest.c, which serves a backend's SQL call and raises ERRORs, nothing
 * here raises: every outcome is a result the caller reads.  libcurl's
 * callbacks only copy bytes and keep the socket list; no PostgreSQL there.
 */
#ifndef VOIPBIN_BASE_LOOP_HTTP_H
#define VOIPBIN_BASE_LOOP_HTTP_H

#include "voipbin.h"

#include "base/endpoint.h"

typedef struct LhLane LhLane;

/* How a lane treats VoIPBIN's 429. */
typedef enum LhOn429
{
	LH_429_RESEND,				/* wait its Retry-After and send again (at most 8 times): no result */
	LH_429_RESULT				/* a result like any other: the caller decides */
} LhOn429;

/* One request, as lh_submit() reads it (nothing is kept but copies). */
typedef struct LhSend
{
	const char *method;			/* NULL: GET */
	const char *path;			/* path and query, URL-encoded, after api_url */
	const char *body;			/* JSON, or NULL */
	size_t		body_len;
	long		timeout_ms;		/* the whole transfer; 0: voipbin.http_timeout */
	bool		fresh_connection;	/* a new connection, closed after: see lh_submit() */
	void	   *tag;			/* given back in the result */
} LhSend;

typedef struct LhResult
{
	void	   *tag;			/* as given to lh_submit() */
	long		status;			/* HTTP status; 0 when no answer came */
	char	   *body;			/* malloc'd, NUL-terminated; NULL when none */
	size_t		len;
	char	   *request_id;		/* X-Request-Id, malloc'd; or NULL */
	bool		has_retry_after;
	long		retry_after_s;
	bool		sent;			/* a byte of the request left (false: VoIPBIN cannot have seen it) */
	char		error[256];		/* status 0: why, without the credential */
} LhResult;

/*
 * A new lane (for the worker's life): requests leave at *rate per second
 * (read at each start, so a reload applies), at most max_running at once.
 */
extern LhLane *lh_lane_create(const char *user_agent, const double *rate, int max_running,
							  LhOn429 on_429);

/*
 * Where the lane's requests go and with which credential (copied); false
 * with *error when libcurl cannot be set up.  Cancels whatever the lane has
 * queued or running.
 */
extern bool lh_configure(LhLane *lane, const char *api_url, const char *credential,
						 CredentialKind kind, const char *ca_file, const char **error);

/*
 * Queues a request on the lane.  fresh_connection: libcurl sends a request
 * again by itself when a reused connection turns out dead, which would
 * repeat a request that must not be; a fresh connection, closed after, never
 * does that.
 */
extern void lh_submit(LhLane *lane, const LhSend *s);

/*
 * Moves every lane's transfers on, collects finished ones, starts what the
 * pace allows (lane first); returns how many ms the loop may sleep (-1:
 * nothing to do, 0: a lane holds results to take).
 */
extern long lh_step(LhLane *lane);

/*
 * How many requests lane could start within ahead_ms from now (its pace, the
 * customer's, its limit): what a caller may hand it now, to leave at the pace.
 */
extern int	lh_capacity(LhLane *lane, long ahead_ms);

/* When lane could start its next request, in ms from now (0: now). */
extern long lh_next_start_ms(LhLane *lane);

/* The lane's next finished request, or NULL; free it with lh_result_free(). */
extern LhResult *lh_take(LhLane *lane);
extern void lh_result_free(LhResult *r);

/* The lane's requests queued, running or finished but not taken. */
extern int	lh_outstanding(LhLane *lane);

/* Drops every queued and running request of the lane and every untaken result. */
extern void lh_cancel_all(LhLane *lane);

/*
 * When no lane has anything outstanding: closes the connections libcurl
 * keeps for reuse (an idle one the server closes would keep the loop's
 * descriptor readable).
 */
extern void lh_close_idle(void);

/* The descriptor the loop waits on (readable when a socket of curl's is ready), or -1. */
extern int	lh_wait_fd(void);

/* Pure: the pacer, a token bucket of rate per second holding at most burst. */
typedef struct LhBucket
{
	double		tokens;			/* < 0: full, not used yet */
	int64		at_us;			/* when tokens was computed */
} LhBucket;

extern double lh_burst_for(double rate);

/*
 * Pure: the customer's limit, every lane's requests together: at most
 * LH_WINDOW_MAX sent in any second.  A slot per request: taken when the
 * request starts (it counts from then, "pending"), stamped when its bytes
 * leave (after the connection's set-up, which can take long), free again a
 * window after that.  A token bucket would let a full bucket's burst through
 * on top of the rate; counting from the start would let a request that
 * waited on its TLS handshake land in the same second as later ones.
 */
#define LH_WINDOW_MAX 17
#define LH_WINDOW_PENDING PG_INT64_MAX
typedef struct LhWindow
{
	int64		at_us[LH_WINDOW_MAX];	/* when each slot's request was sent; 0: never */
} LhWindow;

/* Slots free at now (0 .. LH_WINDOW_MAX). */
extern int	lh_window_free(const LhWindow *w, int64 now_us);
/* Takes a free slot (pending until stamped): its index, or -1 when none is free. */
extern int	lh_window_take(LhWindow *w, int64 now_us);
/* The request of slot was sent at at_us (or, never sent, is done with at at_us). */
extern void lh_window_stamp(LhWindow *w, int slot, int64 at_us);
/* When a slot frees (now when one is); -1 when all wait on requests not sent yet. */
extern int64 lh_window_next_us(const LhWindow *w, int64 now_us);
/* Nothing may be sent before until (a 429's Retry-After): every stamped slot is held until then. */
extern void lh_window_block(LhWindow *w, int64 until_us);
extern double lh_bucket_tokens(const LhBucket *b, double rate, double burst, int64 now_us);
extern bool lh_bucket_take(LhBucket *b, double rate, double burst, int64 now_us);
extern int64 lh_bucket_next_us(const LhBucket *b, double rate, int64 now_us);

#endif
