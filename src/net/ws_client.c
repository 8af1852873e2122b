/*
 * ws_client.c — libwebsockets on a thread that never touches PostgreSQL.
 *
 * VoIPBIN silently drops what a consumer leaves unread past 2,000 messages,
 * so the socket must be read even while the worker waits on a lock or a slow
 * trigger.  This thread owns libwebsockets outright (one lws context per
 * connection, so a reload that changes the CA file just builds a new one),
 * reassembles every message (up to voipbin.max_frame_size, counting the rest)
 * and appends it to the journal (journal.c), which queues it for the worker;
 * connection news goes through a queue of its own here.  It uses only libc, pthreads, OpenSSL and libwebsockets: no palloc,
 * no elog, and all signals stay blocked here so the postmaster's signals
 * reach the worker's main thread.
 */
#ifdef POSTGRES_H
#error "ws_client.c must not use the PostgreSQL API"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ws_client.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

#include "journal.h"

typedef enum CmdKind
{
	CMD_CONNECT,
	CMD_DISCONNECT,
	CMD_SEND
} CmdKind;

typedef struct Cmd
{
	struct Cmd *next;
	CmdKind		kind;
	uint32_t	conn;
	WsTarget	target;			/* CMD_CONNECT: owned copies */
	char	   *text;			/* CMD_SEND: LWS_PRE bytes of room, then text */
	size_t		len;
} Cmd;

/* Shared between the threads, guarded by mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static Cmd *cmd_head,
		   *cmd_tail;
static WsEvent *ev_head,
		   *ev_tail;
static struct lws_context *live_ctx;	/* for lws_cancel_service() */
static size_t max_frame = 16 * 1024 * 1024;	/* voipbin.max_frame_size */
static bool stopping;
static bool thread_done;		/* thread_main returned (for a bounded join) */
static uint32_t next_conn;

static pthread_t thread;
static bool thread_running;
static int	wake_fd = -1;

/* Owned by the network thread alone. */
typedef struct Conn
{
	struct lws_context *ctx;
	struct lws *wsi;
	uint32_t	conn;
	bool		closed_reported;
	bool		established;
	WsTarget	target;
	lws_retry_bo_t retry;
	char	   *rx;				/* message being reassembled */
	size_t		rx_len,
				rx_cap;
	bool		rx_binary;
	uint64_t	rx_total;		/* its length so far, kept or not */
	size_t		rx_max;			/* max_frame when it began */
	Cmd		   *out_head,		/* text messages waiting to be written */
			   *out_tail;
	int64_t		last_valid_us;
	int			peer_close_code;
	char		reason[256];
} Conn;

static Conn cur;

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void
free_target(WsTarget *t)
{
	free((char *) t->host);
	free((char *) t->path);
	free((char *) t->bearer);
	free((char *) t->ca_file);
	memset(t, 0, sizeof(*t));
}

/* Appends an event for the main thread and wakes it. */
static void
emit(WsEvent *ev)
{
	uint64_t	one = 1;
	ssize_t		rc;

	ev->next = NULL;
	pthread_mutex_lock(&mu);
	if (ev_tail)
		ev_tail->next = ev;
	else
		ev_head = ev;
	ev_tail = ev;
	pthread_mutex_unlock(&mu);
	do
		rc = write(wake_fd, &one, sizeof(one));
	while (rc < 0 && errno == EINTR);
}

static void
emit_simple(WsEventKind kind, uint32_t conn, int http_status, const char *text)
{
	WsEvent    *ev = calloc(1, sizeof(WsEvent));

	if (!ev)
		return;					/* out of memory: nothing better to do here */
	ev->kind = kind;
	ev->conn = conn;
	ev->http_status = http_status;
	ev->at_us = now_us();
	if (text)
	{
		ev->data = strdup(text);
		ev->len = ev->data ? strlen(ev->data) : 0;
	}
	emit(ev);
}

static void
report_closed(int http_status, const char *why)
{
	if (cur.closed_reported || cur.conn == 0)
		return;
	cur.closed_reported = true;
	emit_simple(WS_EV_CLOSED, cur.conn, http_status, why);
}

/*
 * Journals the reassembled message (which takes the buffer) before anything
 * else happens to it.  One past max_frame_size is journaled as OVERSIZE with
 * the bytes kept: the worker turns it into a dead letter naming its size.
 */
static void
deliver_message(void)
{
	char	   *data;
	unsigned	flags = cur.rx_binary ? JOURNAL_BINARY : 0;

	/* the reassembly buffer grew by doubling: give the slack back before queueing */
	data = cur.rx ? realloc(cur.rx, cur.rx_len + 1) : strdup("");
	if (data == NULL)
		data = cur.rx;
	if (cur.rx_total > cur.rx_len)
		flags |= JOURNAL_OVERSIZE;
	cur.rx = NULL;
	if (data)
		journal_submit_owned(JOURNAL_SRC_WEBSOCKET, flags, now_us(), data, cur.rx_len,
							 cur.rx_total);
	cur.rx_len = cur.rx_cap = 0;
	cur.rx_total = 0;
}

/* Keeps the message's bytes up to rx_max; counts the rest without keeping it. */
static bool
rx_append(const void *in, size_t len)
{
	cur.rx_total += len;
	if (cur.rx_len + len > cur.rx_max)
		len = cur.rx_max > cur.rx_len ? cur.rx_max - cur.rx_len : 0;
	if (len == 0)
		return true;
	if (cur.rx_len + len + 1 > cur.rx_cap)
	{
		size_t		cap = cur.rx_cap ? cur.rx_cap : 4096;
		char	   *p;

		while (cap < cur.rx_len + len + 1)
			cap *= 2;
		p = realloc(cur.rx, cap);
		if (!p)
			return false;
		cur.rx = p;
		cur.rx_cap = cap;
	}
	memcpy(cur.rx + cur.rx_len, in, len);
	cur.rx_len += len;
	cur.rx[cur.rx_len] = '\0';	/* handy for text; len stays exact */
	return true;
}

static void
free_outgoing(void)
{
	while (cur.out_head)
	{
		Cmd		   *c = cur.out_head;

		cur.out_head = c->next;
		free(c->text);
		free(c);
	}
	cur.out_tail = NULL;
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason,
		 void *user, void *in, size_t len)
{
	switch (reason)
	{
		case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS:
			/* lws loads no system store of its own here: add it, then ours */
			SSL_CTX_set_default_verify_paths((SSL_CTX *) user);
			if (cur.target.ca_file &&
				SSL_CTX_load_verify_locations((SSL_CTX *) user,
											  cur.target.ca_file, NULL) != 1)
				snprintf(cur.reason, sizeof(cur.reason),
						 "could not load the CA file \"%s\"", cur.target.ca_file);
			return 0;

		case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
			if (wsi == cur.wsi && cur.target.bearer)
			{
				unsigned char **p = (unsigned char **) in;
				unsigned char *end = *p + len;
				size_t		n = strlen(cur.target.bearer) + 8;
				char	   *v = malloc(n);
				int			rc;

				if (!v)
					return -1;
				snprintf(v, n, "Bearer %s", cur.target.bearer);
				rc = lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
												  (unsigned char *) v,
												  (int) strlen(v), p, end);
				explicit_bzero(v, n);
				free(v);
				if (rc)
					return -1;
			}
			return 0;

		case LWS_CALLBACK_CLIENT_ESTABLISHED:
			if (wsi != cur.wsi)
				return -1;
			cur.established = true;
			cur.last_valid_us = now_us();
			emit_simple(WS_EV_CONNECTED, cur.conn, 0, NULL);
			if (cur.out_head)
				lws_callback_on_writable(wsi);
			return 0;

		case LWS_CALLBACK_CLIENT_RECEIVE:
			if (wsi != cur.wsi)
				return 0;
			lws_validity_confirmed(wsi);
			cur.last_valid_us = now_us();
			if (lws_is_first_fragment(wsi))
			{
				cur.rx_len = 0;
				cur.rx_total = 0;
				cur.rx_binary = lws_frame_is_binary(wsi);
				pthread_mutex_lock(&mu);
				cur.rx_max = max_frame;
				pthread_mutex_unlock(&mu);
			}
			if (!rx_append(in, len))
			{
				snprintf(cur.reason, sizeof(cur.reason),
						 "out of memory for a %zu-byte message", cur.rx_len + len);
				return -1;
			}
			if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
				deliver_message();
			return 0;

		case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
			if (wsi == cur.wsi)
				cur.last_valid_us = now_us();
			return 0;

		case LWS_CALLBACK_CLIENT_WRITEABLE:
			if (wsi != cur.wsi || !cur.out_head)
				return 0;
			{
				Cmd		   *c = cur.out_head;
				int			n;

				n = lws_write(wsi, (unsigned char *) c->text + LWS_PRE, c->len,
							  LWS_WRITE_TEXT);
				cur.out_head = c->next;
				if (!cur.out_head)
					cur.out_tail = NULL;
				free(c->text);
				free(c);
				if (n < 0)
				{
					snprintf(cur.reason, sizeof(cur.reason), "write failed");
					return -1;
				}
				if (cur.out_head)
					lws_callback_on_writable(wsi);
			}
			return 0;

		case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
			if (wsi == cur.wsi && len >= 2)
				cur.peer_close_code = (((unsigned char *) in)[0] << 8) |
					((unsigned char *) in)[1];
			return 0;

		case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
			if (wsi == cur.wsi)
			{
				char		why[300];
				int			status = lws_http_client_http_response(wsi);

				if (cur.reason[0])
					snprintf(why, sizeof(why), "%s", cur.reason);
				else if (status > 0 && status != 101)
					snprintf(why, sizeof(why), "handshake answered HTTP %d", status);
				else
					snprintf(why, sizeof(why), "%s",
							 in && len ? (const char *) in : "connection failed");
				cur.wsi = NULL;
				report_closed(status == 101 ? 0 : status, why);
			}
			return 0;

		case LWS_CALLBACK_CLIENT_CLOSED:
			if (wsi == cur.wsi)
			{
				char		why[300];
				int64_t		quiet_us = now_us() - cur.last_valid_us;

				if (cur.reason[0])
					snprintf(why, sizeof(why), "%s", cur.reason);
				else if (cur.peer_close_code)
					snprintf(why, sizeof(why),
							 "server closed the connection (code %d)",
							 cur.peer_close_code);
				else if (quiet_us >= (int64_t) cur.target.idle_timeout_s * 1000000 - 500000)
					snprintf(why, sizeof(why),
							 "no frame for %d s (idle timeout)", cur.target.idle_timeout_s);
				else
					snprintf(why, sizeof(why), "connection lost");
				cur.wsi = NULL;
				report_closed(0, why);
			}
			return 0;

		default:
			return 0;
	}
}

static const struct lws_protocols protocols[] = {
	{"voipbin", callback, 0, 65536, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Closes the current connection and its context; reports CLOSED once. */
static void
close_current(const char *why)
{
	struct lws_context *ctx = cur.ctx;

	/* destroying the context fires CLIENT_CLOSED: let it carry our reason */
	if (!cur.reason[0])
		snprintf(cur.reason, sizeof(cur.reason), "%s", why);
	if (ctx)
	{
		pthread_mutex_lock(&mu);
		live_ctx = NULL;
		pthread_mutex_unlock(&mu);
		lws_context_destroy(ctx);
	}
	report_closed(0, why);
	free_outgoing();
	free(cur.rx);
	free_target(&cur.target);
	memset(&cur, 0, sizeof(cur));
}

static void
open_connection(Cmd *c)
{
	struct lws_context_creation_info info;
	struct lws_client_connect_info ci;
	struct lws_context *ctx;

	close_current("replaced by a new connection");
	cur.conn = c->conn;
	cur.target = c->target;		/* takes ownership of the strings */
	memset(&c->target, 0, sizeof(c->target));

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.timeout_secs = cur.target.handshake_timeout_s > 0 ?
		(unsigned) cur.target.handshake_timeout_s : 10;
	info.connect_timeout_secs = info.timeout_secs;
	info.fd_limit_per_thread = 16;
	ctx = lws_create_context(&info);
	if (!ctx)
	{
		report_closed(0, cur.reason[0] ? cur.reason : "could not create the libwebsockets context");
		return;
	}
	cur.ctx = ctx;
	pthread_mutex_lock(&mu);
	live_ctx = ctx;
	pthread_mutex_unlock(&mu);

	/* lws pings when the link is quiet and hangs up when nothing answers */
	cur.retry.secs_since_valid_hangup = (uint16_t) (cur.target.idle_timeout_s > 0 ?
													cur.target.idle_timeout_s : 35);
	cur.retry.secs_since_valid_ping = cur.retry.secs_since_valid_hangup / 3;
	if (cur.retry.secs_since_valid_ping < 1)
		cur.retry.secs_since_valid_ping = 1;
	if (cur.retry.secs_since_valid_ping > 10)
		cur.retry.secs_since_valid_ping = 10;

	memset(&ci, 0, sizeof(ci));
	ci.context = ctx;
	ci.address = cur.target.host;
	ci.port = cur.target.port;
	ci.path = cur.target.path;
	ci.host = cur.target.host;
	ci.origin = cur.target.host;
	ci.ssl_connection = cur.target.tls ? LCCSCF_USE_SSL : 0;
	ci.ietf_version_or_minus_one = -1;
	ci.local_protocol_name = "voipbin";
	ci.retry_and_idle_policy = &cur.retry;
	ci.pwsi = &cur.wsi;
	if (!lws_client_connect_via_info(&ci) && !cur.closed_reported)
	{
		cur.wsi = NULL;
		report_closed(0, cur.reason[0] ? cur.reason : "could not start the connection");
	}
}

static void
queue_outgoing(Cmd *c)
{
	if (c->conn != cur.conn || !cur.wsi)
	{
		free(c->text);
		free(c);
		return;
	}
	c->next = NULL;
	if (cur.out_tail)
		cur.out_tail->next = c;
	else
		cur.out_head = c;
	cur.out_tail = c;
	if (cur.established)
		lws_callback_on_writable(cur.wsi);
}

static void *
thread_main(void *arg)
{
	(void) arg;
	for (;;)
	{
		Cmd		   *cmds;
		bool		stop;

		pthread_mutex_lock(&mu);
		while (!cmd_head && !stopping && !cur.ctx)
			pthread_cond_wait(&cv, &mu);
		cmds = cmd_head;
		cmd_head = cmd_tail = NULL;
		stop = stopping;
		pthread_mutex_unlock(&mu);

		while (cmds)
		{
			Cmd		   *c = cmds;

			cmds = c->next;
			switch (c->kind)
			{
				case CMD_CONNECT:
					open_connection(c);
					free_target(&c->target);
					free(c);
					break;
				case CMD_DISCONNECT:
					if (c->conn == cur.conn)
						close_current("closed by the worker");
					free(c);
					break;
				case CMD_SEND:
					queue_outgoing(c);
					break;
			}
		}
		if (stop)
		{
			close_current("shutting down");
			pthread_mutex_lock(&mu);
			thread_done = true;
			pthread_cond_broadcast(&cv);
			pthread_mutex_unlock(&mu);
			return NULL;
		}
		if (cur.ctx && lws_service(cur.ctx, 0) < 0)
			close_current("libwebsockets service failed");
	}
}

static void
push_cmd(Cmd *c)
{
	c->next = NULL;
	pthread_mutex_lock(&mu);
	if (cmd_tail)
		cmd_tail->next = c;
	else
		cmd_head = c;
	cmd_tail = c;
	if (live_ctx)
		lws_cancel_service(live_ctx);
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
}

int
ws_start(char *errbuf, size_t errlen)
{
	sigset_t	all,
				old;
	int			rc;

	errbuf[0] = '\0';
	if (thread_running)
		return wake_fd;
	wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wake_fd < 0)
	{
		snprintf(errbuf, errlen, "eventfd failed: %s", strerror(errno));
		return -1;
	}
	/* lws logs would carry URLs (with the access key): keep them silent */
	lws_set_log_level(0, NULL);
	stopping = false;
	thread_done = false;

	/* the thread inherits this mask: every signal belongs to the main thread */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&thread, NULL, thread_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		snprintf(errbuf, errlen, "could not start the network thread: %s", strerror(rc));
		close(wake_fd);
		wake_fd = -1;
		return -1;
	}
	thread_running = true;
	return wake_fd;
}

void
ws_stop(int wait_ms)
{
	struct timespec due;
	bool		done;

	if (!thread_running)
		return;
	clock_gettime(CLOCK_REALTIME, &due);
	due.tv_sec += wait_ms / 1000;
	due.tv_nsec += (long) (wait_ms % 1000) * 1000000L;
	if (due.tv_nsec >= 1000000000L)
	{
		due.tv_sec++;
		due.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&mu);
	stopping = true;
	if (live_ctx)
		lws_cancel_service(live_ctx);
	pthread_cond_signal(&cv);
	/* the thread may sit in getaddrinfo(), which nothing interrupts */
	while (!thread_done &&
		   pthread_cond_timedwait(&cv, &mu, &due) != ETIMEDOUT)
		;
	done = thread_done;
	pthread_mutex_unlock(&mu);
	thread_running = false;
	if (!done)
	{
		/* leave it: the process exits now and takes the thread with it */
		pthread_detach(thread);
		return;
	}
	pthread_join(thread, NULL);

	pthread_mutex_lock(&mu);
	while (ev_head)
	{
		WsEvent    *ev = ev_head;

		ev_head = ev->next;
		ws_event_free(ev);
	}
	ev_tail = NULL;
	pthread_mutex_unlock(&mu);
	close(wake_fd);
	wake_fd = -1;
}

uint32_t
ws_connect(const WsTarget *t)
{
	Cmd		   *c = calloc(1, sizeof(Cmd));
	uint32_t	conn;

	if (!c)
		return 0;
	pthread_mutex_lock(&mu);
	conn = c->conn = ++next_conn;
	pthread_mutex_unlock(&mu);
	c->kind = CMD_CONNECT;
	c->target = *t;
	c->target.host = dup_or_null(t->host);
	c->target.path = dup_or_null(t->path);
	c->target.bearer = dup_or_null(t->bearer);
	c->target.ca_file = dup_or_null(t->ca_file);
	/* c belongs to the network thread from here on: it may be freed already */
	push_cmd(c);
	return conn;
}

void
ws_disconnect(void)
{
	Cmd		   *c = calloc(1, sizeof(Cmd));

	if (!c)
		return;
	c->kind = CMD_DISCONNECT;
	pthread_mutex_lock(&mu);
	c->conn = next_conn;
	pthread_mutex_unlock(&mu);
	push_cmd(c);
}

void
ws_send_text(const char *text, size_t len)
{
	Cmd		   *c = calloc(1, sizeof(Cmd));

	if (!c)
		return;
	c->text = malloc(LWS_PRE + len + 1);
	if (!c->text)
	{
		free(c);
		return;
	}
	memcpy(c->text + LWS_PRE, text, len);
	c->len = len;
	c->kind = CMD_SEND;
	pthread_mutex_lock(&mu);
	c->conn = next_conn;
	pthread_mutex_unlock(&mu);
	push_cmd(c);
}

WsEvent *
ws_take(void)
{
	WsEvent    *head;

	pthread_mutex_lock(&mu);
	head = ev_head;
	ev_head = ev_tail = NULL;
	pthread_mutex_unlock(&mu);
	return head;
}

void
ws_set_max_frame_size(size_t bytes)
{
	pthread_mutex_lock(&mu);
	max_frame = bytes;
	pthread_mutex_unlock(&mu);
}

void
ws_event_free(WsEvent *ev)
{
	if (!ev)
		return;
	free(ev->data);
	free(ev);
}

void
ws_ack_wakeup(void)
{
	uint64_t	n;

	while (read(wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
}
