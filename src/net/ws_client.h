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

typedef enum WsEventKind
{
	WS_EV_CONNECTED,			/* handshake done */
	WS_EV_FRAME,				/* one whole message (fragments joined) */
	WS_EV_CLOSED				/* connection gone, or never made */
} WsEventKind;

typedef struct WsEvent
{
	struct WsEvent *next;
	WsEventKind kind;
	uint32_t	conn;			/* connection number, from ws_connect() */
	bool		binary;			/* FRAME: binary opcode */
	int			http_status;	/* CLOSED: handshake HTTP status, or 0 */
	int64_t		at_us;			/* when it happened, µs since the Unix epoch */
	size_t		len;
	char	   *data;			/* FRAME: the bytes; CLOSED: reason text */
	uint64_t	spool_end;		/* FRAME read back from the spool: pass to ws_spool_done() */
	uint8_t		source;			/* FRAME: a JournalSource (net/journal.h) */
} WsEvent;

/*
 * Starts the thread; returns the eventfd to wait on, or -1 with errbuf set.
 * Frames past the buffer limit go to the spool file at spool_path (NULL: no
 * spool); errbuf is non-empty if it could not be opened.  The thread keeps
 * *backlog (frame bytes in its queue and unread in the spool) up to date with
 * atomic stores, so it can be read while the worker is busy.
 */
extern int	ws_start(const char *spool_path, uint64_t *backlog, char *errbuf, size_t errlen);

/*
 * Stops the thread; frames not stored yet (the caller's unstored list and
 * the queue) go to the spool for the next worker.  Safe to call twice.
 */
extern void ws_stop(WsEvent *unstored);

/* Frame bytes the queue may hold in memory before it spools. */
extern void ws_set_buffer_limit(size_t bytes);

/* Spooled frames up to this offset are stored. */
extern void ws_spool_done(uint64_t end);

/* Frames lost because the spool could not take them (a full disk). */
extern uint64_t ws_frames_lost(void);

/* Drops any current connection and opens a new one; returns its number. */
extern uint32_t ws_connect(const WsTarget *target);

/* Drops the current connection, if any (a CLOSED event follows). */
extern void ws_disconnect(void);

/* Queues one text message on the current connection. */
extern void ws_send_text(const char *text, size_t len);

/*
 * Detaches queued events in arrival order, up to about max_bytes of frame
 * data (at least one event).  The caller frees each with ws_event_free().
 */
extern WsEvent *ws_take(size_t max_bytes);
extern void ws_event_free(WsEvent *ev);

/* Clears the eventfd after a wake-up; call before ws_take(). */
extern void ws_ack_wakeup(void);

#endif
