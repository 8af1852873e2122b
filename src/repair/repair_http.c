/*
 * repair_http.c — gap repair's REST client, run inside the worker's loop.
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
 * the customer's own users (docs/voipbin.md, "Rate limit: 17 requests a second"): requests leave at
 * voipbin.repair_rate through a token bucket holding at most that many per
 * second, a 429 stops everything for its Retry-After, and at most
 * RH_MAX_RUNNING are in flight.
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

#include "repair/repair_http.h"
#include "base/endpoint.h"
#include "base/settings.h"
#include "net/http/http_client.h"

#define RH_MAX_RESPONSE		(4 * 1024 * 1024)
#define RH_CONNECT_TIMEOUT_MS 5000
#define RH_MAX_429			8
#define RH_MAX_WAIT_S		60
#define FALLBACK_POLL_MS	10
#define RH_USER_AGENT		"voipbin-postgres/1.1 (gap repair)"

typedef struct RhRequest
{
	struct RhRequest *next;
	char	   *path;
	void	   *tag;
	int			refused;		/* 429s so far */
	bool		set_up;			/* call holds a handle (or an answer) */
	HttpCall	call;
} RhRequest;

typedef struct RhDone
{
	struct RhDone *next;
	RhResult	r;
} RhDone;

static CURLM *multi = NULL;
static int	epfd = -1;
static int64 timer_due_us = -1;	/* curl's timer; -1: none */
static RhRequest *queued_head = NULL,
		   *queued_tail = NULL;
static RhRequest *running = NULL;
static int	n_running = 0;
static int	n_queued = 0;
static RhDone *done_head = NULL,
		   *done_tail = NULL;
static int	n_done = 0;
static RhBucket bucket = {-1, 0};
static int64 blocked_until_us = 0;	/* a 429's Retry-After */

static char *cfg_api_url = NULL;
static char *cfg_credential = NULL;
static CredentialKind cfg_kind = CRED_NONE;
static char *cfg_ca_file = NULL;

static int64
now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64) tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ---- the pacer: pure ---- */

/* At most rate requests in any second on top of the steady pace, and never past VoIPBIN's 33. */
double
rh_burst_for(double rate)
{
	return Max(1.0, Min(floor(rate), 16.0));
}

bool
rh_bucket_take(RhBucket *b, double rate, double burst, int64 now)
{
	if (b->tokens < 0)
		b->tokens = burst;
	else if (now > b->at_us)
		b->tokens = Min(burst, b->tokens + (double) (now - b->at_us) * rate / 1e6);
	b->at_us = Max(b->at_us, now);
	if (b->tokens < 1.0)
		return false;
	b->tokens -= 1.0;
	return true;
}

int64
rh_bucket_next_us(const RhBucket *b, double rate, int64 now)
{
	double		missing;

	if (b->tokens < 0 || b->tokens >= 1.0)
		return now;
	missing = 1.0 - b->tokens;
	return Max(now, b->at_us + (int64) ceil(missing * 1e6 / rate));
}

/* ---- inside libcurl: no PostgreSQL below until "back in PostgreSQL" ---- */

static int
rh_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
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
rh_timer(CURLM *m, long timeout_ms, void *userp)
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
request_release(RhRequest *q)
{
	if (!q->set_up)
		return;
	if (q->call.easy && multi)
		curl_multi_remove_handle(multi, q->call.easy);
	http_call_cleanup(&q->call);
	q->set_up = false;
}

static void
request_free(RhRequest *q)
{
	request_release(q);
	free(q->path);
	free(q);
}

static void
finish(RhRequest *q, long status, const char *error)
{
	RhDone	   *d = calloc(1, sizeof(RhDone));

	if (d == NULL)
	{
		request_free(q);
		return;
	}
	d->r.tag = q->tag;
	d->r.status = status;
	if (status > 0)
		d->r.body = http_call_take_body(&q->call, &d->r.len);
	if (error)
	{
		strlcpy(d->r.error, error, sizeof(d->r.error));
		/* libcurl's messages name hosts, not queries; this makes sure */
		http_redact(d->r.error, cfg_credential);
	}
	if (done_tail)
		done_tail->next = d;
	else
		done_head = d;
	done_tail = d;
	n_done++;
	request_free(q);
}

void
rh_cancel_all(void)
{
	while (running)
	{
		RhRequest  *q = running;

		running = q->next;
		request_free(q);
	}
	n_running = 0;
	while (queued_head)
	{
		RhRequest  *q = queued_head;

		queued_head = q->next;
		request_free(q);
	}
	queued_tail = NULL;
	n_queued = 0;
	while (done_head)
	{
		RhDone	   *d = done_head;

		done_head = d->next;
		free(d->r.body);
		free(d);
	}
	done_tail = NULL;
	n_done = 0;
	timer_due_us = -1;
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
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, rh_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, rh_timer);
#endif
	return true;
}

/*
 * Closes the connections kept for reuse: an idle one the server closes
 * would otherwise keep the loop's descriptor readable.
 */
void
rh_close_idle(void)
{
	const char *error;

	if (multi == NULL || n_running > 0 || n_queued > 0)
		return;
	rh_cancel_all();
	curl_multi_cleanup(multi);
	multi = NULL;
	timer_due_us = -1;
	if (!multi_start(&error))
		elog(LOG, "voipbin: %s", error);
}

bool
rh_configure(const char *api_url, const char *credential, CredentialKind kind,
			 const char *ca_file, const char **error)
{
	size_t		n;

	if (multi == NULL)
	{
		if (!http_init())
		{
			*error = "libcurl could not be initialised";
			return false;
		}
#ifdef __linux__
		epfd = epoll_create1(EPOLL_CLOEXEC);
		if (epfd < 0)
		{
			*error = "epoll_create1 failed";
			return false;
		}
#endif
		if (!multi_start(error))
			return false;
	}
	rh_cancel_all();
	http_wipe_free(cfg_api_url);
	http_wipe_free(cfg_credential);
	free(cfg_ca_file);
	cfg_api_url = strdup(api_url);
	cfg_credential = credential ? strdup(credential) : NULL;
	cfg_kind = kind;
	cfg_ca_file = ca_file && ca_file[0] ? strdup(ca_file) : NULL;
	if (cfg_api_url == NULL)
	{
		*error = "out of memory";
		return false;
	}
	n = strlen(cfg_api_url);
	while (n > 0 && cfg_api_url[n - 1] == '/')
		cfg_api_url[--n] = '\0';
	return true;
}

void
rh_submit(const char *path, void *tag)
{
	RhRequest  *q = calloc(1, sizeof(RhRequest));

	if (q == NULL || (q->path = strdup(path)) == NULL)
	{
		free(q);
		/* reported like a request that got no answer, so the repair says so */
		q = calloc(1, sizeof(RhRequest));
		if (q)
		{
			q->tag = tag;
			finish(q, 0, "out of memory");
		}
		return;
	}
	q->tag = tag;
	if (queued_tail)
		queued_tail->next = q;
	else
		queued_head = q;
	queued_tail = q;
	n_queued++;
}

/* Sets q up for libcurl; false (and q finished with why) when it cannot be. */
static bool
start_request(RhRequest *q)
{
	HttpRequest req = {0};
	HttpSetupError setup;
	const char *why;

	req.base_url = cfg_api_url;
	req.path = q->path;
	req.credential = cfg_credential;
	req.cred_kind = cfg_kind == CRED_ACCESSKEY ? HTTP_CRED_ACCESSKEY :
		cfg_kind == CRED_JWT ? HTTP_CRED_BEARER : HTTP_CRED_NONE;
	req.ca_file = cfg_ca_file;
	req.timeout_ms = voipbin_http_timeout_ms;
	req.connect_timeout_ms = Min(voipbin_http_timeout_ms, RH_CONNECT_TIMEOUT_MS);
	req.max_response = RH_MAX_RESPONSE;
	req.user_agent = RH_USER_AGENT;

	setup = http_call_setup(&q->call, &req, &why);
	q->set_up = true;
	if (setup == HTTP_SETUP_NO_MEMORY)
	{
		finish(q, 0, "out of memory");
		return false;
	}
	if (setup != HTTP_SETUP_OK ||
		curl_easy_setopt(q->call.easy, CURLOPT_PRIVATE, q) != CURLE_OK ||
		curl_multi_add_handle(multi, q->call.easy) != CURLM_OK)
	{
		finish(q, 0, "libcurl refused the request's options");
		return false;
	}
	q->next = running;
	running = q;
	n_running++;
	return true;
}

static void
unlink_running(RhRequest *q)
{
	for (RhRequest **p = &running; *p; p = &(*p)->next)
		if (*p == q)
		{
			*p = q->next;
			q->next = NULL;
			n_running--;
			return;
		}
}

/* A transfer ended: a result, or (429) back to the head of the queue. */
static void
transfer_done(RhRequest *q, CURLcode code)
{
	long		status = 0;
	char		why[256];

	unlink_running(q);
	curl_multi_remove_handle(multi, q->call.easy);
	if (code == CURLE_OK)
		curl_easy_getinfo(q->call.easy, CURLINFO_RESPONSE_CODE, &status);
	if (code == CURLE_OK && status == 429 && q->refused < RH_MAX_429)
	{
		int64		wait_s = 1;	/* an upstream 429 carries no Retry-After: back off anyway */

		if (q->call.has_retry_after && q->call.retry_after_s > 0)
			wait_s = Min((int64) q->call.retry_after_s, RH_MAX_WAIT_S);
		blocked_until_us = Max(blocked_until_us, now_us() + wait_s * 1000000);
		bucket.tokens = 0;
		bucket.at_us = blocked_until_us;
		q->refused++;
		/* out of the multi handle already */
		http_call_cleanup(&q->call);
		q->set_up = false;
		q->next = queued_head;
		queued_head = q;
		if (queued_tail == NULL)
			queued_tail = q;
		n_queued++;
		return;
	}
	if (code != CURLE_OK)
	{
		if (q->call.too_large || code == CURLE_FILESIZE_EXCEEDED)
			snprintf(why, sizeof(why), "the answer is larger than %d bytes", RH_MAX_RESPONSE);
		else if (q->call.no_memory)
			snprintf(why, sizeof(why), "out of memory for the answer");
		else
			snprintf(why, sizeof(why), "%s", q->call.errbuf[0] ? q->call.errbuf : curl_easy_strerror(code));
		finish(q, 0, why);
		return;
	}
	finish(q, status, NULL);
}

static void
collect(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		RhRequest  *q = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &q);
		if (q)
			transfer_done(q, msg->data.result);
	}
}

long
rh_step(void)
{
	int64		now;
	long		timeout = -1;
	double		rate = Max(voipbin_repair_rate, 0.1);

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
	if (n_running > 0)
		socket_action_masked(0, 0);
#endif
	collect();

	/* start what the pace allows */
	now = now_us();
	while (queued_head && n_running < RH_MAX_RUNNING && now >= blocked_until_us &&
		   rh_bucket_take(&bucket, rate, rh_burst_for(rate), now))
	{
		RhRequest  *q = queued_head;

		queued_head = q->next;
		if (queued_head == NULL)
			queued_tail = NULL;
		q->next = NULL;
		n_queued--;
		if (start_request(q))
		{
#ifdef __linux__
			/* let curl open its socket and set its timer now */
			socket_action_masked(CURL_SOCKET_TIMEOUT, 0);
#endif
		}
	}
	collect();

	now = now_us();
	if (timer_due_us >= 0)
		timeout = (long) Max(0, (timer_due_us - now + 999) / 1000);
#ifndef __linux__
	if (n_running > 0)
		timeout = timeout < 0 ? FALLBACK_POLL_MS : Min(timeout, FALLBACK_POLL_MS);
#endif
	if (queued_head && n_running < RH_MAX_RUNNING)
	{
		int64		next = Max(blocked_until_us, rh_bucket_next_us(&bucket, rate, now));
		long		ms = (long) Max(0, (next - now + 999) / 1000);

		timeout = timeout < 0 ? ms : Min(timeout, ms);
	}
	if (done_head)
		timeout = 0;
	return timeout;
}

RhResult *
rh_take(void)
{
	RhDone	   *d = done_head;

	if (d == NULL)
		return NULL;
	done_head = d->next;
	if (done_head == NULL)
		done_tail = NULL;
	n_done--;
	return &d->r;
}

void
rh_result_free(RhResult *r)
{
	RhDone	   *d = (RhDone *) ((char *) r - offsetof(RhDone, r));

	free(r->body);
	free(d);
}

int
rh_outstanding(void)
{
	return n_queued + n_running + n_done;
}

int
rh_wait_fd(void)
{
	const char *error;

	/* the descriptor must exist before the loop builds its WaitEventSet */
	if (multi == NULL && !rh_configure("", NULL, CRED_NONE, NULL, &error))
		return -1;
	return epfd;
}
