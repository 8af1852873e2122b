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

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "net/ws/ws_client.h"
#include "net/journal/journal.h"
#include "net/no_postgres.h"

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
static WsNews *ev_head,
		   *ev_tail;
static struct lws_context *live_ctx;	/* for lws_cancel_service() */
static size_t max_frame = 16 * 1024 * 1024;	/* voipbin.max_frame_size */
static bool stopping;
static bool thread_done;		/* thread_main returned (for a bounded join) */
static uint32_t next_conn;

static pthread_t thread;
static bool thread_running;
static int	wake_fd = -1;

/* Addresses of one host name tried in turn, as libwebsockets would. */
#define WS_MAX_ADDRS 8

/*
 * A close this soon after a subscribe, without a close frame, is VoIPBIN
 * refusing a topic (it drops the TCP connection): subscriptions.c's
 * ACTIVE_AFTER_MS.
 */
#define SUBSCRIBE_DROP_US 2000000

/* How long a refused handshake's body may take to arrive after its headers. */
#define BODY_WAIT_US 250000

/* How far an attempt got: what a failure is named after. */
typedef enum Phase
{
	PH_TCP,						/* connect() under way */
	PH_TLS,						/* TCP connected, TLS handshake under way */
	PH_HTTP,					/* upgrade request sent, waiting for its answer */
	PH_OPEN						/* WebSocket established */
} Phase;

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
	char		peer_close_text[124];	/* the close frame's reason, made printable */
	char		reason[256];

	/* what a failure is named after */
	Phase		phase;
	int64_t		started_us;		/* this address's attempt began */
	int64_t		last_send_us;	/* last text message written (a subscribe) */
	struct sockaddr_storage sa[WS_MAX_ADDRS];
	socklen_t	salen[WS_MAX_ADDRS];
	char		addrs[WS_MAX_ADDRS][INET6_ADDRSTRLEN + 8];	/* "1.2.3.4:443", "[::1]:443" */
	int			naddrs,
				addr_idx;
	bool		next_addr_pending;	/* this address failed at TCP: try the next one */
	char		tried[600];		/* what the addresses tried before said */
	WsHttpAnswer *answer;		/* a refused handshake's answer, for the worker */
	size_t		answer_room;	/* bytes of body it can take */
	bool		answer_reading; /* read_http_answer_body() is under way */
	bool		answer_complete;	/* libwebsockets saw the whole body */
} Conn;

static Conn cur;

/* Where the attempt is, for ws_attempt_stage() (written here, read by the main thread). */
typedef enum Stage
{
	STAGE_NONE,
	STAGE_RESOLVING,
	STAGE_TCP,
	STAGE_TLS,
	STAGE_HTTP
} Stage;
static int	stage;				/* a Stage, with __atomic loads and stores */

static void
set_stage(Stage s)
{
	__atomic_store_n(&stage, (int) s, __ATOMIC_RELAXED);
}

static void
set_phase(Phase p)
{
	cur.phase = p;
	set_stage(p == PH_TCP ? STAGE_TCP : p == PH_TLS ? STAGE_TLS :
			  p == PH_HTTP ? STAGE_HTTP : STAGE_NONE);
}

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
emit(WsNews *ev)
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

/* Connection news for the main thread; NULL when out of memory. */
static WsNews *
new_event(WsNewsKind kind, uint32_t conn, int http_status, const char *text)
{
	WsNews    *ev = calloc(1, sizeof(WsNews));

	if (!ev)
		return NULL;
	ev->kind = kind;
	ev->conn = conn;
	ev->http_status = http_status;
	ev->at_us = now_us();
	if (text)
	{
		ev->data = strdup(text);
		ev->len = ev->data ? strlen(ev->data) : 0;
	}
	return ev;
}

static void
emit_connected(void)
{
	WsNews    *ev = new_event(WS_NEWS_CONNECTED, cur.conn, 0, NULL);

	if (ev)						/* out of memory: nothing better to do here */
		emit(ev);
}

/* The CLOSED event, once per connection, with what the failure left. */
static void
report_closed(WsCause cause, int http_status, const char *why)
{
	WsNews    *ev;

	if (cur.closed_reported || cur.conn == 0)
		return;
	cur.closed_reported = true;
	set_stage(STAGE_NONE);
	ev = new_event(WS_NEWS_CLOSED, cur.conn, http_status, why);
	if (!ev)
		return;					/* out of memory: nothing better to do here */
	ev->cause = cause;
	ev->quiet_since_us = cur.established ? cur.last_valid_us : 0;
	ev->answer = cur.answer;
	cur.answer = NULL;
	emit(ev);
}

static bool
timed_out(int timeout_s)
{
	/* lws's own timers fire on a one-second tick: allow for it */
	return now_us() - cur.started_us >= (int64_t) timeout_s * 1000000 - 500000;
}

static const char *
errno_text(int err, char *buf, size_t len)
{
	/* GNU strerror_r: thread-safe, unlike strerror */
	return strerror_r(err, buf, len);
}

/*
 * libwebsockets 4.1 says only "Unable to connect" when connect() fails: it
 * has read the socket's error itself (SO_ERROR, which reading clears).  One
 * more connect() to the same address, bounded to a second, tells refused
 * from unreachable; it runs only after a failure, off the main thread.
 */
static int
tcp_errno_now(int i)
{
	int			fd = socket(cur.sa[i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int			err = 0;
	socklen_t	elen = sizeof(err);

	if (fd < 0)
		return errno;
	if (connect(fd, (struct sockaddr *) &cur.sa[i], cur.salen[i]) != 0)
	{
		if (errno != EINPROGRESS)
			err = errno;
		else
		{
			struct pollfd p = {.fd = fd,.events = POLLOUT};

			if (poll(&p, 1, 1000) <= 0)
				err = ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
				err = errno;
		}
	}
	close(fd);
	return err;
}

/* "connection to 1.2.3.4:443 refused", for the address being tried. */
static void
describe_tcp(char *why, size_t len)
{
	const char *addr = cur.addrs[cur.addr_idx];
	int			timeout_s = cur.target.handshake_timeout_s > 0 ? cur.target.handshake_timeout_s : 10;
	int			err;
	char		ebuf[128];

	if (timed_out(timeout_s))
	{
		snprintf(why, len, "connection to %s timed out after %d s", addr, timeout_s);
		return;
	}
	err = tcp_errno_now(cur.addr_idx);
	if (err == ECONNREFUSED)
		snprintf(why, len, "connection to %s refused", addr);
	else if (err == ETIMEDOUT)
		snprintf(why, len, "connection to %s timed out", addr);
	else if (err == 0)
		snprintf(why, len, "connection to %s failed (a second try right after got through)", addr);
	else
		snprintf(why, len, "connection to %s failed: %s", addr, errno_text(err, ebuf, sizeof(ebuf)));
}

/* The certificate's verdict, or how the TLS handshake ended. */
static void
describe_tls(struct lws *wsi, char *why, size_t len)
{
	SSL		   *ssl = lws_get_ssl(wsi);
	long		verdict = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long err = ERR_peek_last_error();
	int			timeout_s = cur.target.handshake_timeout_s > 0 ? cur.target.handshake_timeout_s : 10;
	const char *addr = cur.addrs[cur.addr_idx];
	size_t		n;

	if (verdict != X509_V_OK)
	{
		n = snprintf(why, len, "TLS with %s: certificate verify failed: %s", addr,
					 X509_verify_cert_error_string(verdict));
		if (n < len && (verdict == X509_V_ERR_HOSTNAME_MISMATCH ||
						verdict == X509_V_ERR_IP_ADDRESS_MISMATCH))
			n += snprintf(why + n, len - n, " (the certificate is not for \"%s\")", cur.target.host);
		if (n < len && cur.target.ca_file)
			snprintf(why + n, len - n, " (trusted: the system's CAs and voipbin.ca_file \"%s\")",
					 cur.target.ca_file);
		else if (n < len)
			snprintf(why + n, len - n, " (trusted: the system's CAs; voipbin.ca_file is not set)");
	}
	else if (timed_out(timeout_s))
		snprintf(why, len, "TLS handshake with %s did not complete within %d s", addr, timeout_s);
	else if (err && ERR_reason_error_string(err))
		snprintf(why, len, "TLS handshake with %s failed: %s", addr, ERR_reason_error_string(err));
	else
		snprintf(why, len, "TLS handshake with %s failed: the server closed the connection", addr);
	ERR_clear_error();
}

/*
 * A refused handshake's answer (a status other than 101), kept for the
 * worker, which parses its body.  libwebsockets 4.1 reads the answer in
 * blocks: whatever came with the headers (all of it, from a server that
 * writes headers and body at once) is in its own buffer once they are
 * parsed, not on the socket.  So the body is taken through libwebsockets:
 * lws_http_client_read() in ESTABLISHED_CLIENT_HTTP, which it calls with the
 * status known before it gives up on the upgrade, hands it over from that
 * buffer, then from the socket, to RECEIVE_CLIENT_HTTP_READ (without any
 * chunked framing).  Content-Length or WS_BODY_MAX bytes at most, waiting at
 * most BODY_WAIT_US for what has not arrived.
 */

/* The answer's headers, and room for its body: cur.answer. */
static void
keep_http_answer(struct lws *wsi)
{
	char		clen[24];
	size_t		want = WS_BODY_MAX;
	WsHttpAnswer *a;

	if (cur.answer)
		return;
	if (lws_hdr_copy(wsi, clen, sizeof(clen), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
	{
		long		n = strtol(clen, NULL, 10);

		want = n < 0 ? 0 : (size_t) n < WS_BODY_MAX ? (size_t) n : WS_BODY_MAX;
	}
	a = calloc(1, sizeof(WsHttpAnswer) + want + 1);
	if (a == NULL)
		return;
	if (lws_hdr_copy(wsi, a->retry_after, sizeof(a->retry_after), WSI_TOKEN_HTTP_RETRY_AFTER) < 0)
		a->retry_after[0] = '\0';
	if (lws_hdr_custom_copy(wsi, a->request_id, sizeof(a->request_id), "x-request-id:", 13) < 0)
		a->request_id[0] = '\0';
	cur.answer = a;
	cur.answer_room = want;
}

/* Drains the body into cur.answer: see above. */
static void
read_http_answer_body(struct lws *wsi)
{
	int			fd = (int) lws_get_socket_fd(wsi);
	int64_t		until = now_us() + BODY_WAIT_US;

	cur.answer_reading = true;
	cur.answer_complete = false;
	while (!cur.answer_complete && cur.answer->body_len < cur.answer_room)
	{
		char		buf[LWS_PRE + 2048];
		char	   *p = buf + LWS_PRE;
		int			n = (int) (sizeof(buf) - LWS_PRE);
		size_t		had = cur.answer->body_len;
		int64_t		left;
		struct pollfd pfd = {.fd = fd,.events = POLLIN};

		/* below 0: the end of the stream or an error, nothing more to come */
		if (lws_http_client_read(wsi, &p, &n) < 0)
			break;
		if (cur.answer->body_len > had)
			continue;
		/* nothing buffered: wait for the socket */
		left = until - now_us();
		if (fd < 0 || left <= 0 || poll(&pfd, 1, (int) (left / 1000) + 1) <= 0)
			break;
	}
	cur.answer_reading = false;
}

/* A close frame's reason, printable ASCII only: it ends up in a log line. */
static void
keep_close_text(const unsigned char *p, size_t len)
{
	size_t		n = 0;

	for (size_t i = 0; i < len && n + 1 < sizeof(cur.peer_close_text); i++)
		cur.peer_close_text[n++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char) p[i] : '?';
	cur.peer_close_text[n] = '\0';
}

/*
 * Journals the reassembled message (which takes the buffer) before anything
 * else happens to it.  One past max_frame_size is journaled as OVERSIZE with
 * the bytes kept: the worker turns it into a dead letter naming its size.
 */
#define RX_KEEP_BYTES (64 * 1024)

static void
deliver_message(void)
{
	char	   *data;
	unsigned	flags = cur.rx_binary ? JOURNAL_BINARY : 0;

	/*
	 * The message gets a buffer of its own size, and the reassembly buffer
	 * stays for the next one.  Shrinking the reassembly buffer instead (it
	 * grew by doubling from 4 kB) left a hole of the rest behind each queued
	 * message that only smaller allocations could use: 10,000 frames of
	 * 700 bytes held 40 MB of heap, five times what buffer_limit counted.
	 */
	data = malloc(cur.rx_len + 1);
	if (data)
	{
		if (cur.rx_len)
			memcpy(data, cur.rx, cur.rx_len);
		data[cur.rx_len] = '\0';
	}
	else
	{
		data = cur.rx;			/* no memory for a copy: hand over the buffer itself */
		cur.rx = NULL;
		cur.rx_cap = 0;
	}
	if (cur.rx_total > cur.rx_len)
		flags |= JOURNAL_OVERSIZE;
	if (data)
		journal_submit_owned(JOURNAL_SRC_WEBSOCKET, flags, now_us(), data, cur.rx_len,
							 cur.rx_total);
	/* a buffer grown for one big message goes with it */
	if (cur.rx_cap > RX_KEEP_BYTES)
	{
		free(cur.rx);
		cur.rx = NULL;
		cur.rx_cap = 0;
	}
	cur.rx_len = 0;
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

/*
 * An attempt ended before the WebSocket was open: names the cause after
 * how far it got.  said is what libwebsockets said, or NULL.
 */
static void
attempt_failed(struct lws *wsi, const char *said)
{
	char		why[900];
	char		one[300];
	WsCause		cause;
	int			status = lws_http_client_http_response(wsi);
	int			timeout_s = cur.target.handshake_timeout_s > 0 ?
		cur.target.handshake_timeout_s : 10;

	cur.wsi = NULL;
	if (cur.reason[0])
	{
		cause = cur.target.ca_file && strstr(cur.reason, "CA file") ?
			WS_CAUSE_TLS : WS_CAUSE_OTHER;
		snprintf(one, sizeof(one), "%s", cur.reason);
	}
	else if (status > 0 && status != 101)
	{
		cause = WS_CAUSE_HTTP;
		keep_http_answer(wsi);	/* its body came in ESTABLISHED_CLIENT_HTTP */
		snprintf(one, sizeof(one), "the WebSocket handshake was answered with HTTP %d", status);
	}
	else if (cur.phase == PH_TCP)
	{
		cause = WS_CAUSE_TCP;
		describe_tcp(one, sizeof(one));
		if (cur.addr_idx + 1 < cur.naddrs)
		{
			/* the next address, from the thread's loop */
			size_t		n = strlen(cur.tried);

			snprintf(cur.tried + n, sizeof(cur.tried) - n, "%s%s", n ? "; " : "", one);
			cur.addr_idx++;
			cur.next_addr_pending = true;
			return;
		}
	}
	else if (cur.phase == PH_TLS)
	{
		cause = WS_CAUSE_TLS;
		describe_tls(wsi, one, sizeof(one));
	}
	else if (timed_out(timeout_s))
	{
		cause = WS_CAUSE_HANDSHAKE;
		snprintf(one, sizeof(one), "the WebSocket handshake was not answered within %d s",
				 timeout_s);
	}
	else
	{
		cause = WS_CAUSE_HANDSHAKE;
		snprintf(one, sizeof(one), "the WebSocket handshake failed%s%s%s",
				 said ? " (libwebsockets: " : "", said ? said : "", said ? ")" : "");
	}
	snprintf(why, sizeof(why), "%s%s%s", cur.tried, cur.tried[0] ? "; " : "", one);
	report_closed(cause, status == 101 ? 0 : status, why);
}

/* ---- libwebsockets callbacks: one function per reason, callback() dispatches ---- */

/* lws loads no system store of its own here: add it, then voipbin.ca_file. */
static int
on_load_extra_client_verify_certs(SSL_CTX *ssl_ctx)
{
	SSL_CTX_set_default_verify_paths(ssl_ctx);
	if (cur.target.ca_file &&
		SSL_CTX_load_verify_locations(ssl_ctx, cur.target.ca_file, NULL) != 1)
	{
		unsigned long err = ERR_peek_last_error();
		const char *said = err ? ERR_reason_error_string(err) : NULL;

		snprintf(cur.reason, sizeof(cur.reason),
				 "could not load the CA file \"%s\" (voipbin.ca_file)%s%s",
				 cur.target.ca_file, said ? ": " : "", said ? said : "");
		ERR_clear_error();
	}
	return 0;
}

/* Seen once connect() has succeeded: TLS (or the request) is next. */
static int
on_wsi_create(struct lws *wsi)
{
	if (wsi == cur.wsi && cur.phase == PH_TCP)
		set_phase(cur.target.tls ? PH_TLS : PH_HTTP);
	return 0;
}

/* TCP and TLS are done; the upgrade request gets "Authorization: Bearer". */
static int
on_append_handshake_header(struct lws *wsi, void *in, size_t len)
{
	unsigned char **p = (unsigned char **) in;
	unsigned char *end;
	size_t		n;
	char	   *v;
	int			rc;

	if (wsi != cur.wsi)
		return 0;
	set_phase(PH_HTTP);
	if (!cur.target.bearer)
		return 0;
	end = *p + len;
	n = strlen(cur.target.bearer) + 8;
	v = malloc(n);
	if (!v)
		return -1;
	snprintf(v, n, "Bearer %s", cur.target.bearer);
	rc = lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
									  (unsigned char *) v, (int) strlen(v), p, end);
	explicit_bzero(v, n);
	free(v);
	return rc ? -1 : 0;
}

/*
 * The answer to the upgrade request, its headers parsed: a refusal's body is
 * taken here, before libwebsockets fails the attempt (CONNECTION_ERROR).
 */
static int
on_established_client_http(struct lws *wsi)
{
	int			status = lws_http_client_http_response(wsi);

	if (wsi != cur.wsi || cur.established || status <= 0 || status == 101)
		return 0;
	keep_http_answer(wsi);
	if (cur.answer)
		read_http_answer_body(wsi);
	return 0;
}

/* Some of a refusal's body, from lws_http_client_read(). */
static int
on_receive_client_http_read(struct lws *wsi, const void *in, size_t len)
{
	WsHttpAnswer *a = cur.answer;

	if (wsi != cur.wsi || !cur.answer_reading || !a)
		return 0;
	if (len > cur.answer_room - a->body_len)
		len = cur.answer_room - a->body_len;
	memcpy(a->body + a->body_len, in, len);
	a->body_len += len;
	a->body[a->body_len] = '\0';
	return 0;
}

/*
 * The refusal's body is whole.  Nonzero keeps libwebsockets from readying
 * the connection for another HTTP transaction (it would reset the headers,
 * status included): the upgrade fails right after anyway.
 */
static int
on_completed_client_http(struct lws *wsi)
{
	if (wsi != cur.wsi || !cur.answer_reading)
		return 0;
	cur.answer_complete = true;
	return -1;
}

static int
on_client_established(struct lws *wsi)
{
	if (wsi != cur.wsi)
		return -1;
	cur.established = true;
	set_phase(PH_OPEN);
	cur.last_valid_us = now_us();
	emit_connected();
	if (cur.out_head)
		lws_callback_on_writable(wsi);
	return 0;
}

/* A fragment of a message: reassembled, journaled once whole. */
static int
on_client_receive(struct lws *wsi, const void *in, size_t len)
{
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
}

static int
on_client_receive_pong(struct lws *wsi)
{
	if (wsi == cur.wsi)
		cur.last_valid_us = now_us();
	return 0;
}

/* Writes the oldest queued text message (a subscribe), asks again for the rest. */
static int
on_client_writeable(struct lws *wsi)
{
	Cmd		   *c = cur.out_head;
	int			n;

	if (wsi != cur.wsi || !c)
		return 0;
	n = lws_write(wsi, (unsigned char *) c->text + LWS_PRE, c->len, LWS_WRITE_TEXT);
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
	cur.last_send_us = now_us();
	if (cur.out_head)
		lws_callback_on_writable(wsi);
	return 0;
}

/* The server's close frame: its code and reason, for the CLOSED news. */
static int
on_peer_initiated_close(struct lws *wsi, const void *in, size_t len)
{
	const unsigned char *p = in;

	if (wsi == cur.wsi && len >= 2)
	{
		cur.peer_close_code = (p[0] << 8) | p[1];
		keep_close_text(p + 2, len - 2);
	}
	return 0;
}

static int
on_client_connection_error(struct lws *wsi, const void *in, size_t len)
{
	if (wsi == cur.wsi)
		attempt_failed(wsi, in && len ? (const char *) in : NULL);
	return 0;
}

/* lws 4.1 ends an unanswered upgrade request this way, without CONNECTION_ERROR. */
static int
on_closed_client_http(struct lws *wsi)
{
	if (wsi == cur.wsi && !cur.established)
		attempt_failed(wsi, NULL);
	return 0;
}

/* Words for an open connection that ended, and its cause. */
static WsCause
describe_close(char *why, size_t len)
{
	int64_t		now = now_us();
	int64_t		quiet_us = now - cur.last_valid_us;

	if (cur.reason[0])
	{
		snprintf(why, len, "%s", cur.reason);
		return WS_CAUSE_OTHER;
	}
	if (cur.peer_close_code)
		snprintf(why, len, "the server closed the connection with code %d%s%s%s",
				 cur.peer_close_code, cur.peer_close_text[0] ? " (\"" : "",
				 cur.peer_close_text, cur.peer_close_text[0] ? "\")" : "");
	else if (quiet_us >= (int64_t) cur.target.idle_timeout_s * 1000000 - 500000)
	{
		snprintf(why, len,
				 "no pong and no frame from the server for %d s (voipbin.idle_timeout): the connection is dead",
				 cur.target.idle_timeout_s);
		return WS_CAUSE_IDLE;
	}
	else if (cur.last_send_us && now - cur.last_send_us < SUBSCRIBE_DROP_US)
		snprintf(why, len,
				 "the server closed the connection without a close frame right after subscribing (the sign of a rejected topic)");
	else
		snprintf(why, len, "the connection was closed without a close frame");
	return WS_CAUSE_CLOSED;
}

static int
on_client_closed(struct lws *wsi)
{
	char		why[300];
	WsCause		cause;

	if (wsi != cur.wsi)
		return 0;
	cause = describe_close(why, sizeof(why));
	cur.wsi = NULL;
	report_closed(cause, 0, why);
	return 0;
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason,
		 void *user, void *in, size_t len)
{
	switch (reason)
	{
		case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS:
			return on_load_extra_client_verify_certs((SSL_CTX *) user);
		case LWS_CALLBACK_WSI_CREATE:
			return on_wsi_create(wsi);
		case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
			return on_append_handshake_header(wsi, in, len);
		case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
			return on_established_client_http(wsi);
		case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
			return on_receive_client_http_read(wsi, in, len);
		case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
			return on_completed_client_http(wsi);
		case LWS_CALLBACK_CLIENT_ESTABLISHED:
			return on_client_established(wsi);
		case LWS_CALLBACK_CLIENT_RECEIVE:
			return on_client_receive(wsi, in, len);
		case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
			return on_client_receive_pong(wsi);
		case LWS_CALLBACK_CLIENT_WRITEABLE:
			return on_client_writeable(wsi);
		case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
			return on_peer_initiated_close(wsi, in, len);
		case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
			return on_client_connection_error(wsi, in, len);
		case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
			return on_closed_client_http(wsi);
		case LWS_CALLBACK_CLIENT_CLOSED:
			return on_client_closed(wsi);
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
	report_closed(WS_CAUSE_OTHER, 0, why);
	free_outgoing();
	free(cur.rx);
	free(cur.answer);
	free_target(&cur.target);
	memset(&cur, 0, sizeof(cur));
}

/*
 * Resolves the host here rather than in libwebsockets, which says nothing
 * when the lookup fails, and so that a failure can name the address.
 */
static bool
resolve(char *why, size_t len)
{
	struct addrinfo hints;
	struct addrinfo *res;
	char		port[12];
	int			rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", cur.target.port);
	rc = getaddrinfo(cur.target.host, port, &hints, &res);
	if (rc != 0)
	{
		char		ebuf[128];

		snprintf(why, len, "could not resolve host \"%s\": %s", cur.target.host,
				 rc == EAI_SYSTEM ? errno_text(errno, ebuf, sizeof(ebuf)) : gai_strerror(rc));
		return false;
	}
	for (struct addrinfo *ai = res; ai && cur.naddrs < WS_MAX_ADDRS; ai = ai->ai_next)
	{
		char		ip[INET6_ADDRSTRLEN];
		const void *a;

		if (ai->ai_family == AF_INET)
			a = &((struct sockaddr_in *) ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			a = &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;
		else
			continue;
		if (!inet_ntop(ai->ai_family, a, ip, sizeof(ip)) || ai->ai_addrlen > sizeof(cur.sa[0]))
			continue;
		memcpy(&cur.sa[cur.naddrs], ai->ai_addr, ai->ai_addrlen);
		cur.salen[cur.naddrs] = ai->ai_addrlen;
		snprintf(cur.addrs[cur.naddrs], sizeof(cur.addrs[0]),
				 ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, cur.target.port);
		cur.naddrs++;
	}
	freeaddrinfo(res);
	if (cur.naddrs == 0)
	{
		snprintf(why, len, "could not resolve host \"%s\": it has no IPv4 or IPv6 address",
				 cur.target.host);
		return false;
	}
	return true;
}

/* Starts the attempt at address cur.addr_idx, on the current context. */
static void
connect_address(void)
{
	struct lws_client_connect_info ci;
	char		ip[INET6_ADDRSTRLEN];
	const struct sockaddr_storage *sa = &cur.sa[cur.addr_idx];

	inet_ntop(sa->ss_family, sa->ss_family == AF_INET6 ?
			  (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr :
			  (const void *) &((const struct sockaddr_in *) sa)->sin_addr, ip, sizeof(ip));
	set_phase(PH_TCP);
	cur.started_us = now_us();

	memset(&ci, 0, sizeof(ci));
	ci.context = cur.ctx;
	ci.address = ip;			/* the name still goes into Host, SNI and the certificate check */
	ci.port = cur.target.port;
	ci.path = cur.target.path;
	ci.host = cur.target.host;
	ci.origin = cur.target.host;
	ci.ssl_connection = cur.target.tls ? LCCSCF_USE_SSL : 0;
	ci.ietf_version_or_minus_one = -1;
	ci.local_protocol_name = "voipbin";
	ci.retry_and_idle_policy = &cur.retry;
	ci.pwsi = &cur.wsi;
	if (!lws_client_connect_via_info(&ci) && !cur.closed_reported && !cur.next_addr_pending)
	{
		cur.wsi = NULL;
		report_closed(WS_CAUSE_OTHER, 0, cur.reason[0] ? cur.reason : "libwebsockets could not start the connection");
	}
}

static void
open_connection(Cmd *c)
{
	struct lws_context_creation_info info;
	struct lws_context *ctx;
	char		why[300];

	close_current("replaced by a new connection");
	cur.conn = c->conn;
	cur.target = c->target;		/* takes ownership of the strings */
	memset(&c->target, 0, sizeof(c->target));

	set_stage(STAGE_RESOLVING);
	if (!resolve(why, sizeof(why)))
	{
		report_closed(WS_CAUSE_DNS, 0, why);
		return;
	}

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
		report_closed(cur.reason[0] ? WS_CAUSE_TLS : WS_CAUSE_OTHER, 0,
					  cur.reason[0] ? cur.reason : "could not create the libwebsockets context");
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

	connect_address();
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
		/* an address that failed at TCP: the next one (lws would try them too) */
		if (cur.next_addr_pending)
		{
			cur.next_addr_pending = false;
			connect_address();
		}
		else if (cur.ctx && lws_service(cur.ctx, 0) < 0)
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
		WsNews    *ev = ev_head;

		ev_head = ev->next;
		ws_news_free(ev);
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

WsNews *
ws_take(void)
{
	WsNews    *head;

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
ws_news_free(WsNews *ev)
{
	if (!ev)
		return;
	free(ev->data);
	free(ev->answer);
	free(ev);
}

const char *
ws_attempt_stage(void)
{
	switch ((Stage) __atomic_load_n(&stage, __ATOMIC_RELAXED))
	{
		case STAGE_RESOLVING:
			return "resolving the host name";
		case STAGE_TCP:
			return "connecting";
		case STAGE_TLS:
			return "in the TLS handshake";
		case STAGE_HTTP:
			return "waiting for the answer to the WebSocket handshake";
		case STAGE_NONE:
			break;
	}
	return NULL;
}

void
ws_ack_wakeup(void)
{
	uint64_t	n;

	while (read(wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
}
