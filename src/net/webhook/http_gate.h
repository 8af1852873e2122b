/*
 * http_gate.h — the webhook receiver's listening sockets, and a look at each
 * new connection's request line before libmicrohttpd gets it.
 *
 * libmicrohttpd 0.9.75 closes a connection whose request line it cannot
 * split without answering it and without calling the application (see
 * request_line.h), so it is not given the listening sockets: one thread of
 * the gate accepts, peeks (MSG_PEEK: nothing is consumed) at what each new
 * connection has sent, and hands the connection over only once that is a
 * well-formed HTTP/1.x request line; else it answers 400 itself (505 for
 * another HTTP version, 414 for a line longer than the header limit), with
 * Connection: close, and counts it.  A connection that sends too little is
 * closed after WEBHOOK_IDLE_TIMEOUT_S of silence or WEBHOOK_REQUEST_DEADLINE_S
 * in all, as libmicrohttpd's own would be; many such never hold up the
 * others, since the gate polls them all at once and never blocks on one.
 *
 * Only the first request of a connection passes here: later ones on a
 * kept-alive connection are read by libmicrohttpd alone (webhook_receiver.c
 * says what it does with a malformed one).  No PostgreSQL here.
 */
#ifndef VOIPBIN_HTTP_GATE_H
#define VOIPBIN_HTTP_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Requests served at once; more connections are accepted and closed at once. */
#define WEBHOOK_MAX_CONNECTIONS 64
/* A connection silent this long is closed (a request never finished, an idle keep-alive). */
#define WEBHOOK_IDLE_TIMEOUT_S 15
/* A request (headers and body) not whole this long after the connection opened or the previous answer: hung up on. */
#define WEBHOOK_REQUEST_DEADLINE_S 30
/* Whole request line and headers, per connection. */
#define WEBHOOK_HEADER_LIMIT (32 * 1024)

typedef struct HttpGateHooks
{
	/*
	 * Takes over fd, a connection whose request line is well-formed (and
	 * still unread).  deadline_ms (CLOCK_MONOTONIC): when the whole request
	 * must be there, counted from the accept.
	 */
	void		(*hand_over) (int fd, const struct sockaddr *addr, socklen_t addrlen,
							  int64_t deadline_ms);
	/* How many connections the HTTP server holds now (for the cap). */
	unsigned int (*held) (void);
	/* The gate answered a connection with an error status. */
	void		(*refused) (int status);
} HttpGateHooks;

/*
 * Starts the gate's thread on the n listening sockets fds (which it owns
 * from now on, and closes on stop).  False with err set when it cannot.
 */
extern bool http_gate_start(const int *fds, int n, const HttpGateHooks *hooks,
							char *err, size_t errlen);

/* Stops the thread, closes the listening sockets and every connection not handed over. */
extern void http_gate_stop(void);

/* CLOCK_MONOTONIC in milliseconds: the clock of the receiver's deadlines. */
extern int64_t http_mono_ms(void);

#endif
