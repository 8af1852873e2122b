/*
 * webhook_receiver.c — libmicrohttpd serving VoIPBIN's webhook requests.
 *
 * Why libmicrohttpd, thread per connection: it is a small, long-hardened
 * HTTP/1.1 server (strict parsing, chunked bodies, keep-alive, Expect:
 * 100-continue, header memory bounded per connection, idle timeouts), so
 * none of that is written here.  A thread per connection lets each request
 * wait for its body to become durable with a plain blocking wait while the
 * others go on; the connection cap bounds the threads.  The worker's main
 * thread can block on the database (a locked table, a slow trigger) at any
 * time, so the receiver must not live in its wait loop.
 *
 * libmicrohttpd does not listen itself: http_gate.c accepts, checks each new
 * connection's request line (0.9.75 hangs up without an answer or a hook on
 * one it cannot split) and hands the good ones over with
 * MHD_add_connection().  Later requests on a kept-alive connection are parsed
 * by libmicrohttpd alone: a request line it cannot split (no space, an empty
 * method, a space in the target) still closes the connection without an
 * answer, and a bad or missing version gets its own 400 (505 for another
 * major version) before any hook of ours runs, so that one is not counted.
 * No hook of 0.9.75 comes earlier (the socket is shut for writing before the
 * connection's close is announced), and peeking in between requests would
 * misread a pipelined request libmicrohttpd has partly read already.  From
 * the request line on, every request has a context (on_request_line()), so
 * libmicrohttpd's own answers to bad headers reach on_completed() and are
 * counted.
 *
 * Nothing here includes or calls PostgreSQL: all signals stay blocked on
 * these threads, and news for the main thread goes through an eventfd.
 */
#ifdef POSTGRES_H
#error "webhook_receiver.c runs on the receiver's threads and must not use the PostgreSQL API"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "net/webhook/webhook_receiver.h"
#include "net/journal/journal.h"
#include "net/webhook/http_gate.h"
#include "net/webhook/webhook_request.h"
#include "net/no_postgres.h"

#define MAX_SOCKETS 16
#define PATH_MAX_LEN 1024
#define STATE_LEN 400
/* Bodies held in memory at once, over all connections, beyond one of max size. */
#define INFLIGHT_BUDGET (64 * 1024 * 1024)

/* One request being read. */
typedef struct Req
{
	char	   *buf;
	size_t		len;
	size_t		cap;
	uint64_t	max;
	bool		head_seen;		/* on_head() has run */
	bool		answered;		/* by this file, not libmicrohttpd */
	const char *reason;			/* why the signature was refused */
} Req;

/*
 * A connection, for the watchdog: libmicrohttpd's timeout is one of silence,
 * so a client that sends a byte now and then would keep a thread forever;
 * the watchdog hangs up on a request not whole WEBHOOK_REQUEST_DEADLINE_S
 * after its connection opened or its previous answer went out.
 */
typedef struct Conn
{
	struct Conn *prev,
			   *next;
	int			fd;
	int64_t		deadline_ms;	/* 0: none (the body is whole, an answer is on its way) */
} Conn;

static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t conns_cond;
static Conn *conns;
static pthread_t watchdog;
static bool watchdog_running;
static bool watchdog_stop;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* signalled (with mu) when a refetch ends or the receiver stops */
static pthread_cond_t refetch_cond;

static int	wake_fd = -1;
static struct MHD_Daemon *daemon_;	/* one for all sockets: the gate hands it connections */
static int	n_listening;

/*
 * A connection the gate has handed over, until libmicrohttpd announces it
 * (on its own thread): the request's deadline counts from the gate's accept.
 */
typedef struct Handed
{
	int			fd;
	int64_t		deadline_ms;
	int64_t		stale_ms;		/* never announced (libmicrohttpd failed it): forgotten then */
} Handed;
static Handed handed[WEBHOOK_MAX_CONNECTIONS];	/* guarded by conns_mu */
static unsigned int n_conns;	/* announced and not closed yet; guarded by conns_mu */

/*
 * libmicrohttpd's own connection limit is set above the gate's: 0.9.75 keeps
 * a mutex locked when a connection handed to it finds the limit reached
 * (new_connection_process_()'s "firm check"), and every thread of the daemon
 * then deadlocks.  The gate counts exactly (handed[] and n_conns) and never
 * lets it get that far.
 */
#define MHD_LIMIT (WEBHOOK_MAX_CONNECTIONS + 16)

/* guarded by mu */
static char path[PATH_MAX_LEN] = "/voipbin/events";
static uint64_t max_body = 16 * 1024 * 1024;
static char secret[WEBHOOK_SECRET_MAX];
static size_t secret_len;
static bool refetch_allowed;	/* the key came from GET /customer */
static bool refetch_pending;	/* a refetch is due or running */
static int64_t refetch_next_ms; /* CLOCK_MONOTONIC: no new refetch before */
static bool stopping;			/* webhook_receiver_stop(): waiters give up */
static bool key_pending;		/* no key yet, and the first fetch is due or running */

/* atomics */
static uint64_t n_received;
static uint64_t n_refused;
static uint64_t inflight;
static int	refetch_wanted;

static void
wake_main(void)
{
	uint64_t	one = 1;

	if (wake_fd >= 0 && write(wake_fd, &one, sizeof(one)) < 0)
	{
		/* EAGAIN: the counter is already non-zero, the main thread will wake */
	}
}

void
webhook_receiver_wake(void)
{
	wake_main();
}

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int
webhook_receiver_init(char *errbuf, size_t errlen)
{
	pthread_condattr_t attr;

	if (wake_fd >= 0)
		return wake_fd;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&conns_cond, &attr);
	pthread_cond_init(&refetch_cond, &attr);
	pthread_condattr_destroy(&attr);
	wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wake_fd < 0)
		snprintf(errbuf, errlen, "eventfd failed: %s", strerror(errno));
	return wake_fd;
}

void
webhook_receiver_ack_wakeup(void)
{
	uint64_t	n;

	if (wake_fd >= 0 && read(wake_fd, &n, sizeof(n)) < 0)
	{
		/* EAGAIN: nothing was pending */
	}
}

void
webhook_receiver_set_path(const char *p)
{
	pthread_mutex_lock(&mu);
	snprintf(path, sizeof(path), "%s", p ? p : "");
	pthread_mutex_unlock(&mu);
}

void
webhook_receiver_set_max_body(uint64_t bytes)
{
	pthread_mutex_lock(&mu);
	max_body = bytes;
	pthread_mutex_unlock(&mu);
}

void
webhook_receiver_set_secret(const char *s, size_t len)
{
	pthread_mutex_lock(&mu);
	OPENSSL_cleanse(secret, sizeof(secret));
	if (s == NULL || len >= sizeof(secret))
		len = 0;
	if (len)
		memcpy(secret, s, len);
	secret_len = len;
	pthread_mutex_unlock(&mu);
}

void
webhook_receiver_counts(uint64_t *received, uint64_t *refused)
{
	*received = __atomic_load_n(&n_received, __ATOMIC_RELAXED);
	*refused = __atomic_load_n(&n_refused, __ATOMIC_RELAXED);
}

void
webhook_receiver_set_refetch(bool allowed, bool restart_limit)
{
	pthread_mutex_lock(&mu);
	refetch_allowed = allowed;
	if (!allowed && refetch_pending)
	{
		refetch_pending = false;
		pthread_cond_broadcast(&refetch_cond);
	}
	if (restart_limit)
		refetch_next_ms = 0;
	pthread_mutex_unlock(&mu);
}

bool
webhook_receiver_take_refetch(void)
{
	return __atomic_exchange_n(&refetch_wanted, 0, __ATOMIC_RELAXED) != 0;
}

void
webhook_receiver_refetch_done(void)
{
	pthread_mutex_lock(&mu);
	refetch_pending = false;
	key_pending = false;
	pthread_cond_broadcast(&refetch_cond);
	pthread_mutex_unlock(&mu);
}

void
webhook_receiver_set_key_pending(bool on)
{
	pthread_mutex_lock(&mu);
	key_pending = on;
	if (!on)
		pthread_cond_broadcast(&refetch_cond);
	pthread_mutex_unlock(&mu);
}

/* CLOCK_MONOTONIC, WEBHOOK_REFETCH_WAIT_MS from now: how long a request waits for a key. */
static struct timespec
key_wait_deadline(void)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += WEBHOOK_REFETCH_WAIT_MS / 1000;
	until.tv_nsec += (long) (WEBHOOK_REFETCH_WAIT_MS % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000)
	{
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	return until;
}

/*
 * A request found no key: when the first fetch of one is due or under way
 * (the receiver has just started), it waits for that fetch like a request
 * waits for a refetch, on its own thread and at most WEBHOOK_REFETCH_WAIT_MS.
 * True when there was one to wait for: the caller verifies again.
 */
static bool
await_key(void)
{
	struct timespec until = key_wait_deadline();
	bool		waited = false;

	pthread_mutex_lock(&mu);
	if (key_pending && !stopping)
	{
		waited = true;
		while (key_pending && !stopping &&
			   pthread_cond_timedwait(&refetch_cond, &mu, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&mu);
	return waited;
}

/*
 * A request did not verify with a key from GET /customer: the customer's
 * secret may have been rotated.  Claims a refetch when one is due (at most
 * one per WEBHOOK_REFETCH_INTERVAL_MS), then waits, on this connection's own
 * thread and at most WEBHOOK_REFETCH_WAIT_MS, until the refetch that is due
 * or on its way has ended (the main thread has set the new key, if any).
 * True when there was such a refetch to wait for: the caller verifies again
 * with the key now in hand.  False (no refetch allowed or due): a plain 401.
 */
static bool
await_refetch(void)
{
	int64_t		now = http_mono_ms();
	struct timespec until = key_wait_deadline();
	bool		waited = false;

	pthread_mutex_lock(&mu);
	if (refetch_allowed && !stopping && (refetch_pending || now >= refetch_next_ms))
	{
		if (!refetch_pending)
		{
			refetch_pending = true;
			refetch_next_ms = now + WEBHOOK_REFETCH_INTERVAL_MS;
			__atomic_store_n(&refetch_wanted, 1, __ATOMIC_RELAXED);
			wake_main();
		}
		waited = true;
		while (refetch_pending && !stopping &&
			   pthread_cond_timedwait(&refetch_cond, &mu, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&mu);
	return waited;
}

/* ---- durability ---- */

/*
 * Appends the body to the journal (which takes data over: malloc'd, len + 1
 * bytes) and waits until it is on disk.  True: answer 200.
 */
static bool
deliver(char *data, size_t len)
{
	uint64_t	pos = journal_submit_owned(JOURNAL_SRC_WEBHOOK, 0, now_us(), data, len, len);

	return pos != 0 && journal_wait_durable(pos, WEBHOOK_DURABLE_WAIT_MS);
}

/* ---- the watchdog ---- */

static void
set_deadline(struct MHD_Connection *c, bool on)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	Conn	   *conn = info ? (Conn *) info->socket_context : NULL;

	if (conn == NULL)
		return;
	pthread_mutex_lock(&conns_mu);
	conn->deadline_ms = on ? http_mono_ms() + WEBHOOK_REQUEST_DEADLINE_S * 1000 : 0;
	pthread_mutex_unlock(&conns_mu);
}

static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		Conn	   *conn = calloc(1, sizeof(*conn));

		*socket_context = conn;
		if (conn == NULL || info == NULL)
			return;
		conn->fd = info->connect_fd;
		conn->deadline_ms = http_mono_ms() + WEBHOOK_REQUEST_DEADLINE_S * 1000;
		pthread_mutex_lock(&conns_mu);
		for (int i = 0; i < WEBHOOK_MAX_CONNECTIONS; i++)
			if (handed[i].stale_ms && handed[i].fd == conn->fd)
			{
				conn->deadline_ms = handed[i].deadline_ms;
				handed[i].stale_ms = 0;
			}
		n_conns++;
		conn->next = conns;
		if (conns)
			conns->prev = conn;
		conns = conn;
		pthread_mutex_unlock(&conns_mu);
	}
	else if (*socket_context)
	{
		/* called before libmicrohttpd closes the socket: the fd is still this one */
		Conn	   *conn = *socket_context;

		pthread_mutex_lock(&conns_mu);
		if (conn->prev)
			conn->prev->next = conn->next;
		else if (conns == conn)
			conns = conn->next;
		if (conn->next)
			conn->next->prev = conn->prev;
		n_conns--;
		pthread_mutex_unlock(&conns_mu);
		free(conn);
		*socket_context = NULL;
	}
}

static void *
watchdog_main(void *arg)
{
	pthread_mutex_lock(&conns_mu);
	while (!watchdog_stop)
	{
		struct timespec next;
		int64_t		now = http_mono_ms();

		for (Conn *c = conns; c; c = c->next)
			if (c->deadline_ms && now >= c->deadline_ms)
			{
				/* libmicrohttpd sees the end of the stream and closes it */
				(void) shutdown(c->fd, SHUT_RDWR);
				c->deadline_ms = 0;
			}
		clock_gettime(CLOCK_MONOTONIC, &next);
		next.tv_sec += 1;
		pthread_cond_timedwait(&conns_cond, &conns_mu, &next);
	}
	pthread_mutex_unlock(&conns_mu);
	return NULL;
}

/* ---- HTTP ---- */

static enum MHD_Result
answer(struct MHD_Connection *c, Req *r, int status, const char *reason, bool close_after)
{
	char		text[256];
	struct MHD_Response *resp;
	enum MHD_Result ret;
	int			n;

	if (r)
		r->answered = true;
	n = snprintf(text, sizeof(text), "%d %s\n", status,
				 reason ? reason : status == 200 ? "stored" : "refused");
	resp = MHD_create_response_from_buffer((size_t) n, text, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (status == 405)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "POST, PUT, GET, DELETE");
	if (status == 503)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	if (close_after)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(c, (unsigned int) status, resp);
	MHD_destroy_response(resp);
	if (status == 200)
		__atomic_add_fetch(&n_received, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&n_refused, 1, __ATOMIC_RELAXED);
	wake_main();
	return ret;
}

static enum MHD_Result
count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	WebhookHead *h = cls;

	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		h->n_content_length++;
	else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
		h->n_transfer_encoding++;
	return MHD_YES;
}

/* The first call for a request: its head, before any body is read. */
static enum MHD_Result
on_head(struct MHD_Connection *c, const char *url, const char *method, void **con_cls)
{
	WebhookHead head;
	char		want[PATH_MAX_LEN];
	uint64_t	max;
	const char *reason;
	int			status;
	Req		   *r = *con_cls ? *con_cls : calloc(1, sizeof(*r));

	if (r == NULL)
		return MHD_NO;
	*con_cls = r;
	r->head_seen = true;
	pthread_mutex_lock(&mu);
	memcpy(want, path, sizeof(want));
	max = max_body;
	pthread_mutex_unlock(&mu);

	memset(&head, 0, sizeof(head));
	head.method = method;
	head.path = url;
	(void) MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &head);
	head.content_length = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
													  MHD_HTTP_HEADER_CONTENT_LENGTH);
	head.transfer_encoding = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
														 MHD_HTTP_HEADER_TRANSFER_ENCODING);
	status = webhook_check_head(&head, want, max, &reason);
	if (status != 0)
		/* an unread body must not be taken for the next request: close */
		return answer(c, r, status, reason, true);
	r->max = max;
	return MHD_YES;
}

static bool
append(Req *r, const char *data, size_t n)
{
	if (r->len + n > r->cap)
	{
		size_t		cap = r->cap ? r->cap : 4096;
		char	   *buf;

		while (cap < r->len + n)
			cap *= 2;
		if (cap > r->max)
			cap = r->max;
		if (__atomic_add_fetch(&inflight, cap - r->cap, __ATOMIC_RELAXED) >
			INFLIGHT_BUDGET + r->max ||
			(buf = realloc(r->buf, cap)) == NULL)
		{
			__atomic_sub_fetch(&inflight, cap - r->cap, __ATOMIC_RELAXED);
			return false;
		}
		r->buf = buf;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
	return true;
}

/* The body's signature against the key in hand: 0, 401 or 503 (none known). */
static int
verify(const char *sig, Req *r)
{
	char		key[WEBHOOK_SECRET_MAX];
	size_t		key_len;
	int			status;

	pthread_mutex_lock(&mu);
	key_len = secret_len;
	memcpy(key, secret, key_len);
	pthread_mutex_unlock(&mu);
	status = webhook_check_body(sig, key, key_len, r->buf, r->len, &r->reason);
	OPENSSL_cleanse(key, sizeof(key));
	return status;
}

/* The whole body is there. */
static enum MHD_Result
on_body(struct MHD_Connection *c, Req *r)
{
	const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, WEBHOOK_SIGNATURE_HEADER);
	int			status;
	char	   *data;
	size_t		len;

	set_deadline(c, false);
	status = verify(sig, r);
	/* the receiver has just started: the request waits for its key, then is checked */
	if (status == 503 && await_key())
		status = verify(sig, r);
	/* a rotated secret: the request waits for the fresh one, then is checked again */
	if (status == 401 && await_refetch())
		status = verify(sig, r);
	if (status != 0)
		return answer(c, r, status, r->reason, false);

	/* the journal takes the buffer over, with room for a terminating NUL */
	if (r->cap < r->len + 1)
	{
		char	   *buf = realloc(r->buf, r->len + 1);

		if (buf == NULL)
			return answer(c, r, 503, "out of memory", false);
		__atomic_add_fetch(&inflight, r->len + 1 - r->cap, __ATOMIC_RELAXED);
		r->buf = buf;
		r->cap = r->len + 1;
	}
	r->buf[r->len] = '\0';
	data = r->buf;
	len = r->len;
	__atomic_sub_fetch(&inflight, r->cap, __ATOMIC_RELAXED);
	r->buf = NULL;
	r->len = r->cap = 0;
	if (!deliver(data, len))
		return answer(c, r, 503, "the event could not be made durable in time", false);
	return answer(c, r, 200, "stored", false);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size,
		   void **con_cls)
{
	Req		   *r = *con_cls;

	if (r == NULL || !r->head_seen)
		return on_head(c, url, method, con_cls);
	if (r->answered)
	{
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		size_t		n = *upload_data_size;

		*upload_data_size = 0;
		if (r->len + n > r->max)
			/* a chunked body has no length to refuse it by up front */
			return answer(c, r, 413, "body larger than voipbin.max_frame_size", true) == MHD_YES
				? MHD_YES : MHD_NO;
		if (!append(r, upload_data, n))
			return answer(c, r, 503, "too many bodies in memory", true) == MHD_YES
				? MHD_YES : MHD_NO;
		return MHD_YES;
	}
	return on_body(c, r);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	Req		   *r = *con_cls;

	/* the next request on a keep-alive connection has its own time */
	set_deadline(c, true);
	if (r == NULL || !r->answered)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);

		/* libmicrohttpd answered it itself: a bad header line, headers too large, no Host:, … */
		if (info && info->http_status >= 400)
		{
			__atomic_add_fetch(&n_refused, 1, __ATOMIC_RELAXED);
			wake_main();
		}
	}
	if (r == NULL)
		return;
	if (r->buf)
	{
		__atomic_sub_fetch(&inflight, r->cap, __ATOMIC_RELAXED);
		free(r->buf);
	}
	free(r);
	*con_cls = NULL;
}

/*
 * The request line is parsed: the request gets its context now, so that
 * libmicrohttpd reports its end to on_completed() even when it answers the
 * request itself, before on_request() would see it (a bad header line,
 * headers over the limit, no Host:), and that answer is counted as refused.
 */
static void *
on_request_line(void *cls, const char *uri, struct MHD_Connection *c)
{
	return calloc(1, sizeof(Req));
}

/* ---- the gate's hooks (its thread) ---- */

static void
gate_hand_over(int fd, const struct sockaddr *addr, socklen_t addrlen, int64_t deadline_ms)
{
	int64_t		now = http_mono_ms();

	pthread_mutex_lock(&conns_mu);
	for (int i = 0; i < WEBHOOK_MAX_CONNECTIONS; i++)
		if (handed[i].stale_ms && (handed[i].fd == fd || handed[i].stale_ms <= now))
			handed[i].stale_ms = 0;
	for (int i = 0; i < WEBHOOK_MAX_CONNECTIONS; i++)
		if (handed[i].stale_ms == 0)
		{
			handed[i] = (Handed) {.fd = fd, .deadline_ms = deadline_ms, .stale_ms = now + 5000};
			break;
		}
	pthread_mutex_unlock(&conns_mu);
	/* libmicrohttpd's thread for it announces it to on_connection(); on failure it closes fd */
	if (MHD_add_connection(daemon_, fd, addr, addrlen) != MHD_YES)
	{
		pthread_mutex_lock(&conns_mu);
		for (int i = 0; i < WEBHOOK_MAX_CONNECTIONS; i++)
			if (handed[i].stale_ms && handed[i].fd == fd)
				handed[i].stale_ms = 0;
		pthread_mutex_unlock(&conns_mu);
	}
}

/* Connections libmicrohttpd holds: announced ones, and those handed over and not announced yet. */
static unsigned int
gate_held(void)
{
	int64_t		now = http_mono_ms();
	unsigned int n;

	pthread_mutex_lock(&conns_mu);
	n = n_conns;
	for (int i = 0; i < WEBHOOK_MAX_CONNECTIONS; i++)
		if (handed[i].stale_ms && handed[i].stale_ms > now)
			n++;
	pthread_mutex_unlock(&conns_mu);
	return n;
}

static void
gate_refused(int status)
{
	__atomic_add_fetch(&n_refused, 1, __ATOMIC_RELAXED);
	wake_main();
}

/* ---- listening ---- */

static void
describe(const struct sockaddr *sa, socklen_t salen, char *out, size_t outlen)
{
	char		host[NI_MAXHOST];
	char		serv[NI_MAXSERV];

	if (getnameinfo(sa, salen, host, sizeof(host), serv, sizeof(serv),
					NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(out, outlen, "?");
	else if (sa->sa_family == AF_INET6)
		snprintf(out, outlen, "[%s]:%s", host, serv);
	else
		snprintf(out, outlen, "%s:%s", host, serv);
}

/* Appends to a list: sep first unless buf is empty. */
static void add(char *buf, size_t len, const char *sep, const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

static void
add(char *buf, size_t len, const char *sep, const char *fmt,...)
{
	size_t		used = strlen(buf);
	va_list		ap;

	if (used > 0 && used < len)
		used += snprintf(buf + used, len - used, "%s", sep);
	if (used >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

/* Binds one address; the socket, or -1 with why in err. */
static int
listen_on(struct addrinfo *ai, char *err, size_t errlen)
{
	int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
	int			on = 1;

	if (fd < 0)
	{
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (ai->ai_family == AF_INET6)
		(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
	{
		snprintf(err, errlen, "%s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* The HTTP server, with no socket of its own: the gate hands it connections. */
static struct MHD_Daemon *
serve(void)
{
	sigset_t	all;
	sigset_t	old;
	struct MHD_Daemon *d;

	/* MHD's threads inherit this mask: the postmaster's signals stay the main thread's */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
						 MHD_USE_POLL | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC,
						 0, NULL, NULL, on_request, NULL,
						 MHD_OPTION_URI_LOG_CALLBACK, on_request_line, NULL,
						 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) MHD_LIMIT,
						 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) WEBHOOK_IDLE_TIMEOUT_S,
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) WEBHOOK_HEADER_LIMIT,
						 MHD_OPTION_STRICT_FOR_CLIENT, (int) 1,
						 MHD_OPTION_THREAD_STACK_SIZE, (size_t) (256 * 1024),
						 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
						 MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
						 MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return d;
}

int
webhook_receiver_start(const char *addresses, int port, char *state, size_t statelen)
{
	char	   *list = strdup(addresses ? addresses : "");
	char	   *save = NULL;
	char		ok[STATE_LEN];
	char		bad[STATE_LEN];
	char		portstr[16];
	int			fds[MAX_SOCKETS];
	int			n_fds = 0;

	webhook_receiver_stop();
	pthread_mutex_lock(&mu);
	stopping = false;
	pthread_mutex_unlock(&mu);
	ok[0] = bad[0] = '\0';
	snprintf(portstr, sizeof(portstr), "%d", port);

	for (char *tok = list ? strtok_r(list, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save))
	{
		struct addrinfo hints;
		struct addrinfo *res = NULL;
		const char *host;
		int			rc;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		for (char *e = tok + strlen(tok); e > tok && (e[-1] == ' ' || e[-1] == '\t');)
			*--e = '\0';
		if (*tok == '\0')
			continue;
		host = strcmp(tok, "*") == 0 ? NULL : tok;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		rc = getaddrinfo(host, portstr, &hints, &res);
		if (rc != 0)
		{
			add(bad, sizeof(bad), "; ", "could not resolve \"%s\": %s", tok, gai_strerror(rc));
			continue;
		}
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
		{
			char		where[NI_MAXHOST + 16];
			char		err[128];
			int			fd;
			bool		dup = false;

			describe(ai->ai_addr, ai->ai_addrlen, where, sizeof(where));
			/* "localhost,127.0.0.1" names one address twice */
			for (const char *p = strstr(ok, where); p; p = strstr(p + 1, where))
				if ((p == ok || p[-1] == ' ') && (p[strlen(where)] == ',' || p[strlen(where)] == '\0'))
					dup = true;
			if (dup)
				continue;
			if (n_fds == MAX_SOCKETS)
				break;
			fd = listen_on(ai, err, sizeof(err));
			if (fd < 0)
			{
				add(bad, sizeof(bad), "; ", "could not listen on %s: %s", where, err);
				continue;
			}
			fds[n_fds++] = fd;
			add(ok, sizeof(ok), ", ", "%s", where);
		}
		freeaddrinfo(res);
	}
	free(list);

	if (n_fds > 0)
	{
		static const HttpGateHooks hooks = {gate_hand_over, gate_held, gate_refused};
		char		err[128];

		if ((daemon_ = serve()) == NULL)
		{
			snprintf(bad, sizeof(bad), "could not listen on %s: libmicrohttpd could not start", ok);
			for (int i = 0; i < n_fds; i++)
				close(fds[i]);
		}
		else if (!http_gate_start(fds, n_fds, &hooks, err, sizeof(err)))
		{
			snprintf(bad, sizeof(bad), "could not listen on %s: %s", ok, err);
			MHD_stop_daemon(daemon_);
			daemon_ = NULL;
		}
		else
			n_listening = n_fds;
	}
	if (n_listening > 0)
	{
		sigset_t	all;
		sigset_t	old;

		watchdog_stop = false;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		watchdog_running = pthread_create(&watchdog, NULL, watchdog_main, NULL) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}

	if (n_listening > 0 && bad[0])
		snprintf(state, statelen, "listening on %s (%s)", ok, bad);
	else if (n_listening > 0)
		snprintf(state, statelen, "listening on %s", ok);
	else if (bad[0])
		snprintf(state, statelen, "%s", bad);
	else
		snprintf(state, statelen, "not listening: voipbin.webhook_listen_addresses is empty");
	return n_listening;
}

void
webhook_receiver_stop(void)
{
	/* a request waiting for a refetch gives up now, and is checked with the key in hand */
	pthread_mutex_lock(&mu);
	stopping = true;
	pthread_cond_broadcast(&refetch_cond);
	pthread_mutex_unlock(&mu);
	/* joins the connection threads: one waiting on the journal takes at most its wait */
	/* first the gate: it closes the listening sockets and hands nothing over any more */
	http_gate_stop();
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
	n_listening = 0;
	if (watchdog_running)
	{
		pthread_mutex_lock(&conns_mu);
		watchdog_stop = true;
		pthread_cond_broadcast(&conns_cond);
		pthread_mutex_unlock(&conns_mu);
		pthread_join(watchdog, NULL);
		watchdog_running = false;
	}
}
