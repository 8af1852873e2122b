/*
 * http_gate.c — accepts the webhook receiver's connections and checks each
 * one's request line before libmicrohttpd reads it (see http_gate.h).
 *
 * One thread, one poll() over the listening sockets and the connections not
 * yet handed over.  Bytes are only peeked at, so libmicrohttpd later reads
 * the request from its first byte.  A connection whose line is not whole yet
 * is polled again with SO_RCVLOWAT one past what it has sent, so poll()
 * wakes the gate for a new byte, not again and again for the same ones.
 */
#ifdef POSTGRES_H
#error "http_gate.c runs on the receiver's threads and must not use the PostgreSQL API"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "net/webhook/http_gate.h"
#include "net/webhook/request_line.h"
#include "net/no_postgres.h"

#define MAX_LISTEN 16
/* After answering, what the client still sends is read and dropped this long, so close() sends no RST that could destroy the answer. */
#define LINGER_MS 2000
/* Connections accepted per listening socket per round, so one busy socket cannot starve the rest. */
#define ACCEPT_BURST 16

typedef struct Pending
{
	int			fd;
	struct sockaddr_storage addr;
	socklen_t	addrlen;
	int64_t		deadline_ms;	/* the request's, from the accept */
	int64_t		idle_ms;		/* closed if nothing new comes by then */
	size_t		seen;			/* bytes there at the last look */
	bool		answered;		/* the answer went out: draining until EOF or idle_ms */
} Pending;

static pthread_t thread;
static bool running;
static int	stop_fd = -1;
static int	listen_fds[MAX_LISTEN];
static int	n_listen;
static HttpGateHooks hooks;
static Pending pending[WEBHOOK_MAX_CONNECTIONS];
static int	n_pending;
/* the peek buffer: one request line and its headers at most */
static char peek_buf[WEBHOOK_HEADER_LIMIT];

int64_t
http_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
set_lowat(int fd, int bytes)
{
	(void) setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes));
}

static void
drop(int i, bool close_fd)
{
	if (close_fd)
		close(pending[i].fd);
	pending[i] = pending[--n_pending];
}

/* Answers status with Connection: close, then drains until the client closes. */
static void
refuse(Pending *p, int status, const char *why)
{
	const char *reason = status == 505 ? "HTTP Version Not Supported" :
		status == 414 ? "URI Too Long" : "Bad Request";
	char		date[64];
	char		text[512];
	struct tm	tm;
	time_t		now = time(NULL);
	int			n;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	n = snprintf(text, sizeof(text),
				 "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
				 "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n\r\n%d %s\n",
				 status, reason, date, strlen(why) + 5, status, why);
	/* a new socket's buffer takes these few hundred bytes whole */
	(void) send(p->fd, text, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void) shutdown(p->fd, SHUT_WR);
	set_lowat(p->fd, 1);
	p->answered = true;
	p->idle_ms = http_mono_ms() + LINGER_MS;
	hooks.refused(status);
}

/* Reads and drops what an answered client still sends; false once it has closed. */
static bool
drain(Pending *p)
{
	for (int rounds = 0; rounds < 4; rounds++)
	{
		ssize_t		n = recv(p->fd, peek_buf, sizeof(peek_buf), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return false;
		if (n < 0)
			return true;
	}
	return true;
}

/*
 * Looks at what a connection has sent.  False: it is no longer the gate's
 * (handed over, or closed).
 */
static bool
look(Pending *p, bool hung_up)
{
	ssize_t		n = recv(p->fd, peek_buf, sizeof(peek_buf), MSG_PEEK | MSG_DONTWAIT);
	size_t		end;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	if (n <= 0)
	{
		/* gone before a line: nothing to answer */
		close(p->fd);
		return false;
	}
	switch (request_line_check(peek_buf, (size_t) n, &end))
	{
		case REQUEST_LINE_OK:
			set_lowat(p->fd, 1);
			hooks.hand_over(p->fd, (struct sockaddr *) &p->addr, p->addrlen, p->deadline_ms);
			return false;
		case REQUEST_LINE_BAD:
			refuse(p, 400, "malformed request line");
			return true;
		case REQUEST_LINE_VERSION:
			refuse(p, 505, "only HTTP/1.x is spoken here");
			return true;
		case REQUEST_LINE_PARTIAL:
			break;
	}
	if ((size_t) n == sizeof(peek_buf))
		refuse(p, 414, "request line longer than the header limit");
	else if (hung_up && (size_t) n == p->seen)
		/* the client shut its side with half a line: it cannot become a request */
		refuse(p, 400, "the request line ends before its CRLF");
	else
	{
		if ((size_t) n > p->seen)
			p->idle_ms = http_mono_ms() + WEBHOOK_IDLE_TIMEOUT_S * 1000;
		p->seen = (size_t) n;
		set_lowat(p->fd, (int) n + 1);
	}
	return true;
}

static void
accept_from(int lfd, int64_t now)
{
	for (int k = 0; k < ACCEPT_BURST; k++)
	{
		Pending		p;
		int			fd;

		memset(&p, 0, sizeof(p));
		p.addrlen = sizeof(p.addr);
		fd = accept4(lfd, (struct sockaddr *) &p.addr, &p.addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;				/* EAGAIN, or a connection gone before its accept */
		/* over the cap: closed at once, as libmicrohttpd did */
		if (n_pending >= WEBHOOK_MAX_CONNECTIONS ||
			(unsigned int) n_pending + hooks.held() >= WEBHOOK_MAX_CONNECTIONS)
		{
			close(fd);
			continue;
		}
		p.fd = fd;
		p.deadline_ms = now + WEBHOOK_REQUEST_DEADLINE_S * 1000;
		p.idle_ms = now + WEBHOOK_IDLE_TIMEOUT_S * 1000;
		pending[n_pending++] = p;
	}
}

static void *
gate_main(void *arg)
{
	struct pollfd fds[1 + MAX_LISTEN + WEBHOOK_MAX_CONNECTIONS];

	for (;;)
	{
		int64_t		now = http_mono_ms();
		int64_t		next = -1;
		int			nfds = 0;
		int			first_pending;
		int			np = n_pending;

		fds[nfds++] = (struct pollfd) {.fd = stop_fd, .events = POLLIN};
		for (int i = 0; i < n_listen; i++)
			fds[nfds++] = (struct pollfd) {.fd = listen_fds[i], .events = POLLIN};
		first_pending = nfds;
		for (int i = 0; i < np; i++)
		{
			int64_t		due = pending[i].answered ? pending[i].idle_ms :
				(pending[i].idle_ms < pending[i].deadline_ms ? pending[i].idle_ms : pending[i].deadline_ms);

			fds[nfds++] = (struct pollfd) {.fd = pending[i].fd, .events = POLLIN | POLLRDHUP};
			if (next < 0 || due < next)
				next = due;
		}
		if (poll(fds, (nfds_t) nfds, next < 0 ? -1 : (int) (next > now ? next - now : 0)) < 0 &&
			errno != EINTR)
			break;
		if (fds[0].revents)
			break;
		now = http_mono_ms();

		/* backwards: drop() moves the last one into the freed place */
		for (int i = np - 1; i >= 0; i--)
		{
			Pending    *p = &pending[i];
			short		ev = fds[first_pending + i].revents;

			if (p->answered)
			{
				if ((ev && !drain(p)) || now >= p->idle_ms)
					drop(i, true);
			}
			else if (ev && !look(p, (ev & (POLLRDHUP | POLLHUP | POLLERR)) != 0))
				drop(i, false);
			else if (!p->answered && (now >= p->idle_ms || now >= p->deadline_ms))
				/* silent too long, or too slow in all: hung up on without an answer */
				drop(i, true);
		}
		for (int i = 0; i < n_listen; i++)
			if (fds[1 + i].revents & POLLIN)
				accept_from(listen_fds[i], now);
	}
	return NULL;
}

bool
http_gate_start(const int *fds, int n, const HttpGateHooks *h, char *err, size_t errlen)
{
	sigset_t	all;
	sigset_t	old;

	http_gate_stop();
	if (n > MAX_LISTEN)
		n = MAX_LISTEN;
	for (int i = 0; i < n; i++)
		listen_fds[i] = fds[i];
	n_listen = n;
	hooks = *h;
	stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (stop_fd < 0)
	{
		snprintf(err, errlen, "eventfd failed: %s", strerror(errno));
		http_gate_stop();
		return false;
	}
	/* the postmaster's signals stay the main thread's */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	running = pthread_create(&thread, NULL, gate_main, NULL) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!running)
	{
		snprintf(err, errlen, "could not start the accepting thread");
		http_gate_stop();
		return false;
	}
	return true;
}

void
http_gate_stop(void)
{
	if (running)
	{
		uint64_t	one = 1;

		if (write(stop_fd, &one, sizeof(one)) < 0)
		{
			/* cannot fail on a fresh eventfd; the join would hang otherwise */
		}
		pthread_join(thread, NULL);
		running = false;
	}
	if (stop_fd >= 0)
		close(stop_fd);
	stop_fd = -1;
	while (n_pending > 0)
		drop(n_pending - 1, true);
	for (int i = 0; i < n_listen; i++)
		close(listen_fds[i]);
	n_listen = 0;
}
