/*
 * loop_http.c — the worker's REST engine, run inside the worker's loop
 * (loop_http.h).
 *
 * The worker must never block on the network: the live stream goes first.
 * So transfers run on libcurl's multi interface, socket by socket: curl says
 * which sockets it watches (CURLMOPT_SOCKETFUNCTION) and when it wants a
 * timer (CURLMOPT_TIMERFUNCTION); the sockets go into an epoll set whose one
 * descriptor sits in the worker's WaitEventSet, and the timer bounds the
 * loop's sleep.  Where epoll does not exist, the loop's sleep is bounded to
 * FALLBACK_POLL_MS while a transfer runs instead.
 *
 * VoIPBIN allows 17 requests/s per customer with a burst of 33, shared with
 * the customer's own users (docs/voipbin.md, "Rate limit: 17 requests a
 * second"): each lane's requests leave at its rate through a token bucket
 * holding at most that many per second, all lanes' starts together never
 * pass 17 in any second (one window over the last 17 starts, which every
 * lane consults), and a 429 on any lane stops every lane for its Retry-After.
 */
#include "voipbin.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

#include <curl/curl.h>

#include "utils/memutils.h"

#include "base/loop_http.h"
#include "base/settings.h"
#include "net/http/http_client.h"

#define LH_MAX_RESPONSE		(4 * 1024 * 1024)
#define LH_CONNECT_TIMEOUT_MS 5000
#define LH_MAX_429			8
#define LH_MAX_WAIT_S		60
#define LANE_BURST_MAX		16.0
#define FALLBACK_POLL_MS	10

typedef struct LhRequest
{
	struct LhRequest *next;
	LhLane	   *lane;
	char	   *method;			/* or NULL: GET */
	char	   *path;
	char	   *body;			/* or NULL */
	size_t		body_len;
	long		timeout_ms;
	bool		fresh;
	void	   *tag;
	int			refused;		/* 429s so far */
	int			slot;			/* its place in the customer's window; -1: none */
	bool		set_up;			/* call holds a handle (or an answer) */
	HttpCall	call;
} LhRequest;

typedef struct LhDone
{
	struct LhDone *next;
	LhResult	r;
} LhDone;

struct LhLane
{
	LhLane	   *next;
	const char *user_agent;
	const double *rate;
	int			max_running;
	LhOn429		on_429;
	LhRequest  *queued_head,
			   *queued_tail;
	LhRequest  *running;
	int			n_running;
	int			n_queued;
	LhDone	   *done_head,
			   *done_tail;
	int			n_done;
	LhBucket	bucket;
	int64		blocked_until_us;	/* a 429's Retry-After (LH_429_RESEND) */
	char	   *api_url;
	char	   *credential;
	CredentialKind kind;
	char	   *ca_file;
};

static CURLM *multi = NULL;
static int	epfd = -1;
static int64 timer_due_us = -1;	/* curl's timer; -1: none */
static LhLane *lanes = NULL;
static LhWindow customer;		/* zeroed: empty */
static int64 customer_blocked_until_us = 0; /* any lane's 429 */

static int64
now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64) tv.tv_sec * 1000000 + tv.tv_usec;
}

/*
 * libcurl calls this when the connection is up and the request is about to
 * be written: the request counts in the customer's second from now.  Only
 * a number is written (no PostgreSQL in a libcurl callback).
 */
static int
lh_sending(void *clientp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	LhRequest  *q = clientp;

	if (q->slot >= 0)
		lh_window_stamp(&customer, q->slot, now_us());
	return CURL_PREREQFUNC_OK;
}

/* ---- the pacer: pure ---- */

/* At most rate requests in any second on top of the steady pace, and never past VoIPBIN's 33. */
double
lh_burst_for(double rate)
{
	return Max(1.0, Min(floor(rate), LANE_BURST_MAX));
}

/*
 * A slot is held a tenth longer than a second after its request was sent:
 * VoIPBIN counts requests as they arrive, a little later.
 */
#define WINDOW_US 1100000
#define WINDOW_POLL_US 20000

static bool
slot_free(int64 at, int64 now)
{
	return at != LH_WINDOW_PENDING && at <= now - WINDOW_US;
}

int
lh_window_free(const LhWindow *w, int64 now)
{
	int			n = 0;

	for (int i = 0; i < LH_WINDOW_MAX; i++)
		if (slot_free(w->at_us[i], now))
			n++;
	return n;
}

int
lh_window_take(LhWindow *w, int64 now)
{
	for (int i = 0; i < LH_WINDOW_MAX; i++)
		if (slot_free(w->at_us[i], now))
		{
			w->at_us[i] = LH_WINDOW_PENDING;
			return i;
		}
	return -1;
}

void
lh_window_stamp(LhWindow *w, int slot, int64 at)
{
	if (slot >= 0 && slot < LH_WINDOW_MAX)
		w->at_us[slot] = at;
}

int64
lh_window_next_us(const LhWindow *w, int64 now)
{
	int64		next = -1;

	for (int i = 0; i < LH_WINDOW_MAX; i++)
	{
		int64		at = w->at_us[i];

		if (slot_free(at, now))
			return now;
		if (at != LH_WINDOW_PENDING && (next < 0 || at + WINDOW_US < next))
			next = at + WINDOW_US;
	}
	return next;
}

void
lh_window_block(LhWindow *w, int64 until)
{
	/* as if each was sent a window before until: the first may go at until */
	for (int i = 0; i < LH_WINDOW_MAX; i++)
		if (w->at_us[i] != LH_WINDOW_PENDING)
			w->at_us[i] = Max(w->at_us[i], until - WINDOW_US);
}

double
lh_bucket_tokens(const LhBucket *b, double rate, double burst, int64 now)
{
	if (b->tokens < 0)
		return burst;
	if (now > b->at_us)
		return Min(burst, b->tokens + (double) (now - b->at_us) * rate / 1e6);
	return b->tokens;
}

bool
lh_bucket_take(LhBucket *b, double rate, double burst, int64 now)
{
	b->tokens = lh_bucket_tokens(b, rate, burst, now);
	b->at_us = Max(b->at_us, now);
	if (b->tokens < 1.0)
		return false;
	b->tokens -= 1.0;
	return true;
}

int64
lh_bucket_next_us(const LhBucket *b, double rate, int64 now)
{
	double		missing;

	if (b->tokens < 0 || b->tokens >= 1.0)
		return now;
	missing = 1.0 - b->tokens;
	return Max(now, b->at_us + (int64) ceil(missing * 1e6 / rate));
}

static double
lane_rate(const LhLane *lane)
{
	return Max(*lane->rate, 0.1);
}

/* ---- inside libcurl: no PostgreSQL below until "back in PostgreSQL" ---- */

static int
lh_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
#ifdef __linux__
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0)
		epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
#endif
	return 0;
}

static int
lh_timer(CURLM *m, long timeout_ms, void *userp)
{
	timer_due_us = timeout_ms < 0 ? -1 : now_us() + (int64) timeout_ms * 1000;
	return 0;
}

/* ---- back in PostgreSQL (plain C still: nothing here raises) ---- */

/* libcurl's threaded resolver inherits this mask: PostgreSQL's signals stay on this thread. */
static CURLMcode
socket_action_masked(curl_socket_t s, int mask)
{
	sigset_t	all,
				old;
	CURLMcode	mc;
	int			still;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
#ifdef __linux__
	mc = curl_multi_socket_action(multi, s, mask, &still);
#else
	mc = curl_multi_perform(multi, &still);
#endif
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return mc;
}

/* The handle (out of the multi handle first) and the answer so far. */
static void
request_release(LhRequest *q)
{
	if (!q->set_up)
		return;
	if (q->call.easy && multi)
		curl_multi_remove_handle(multi, q->call.easy);
	http_call_cleanup(&q->call);
	q->set_up = false;
}

/* The request is done with its slot: one never sent (still pending) frees it at once. */
static void
release_slot(LhRequest *q)
{
	if (q->slot >= 0 && customer.at_us[q->slot] == LH_WINDOW_PENDING)
		lh_window_stamp(&customer, q->slot, 0);
	q->slot = -1;
}

static void
request_free(LhRequest *q)
{
	release_slot(q);
	request_release(q);
	free(q->method);
	free(q->path);
	free(q->body);
	free(q);
}

static void
finish(LhRequest *q, long status, const char *error, bool sent)
{
	LhLane	   *lane = q->lane;
	LhDone	   *d = calloc(1, sizeof(LhDone));

	if (d == NULL)
	{
		request_free(q);
		return;
	}
	d->r.tag = q->tag;
	d->r.status = status;
	d->r.sent = sent;
	if (q->set_up)
	{
		d->r.has_retry_after = q->call.has_retry_after;
		d->r.retry_after_s = q->call.retry_after_s;
		d->r.request_id = q->call.request_id;
		q->call.request_id = NULL;
	}
	if (status > 0)
		d->r.body = http_call_take_body(&q->call, &d->r.len);
	if (error)
	{
		strlcpy(d->r.error, error, sizeof(d->r.error));
		/* libcurl's messages name hosts, not queries; this makes sure */
		http_redact(d->r.error, lane->credential);
	}
	if (lane->done_tail)
		lane->done_tail->next = d;
	else
		lane->done_head = d;
	lane->done_tail = d;
	lane->n_done++;
	request_free(q);
}

void
lh_cancel_all(LhLane *lane)
{
	while (lane->running)
	{
		LhRequest  *q = lane->running;

		lane->running = q->next;
		request_free(q);
	}
	lane->n_running = 0;
	while (lane->queued_head)
	{
		LhRequest  *q = lane->queued_head;

		lane->queued_head = q->next;
		request_free(q);
	}
	lane->queued_tail = NULL;
	lane->n_queued = 0;
	while (lane->done_head)
	{
		LhDone	   *d = lane->done_head;

		lane->done_head = d->next;
		lh_result_free(&d->r);
	}
	lane->done_tail = NULL;
	lane->n_done = 0;
}

static bool
multi_start(const char **error)
{
	multi = curl_multi_init();
	if (multi == NULL)
	{
		*error = "libcurl could not start a multi handle";
		return false;
	}
#ifdef __linux__
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, lh_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, lh_timer);
#endif
	return true;
}

/* libcurl, the epoll set and the multi handle, once. */
static bool
engine_start(const char **error)
{
	if (multi != NULL)
		return true;
	if (!http_init())
	{
		*error = "libcurl could not be initialised";
		return false;
	}
#ifdef __linux__
	if (epfd < 0)
	{
		epfd = epoll_create1(EPOLL_CLOEXEC);
		if (epfd < 0)
		{
			*error = "epoll_create1 failed";
			return false;
		}
	}
#endif
	return multi_start(error);
}

void
lh_close_idle(void)
{
	const char *error;

	if (multi == NULL)
		return;
	for (LhLane *l = lanes; l; l = l->next)
		if (lh_outstanding(l) > 0)
			return;
	curl_multi_cleanup(multi);
	multi = NULL;
	timer_due_us = -1;
	if (!multi_start(&error))
		elog(LOG, "voipbin: %s", error);
}

LhLane *
lh_lane_create(const char *user_agent, const double *rate, int max_running, LhOn429 on_429)
{
	LhLane	   *lane = MemoryContextAllocZero(TopMemoryContext, sizeof(LhLane));
	LhLane	  **tail = &lanes;

	lane->user_agent = user_agent;
	lane->rate = rate;
	lane->max_running = max_running;
	lane->on_429 = on_429;
	lane->bucket.tokens = -1;
	while (*tail)
		tail = &(*tail)->next;
	*tail = lane;
	return lane;
}

bool
lh_configure(LhLane *lane, const char *api_url, const char *credential, CredentialKind kind,
			 const char *ca_file, const char **error)
{
	size_t		n;

	if (!engine_start(error))
		return false;
	lh_cancel_all(lane);
	http_wipe_free(lane->api_url);
	http_wipe_free(lane->credential);
	free(lane->ca_file);
	lane->api_url = strdup(api_url);
	lane->credential = credential ? strdup(credential) : NULL;
	lane->kind = kind;
	lane->ca_file = ca_file && ca_file[0] ? strdup(ca_file) : NULL;
	if (lane->api_url == NULL)
	{
		*error = "out of memory";
		return false;
	}
	n = strlen(lane->api_url);
	while (n > 0 && lane->api_url[n - 1] == '/')
		lane->api_url[--n] = '\0';
	return true;
}

static char *
strdup_or_null(const char *s, bool *failed)
{
	char	   *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*failed = true;
	return d;
}

void
lh_submit(LhLane *lane, const LhSend *s)
{
	LhRequest  *q = calloc(1, sizeof(LhRequest));
	bool		failed = false;

	if (q == NULL)
		return;					/* as if lost: the caller's request stays unanswered */
	q->slot = -1;
	q->lane = lane;
	q->tag = s->tag;
	q->method = strdup_or_null(s->method, &failed);
	q->path = strdup_or_null(s->path, &failed);
	if (s->body)
	{
		q->body = malloc(s->body_len + 1);
		if (q->body)
		{
			memcpy(q->body, s->body, s->body_len);
			q->body[s->body_len] = '\0';
			q->body_len = s->body_len;
		}
		else
			failed = true;
	}
	q->timeout_ms = s->timeout_ms > 0 ? s->timeout_ms : voipbin_http_timeout_ms;
	q->fresh = s->fresh_connection;
	if (failed || q->path == NULL)
	{
		/* reported like a request that never left, so the caller says so */
		finish(q, 0, "out of memory", false);
		return;
	}
	if (lane->queued_tail)
		lane->queued_tail->next = q;
	else
		lane->queued_head = q;
	lane->queued_tail = q;
	lane->n_queued++;
}

/* Sets q up for libcurl; false (and q finished with why) when it cannot be. */
static bool
start_request(LhRequest *q)
{
	LhLane	   *lane = q->lane;
	HttpRequest req = {0};
	HttpSetupError setup;
	const char *why;

	req.base_url = lane->api_url ? lane->api_url : "";
	req.path = q->path;
	req.method = q->method;
	req.body = q->body;
	req.body_len = q->body_len;
	req.credential = lane->credential;
	req.cred_kind = lane->kind == CRED_ACCESSKEY ? HTTP_CRED_ACCESSKEY :
		lane->kind == CRED_JWT ? HTTP_CRED_BEARER : HTTP_CRED_NONE;
	req.ca_file = lane->ca_file;
	req.timeout_ms = q->timeout_ms;
	req.connect_timeout_ms = Min(q->timeout_ms, LH_CONNECT_TIMEOUT_MS);
	req.max_response = LH_MAX_RESPONSE;
	req.user_agent = lane->user_agent;

	setup = http_call_setup(&q->call, &req, &why);
	q->set_up = true;
	if (setup == HTTP_SETUP_NO_MEMORY)
	{
		finish(q, 0, "out of memory", false);
		return false;
	}
	if (setup != HTTP_SETUP_OK ||
		(q->fresh &&
		 (curl_easy_setopt(q->call.easy, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK ||
		  curl_easy_setopt(q->call.easy, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK)) ||
		curl_easy_setopt(q->call.easy, CURLOPT_PRIVATE, q) != CURLE_OK ||
		curl_easy_setopt(q->call.easy, CURLOPT_PREREQFUNCTION, lh_sending) != CURLE_OK ||
		curl_easy_setopt(q->call.easy, CURLOPT_PREREQDATA, q) != CURLE_OK ||
		curl_multi_add_handle(multi, q->call.easy) != CURLM_OK)
	{
		finish(q, 0, "libcurl refused the request's options", false);
		return false;
	}
	q->next = lane->running;
	lane->running = q;
	lane->n_running++;
	return true;
}


static void
unlink_running(LhRequest *q)
{
	LhLane	   *lane = q->lane;

	for (LhRequest **p = &lane->running; *p; p = &(*p)->next)
		if (*p == q)
		{
			*p = q->next;
			q->next = NULL;
			lane->n_running--;
			return;
		}
}

/* VoIPBIN refused a request for the customer's rate: every lane waits. */
static int64
block_for_429(const LhRequest *q)
{
	int64		wait_s = 1;		/* an upstream 429 carries no Retry-After: back off anyway */
	int64		until;

	if (q->call.has_retry_after && q->call.retry_after_s > 0)
		wait_s = Min((int64) q->call.retry_after_s, LH_MAX_WAIT_S);
	until = now_us() + wait_s * 1000000;
	customer_blocked_until_us = Max(customer_blocked_until_us, until);
	lh_window_block(&customer, customer_blocked_until_us);
	return until;
}

/* A transfer ended: a result, or (a 429 on a resending lane) back to the head of its queue. */
static void
transfer_done(LhRequest *q, CURLcode code)
{
	LhLane	   *lane = q->lane;
	long		status = 0;
	long		request_size = 0;
	char		why[256];

	unlink_running(q);
	curl_multi_remove_handle(multi, q->call.easy);
	release_slot(q);
	if (code == CURLE_OK)
		curl_easy_getinfo(q->call.easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(q->call.easy, CURLINFO_REQUEST_SIZE, &request_size);
	if (code == CURLE_OK && status == 429)
	{
		int64		until = block_for_429(q);

		if (lane->on_429 == LH_429_RESEND && q->refused < LH_MAX_429)
		{
			lane->blocked_until_us = Max(lane->blocked_until_us, until);
			lane->bucket.tokens = 0;
			lane->bucket.at_us = lane->blocked_until_us;
			q->refused++;
			/* out of the multi handle already */
			http_call_cleanup(&q->call);
			q->set_up = false;
			q->next = lane->queued_head;
			lane->queued_head = q;
			if (lane->queued_tail == NULL)
				lane->queued_tail = q;
			lane->n_queued++;
			return;
		}
	}
	if (code != CURLE_OK)
	{
		if (q->call.too_large || code == CURLE_FILESIZE_EXCEEDED)
			snprintf(why, sizeof(why), "the answer is larger than %d bytes", LH_MAX_RESPONSE);
		else if (q->call.no_memory)
			snprintf(why, sizeof(why), "out of memory for the answer");
		else
			snprintf(why, sizeof(why), "%s", q->call.errbuf[0] ? q->call.errbuf : curl_easy_strerror(code));
		/* no byte of the request written: VoIPBIN cannot have seen it (DNS, connect, TLS) */
		finish(q, 0, why, request_size > 0);
		return;
	}
	finish(q, status, NULL, true);
}

static void
collect(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		LhRequest  *q = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &q);
		if (q)
			transfer_done(q, msg->data.result);
	}
}

/* Whether lane may start one more request now; takes its lane's token if so (the window's slot is the caller's to take). */
static bool
may_start(LhLane *lane, int64 now)
{
	double		rate = lane_rate(lane);
	double		burst = lh_burst_for(rate);

	if (lane->n_running >= lane->max_running || now < lane->blocked_until_us ||
		now < customer_blocked_until_us ||
		lh_bucket_tokens(&lane->bucket, rate, burst, now) < 1.0 ||
		lh_window_free(&customer, now) < 1)
		return false;
	lh_bucket_take(&lane->bucket, rate, burst, now);
	return true;
}

/* Starts what lane's pace and the customer's allow. */
static void
start_lane(LhLane *lane)
{
	int64		now = now_us();

	while (lane->queued_head && may_start(lane, now))
	{
		LhRequest  *q = lane->queued_head;

		lane->queued_head = q->next;
		if (lane->queued_head == NULL)
			lane->queued_tail = NULL;
		q->next = NULL;
		lane->n_queued--;
		q->slot = lh_window_take(&customer, now);
		if (start_request(q))
		{
#ifdef __linux__
			/* let curl open its socket and set its timer now */
			socket_action_masked(CURL_SOCKET_TIMEOUT, 0);
#endif
		}
	}
}

int
lh_capacity(LhLane *lane, long ahead_ms)
{
	int64		now = now_us();
	int64		then = now + (int64) ahead_ms * 1000;
	double		rate = lane_rate(lane);
	double		n;

	if (multi == NULL || now < lane->blocked_until_us || now < customer_blocked_until_us)
		return 0;
	n = Min(lh_bucket_tokens(&lane->bucket, rate, lh_burst_for(rate), then),
			(double) lh_window_free(&customer, then));
	n = Min(floor(n), (double) (lane->max_running - lane->n_running - lane->n_queued));
	return n > 0 ? (int) n : 0;
}

long
lh_next_start_ms(LhLane *lane)
{
	int64		now = now_us();
	int64		next;

	next = Max(lane->blocked_until_us, customer_blocked_until_us);
	next = Max(next, lh_bucket_next_us(&lane->bucket, lane_rate(lane), now));
	{
		int64		slot_at = lh_window_next_us(&customer, now);

		/* every slot waits on a request not sent yet: its transfer wakes the loop, and so does this */
		next = Max(next, slot_at < 0 ? now + WINDOW_POLL_US : slot_at);
	}
	return (long) Max(0, (next - now + 999) / 1000);
}

long
lh_step(LhLane *lane)
{
	int64		now;
	long		timeout = -1;

	if (multi == NULL)
		return -1;

#ifdef __linux__
	{
		struct epoll_event evs[16];
		int			n = epfd >= 0 ? epoll_wait(epfd, evs, lengthof(evs), 0) : 0;

		for (int i = 0; i < n; i++)
		{
			int			mask = 0;

			if (evs[i].events & EPOLLIN)
				mask |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				mask |= CURL_CSELECT_OUT;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				mask |= CURL_CSELECT_ERR;
			socket_action_masked(evs[i].data.fd, mask);
		}
	}
	if (timer_due_us >= 0 && now_us() >= timer_due_us)
	{
		timer_due_us = -1;
		socket_action_masked(CURL_SOCKET_TIMEOUT, 0);
	}
#else
	for (LhLane *l = lanes; l; l = l->next)
		if (l->n_running > 0)
		{
			socket_action_masked(0, 0);
			break;
		}
#endif
	collect();

	/* start what the pace allows: the caller's lane first */
	start_lane(lane);
	for (LhLane *l = lanes; l; l = l->next)
		if (l != lane)
			start_lane(l);
	collect();

	now = now_us();
	if (timer_due_us >= 0)
		timeout = (long) Max(0, (timer_due_us - now + 999) / 1000);
	for (LhLane *l = lanes; l; l = l->next)
	{
#ifndef __linux__
		if (l->n_running > 0)
			timeout = timeout < 0 ? FALLBACK_POLL_MS : Min(timeout, FALLBACK_POLL_MS);
#endif
		if (l->queued_head && l->n_running < l->max_running)
		{
			long		ms = lh_next_start_ms(l);

			timeout = timeout < 0 ? ms : Min(timeout, ms);
		}
		/* results wait for their lane's step, which may come later in the loop */
		if (l->done_head)
			timeout = 0;
	}
	return timeout;
}

LhResult *
lh_take(LhLane *lane)
{
	LhDone	   *d = lane->done_head;

	if (d == NULL)
		return NULL;
	lane->done_head = d->next;
	if (lane->done_head == NULL)
		lane->done_tail = NULL;
	lane->n_done--;
	return &d->r;
}

void
lh_result_free(LhResult *r)
{
	LhDone	   *d = (LhDone *) ((char *) r - offsetof(LhDone, r));

	free(r->body);
	free(r->request_id);
	free(d);
}

int
lh_outstanding(LhLane *lane)
{
	return lane->n_queued + lane->n_running + lane->n_done;
}

int
lh_wait_fd(void)
{
	const char *error;

	/* the descriptor must exist before the loop builds its WaitEventSet */
	if (!engine_start(&error))
	{
		elog(LOG, "voipbin: %s", error);
		return -1;
	}
	return epfd;
}
