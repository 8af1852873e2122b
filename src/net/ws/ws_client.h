/*
 * ws_client.h — the WebSocket transport, run on a thread of its own.
 *
 * Nothing here includes or calls PostgreSQL: the thread owns libwebsockets,
 * reads the socket whatever the database is doing, and hands frames to the
 * worker's main thread through a queue and an eventfd that sits in the
 * worker's WaitEventSet.  Commands (connect, send, close) travel the other
 * way and wake the thread with lws_cancel_service().
 */
#ifndef VOIPBIN_WS_CLIENT_H
#define VOIPBIN_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where and how to connect; every string is copied by ws_connect(). */
typedef struct WsTarget
{
	const char *host;
	int			port;
	const char *path;			/* path and query, e.g. "/v1.0/ws?accesskey=…" */
	bool		tls;
	const char *bearer;			/* JWT for "Authorization: Bearer", or NULL */
	const char *ca_file;		/* extra trusted CAs (PEM), or NULL */
	int			idle_timeout_s; /* no valid traffic this long: hang up */
	int			handshake_timeout_s;
} WsTarget;

typedef enum WsNewsKind
{
	WS_NEWS_CONNECTED,			/* handshake done */
	WS_NEWS_CLOSED				/* connection gone, or never made */
} WsNewsKind;

/*
 * What ended a connection or an attempt (CLOSED), so the worker can word it
 * and tell a repeated failure from a new one.  The text in data names it in
 * full; an HTTP answer also brings what VoIPBIN said (body, headers).
 */
typedef enum WsCause
{
	WS_CAUSE_OTHER,				/* a local reason: replaced, shut down, out of memory */
	WS_CAUSE_DNS,				/* the host name did not resolve */
	WS_CAUSE_TCP,				/* refused, unreachable, timed out */
	WS_CAUSE_TLS,				/* certificate refused, handshake failed */
	WS_CAUSE_HTTP,				/* the upgrade request answered with a status other than 101 */
	WS_CAUSE_HANDSHAKE,			/* no (complete) answer to the upgrade request */
	WS_CAUSE_CLOSED,			/* an open connection closed by the server or the network */
	WS_CAUSE_IDLE				/* no pong nor frame within voipbin.idle_timeout */
} WsCause;

/* How much of a refused handshake's body is kept: VoIPBIN's error JSON is ~300 bytes. */
#define WS_BODY_MAX 4096

/* A refused handshake's answer (CLOSED with an HTTP status), for the worker to read. */
typedef struct WsHttpAnswer
{
	char		retry_after[32];	/* its Retry-After header, or "" */
	char		request_id[96];	/* its X-Request-Id header, or "" */
	size_t		body_len;
	char		body[];			/* its first WS_BODY_MAX bytes, NUL-terminated */
} WsHttpAnswer;

/* News of a connection, for the worker's main thread (frames go to the journal). */
typedef struct WsNews
{
	struct WsNews *next;
	WsNewsKind	kind;
	uint32_t	conn;			/* connection number, from ws_connect() */
	int			http_status;	/* CLOSED: handshake HTTP status, or 0 */
	int64_t		at_us;			/* when it happened, µs since the Unix epoch */
	size_t		len;
	char	   *data;			/* CLOSED: reason text */
	uint8_t		cause;			/* CLOSED: a WsCause */
	int64_t		quiet_since_us;	/* CLOSED after it was open: its last frame or pong from the server */
	WsHttpAnswer *answer;		/* CLOSED after an HTTP answer other than 101, else NULL */
} WsNews;

/*
 * Starts the thread; returns the eventfd to wait on (connection news), or -1
 * with errbuf set.  Every whole message goes to the journal (net/journal.h),
 * which must be open; the worker reads frames from there.
 */
extern int	ws_start(char *errbuf, size_t errlen);

/*
 * Stops the thread, waiting for it at most wait_ms: a thread stuck in a DNS
 * lookup must not hold up a fast shutdown (the process is exiting; a late
 * message is refused by the closed journal).  Safe to call twice.
 */
extern void ws_stop(int wait_ms);

/* Largest message reassembled whole (voipbin.max_frame_size). */
extern void ws_set_max_frame_size(size_t bytes);

/* Drops any current connection and opens a new one; returns its number. */
extern uint32_t ws_connect(const WsTarget *target);

/* Drops the current connection, if any (a CLOSED event follows). */
extern void ws_disconnect(void);

/* Queues one text message on the current connection. */
extern void ws_send_text(const char *text, size_t len);

/*
 * Detaches the queued connection news (CONNECTED, CLOSED) in order.  The
 * caller frees each with ws_news_free().
 */
extern WsNews *ws_take(void);
extern void ws_news_free(WsNews *news);

/*
 * How far the current attempt has got ("resolving the host name", …), or
 * NULL when none is under way: for the worker's words when it gives up on
 * an attempt the network thread is still stuck in (a resolver that never
 * answers).
 */
extern const char *ws_attempt_stage(void);

/* Clears the eventfd after a wake-up; call before ws_take(). */
extern void ws_ack_wakeup(void);

#endif
