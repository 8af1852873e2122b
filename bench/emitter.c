/*
 * emitter.c — the benchmark's VoIPBIN stand-in: a TLS WebSocket server that
 * pushes pre-built event frames as fast as the client reads them, or at a
 * fixed rate, and a do-nothing TLS reader ("sink") that measures how fast it
 * can push.  Bench-only; nothing here is part of the extension.
 *
 *   emitter serve --cert server.pem --key server.key [--host 127.0.0.1]
 *                 [--ping-interval 10] [--customer-id UUID]
 *       Listens on two ephemeral ports of 127.0.0.1 and prints one line
 *       {"port": N, "control_port": M}.  Port N speaks what VoIPBIN's API
 *       speaks for the bench: GET /v1.0/ws (WebSocket, no compression: accepts
 *       subscribe/unsubscribe text frames, answers pings, pings every
 *       --ping-interval s like VoIPBIN, never acknowledges), and
 *       GET /v1.0/customer (one JSON object, for voipbin_subscribe's owner
 *       check).  Runs until SIGTERM/SIGINT.
 *
 *   emitter sink --port N --ca ca.pem --count K [--host 127.0.0.1]
 *       Connects like a client (certificate verified), subscribes, prints
 *       "ready", reads until K text frames arrived, prints
 *       {"frames": K, "bytes": B, "first_ns": t, "last_ns": t}.
 *
 * Control port (plain TCP, one command per line, one JSON line back):
 *   load <path>          frames file: [u32 big-endian length][payload]...;
 *                        every payload becomes one unmasked text frame,
 *                        all frames pre-built into one contiguous buffer
 *   blast                send every loaded frame, in order, to the one
 *                        subscribed connection, as fast as it reads
 *   pace <rate> <path>   send them at <rate> frames/s; when done, write the
 *                        CLOCK_REALTIME ns at which each frame's first byte
 *                        was handed to TLS, one per line, to <path>
 *   status               connections, counters and the job's progress
 *   abort                stop the job
 * Unlike the real server, nothing is ever dropped: a slow reader slows the
 * emitter down (TCP back-pressure) instead of losing frames.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MAX_CONNS 64
#define MAX_CTL 8
#define CHUNK_BYTES (256 * 1024)
#define REQ_MAX 16384

static volatile sig_atomic_t stopping;

static int64_t
real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
die(const char *what)
{
	fprintf(stderr, "emitter: %s: %s\n", what, errno ? strerror(errno) : "failed");
	ERR_print_errors_fp(stderr);
	exit(1);
}

static void *
xrealloc(void *p, size_t n)
{
	void	   *q = realloc(p, n ? n : 1);

	if (!q)
		die("out of memory");
	return q;
}

/* ------------------------------------------------------------ buffers */

typedef struct Buf
{
	unsigned char *d;
	size_t		len,
				cap;
} Buf;

static void
buf_reserve(Buf *b, size_t extra)
{
	if (b->len + extra > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;

		while (cap < b->len + extra)
			cap *= 2;
		b->d = xrealloc(b->d, cap);
		b->cap = cap;
	}
}

static void
buf_add(Buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->d + b->len, p, n);
	b->len += n;
}

static void
buf_printf(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(b, n + 1);
	va_start(ap, fmt);
	vsnprintf((char *) b->d + b->len, n + 1, fmt, ap);
	va_end(ap);
	b->len += n;
}

static size_t
ws_header(unsigned char *h, int opcode, uint64_t n, bool masked)
{
	size_t		k = 0;

	h[k++] = 0x80 | opcode;
	if (n < 126)
		h[k++] = (masked ? 0x80 : 0) | n;
	else if (n < 65536)
	{
		h[k++] = (masked ? 0x80 : 0) | 126;
		h[k++] = n >> 8;
		h[k++] = n;
	}
	else
	{
		h[k++] = (masked ? 0x80 : 0) | 127;
		for (int i = 7; i >= 0; i--)
			h[k++] = n >> (8 * i);
	}
	return k;
}

/* ------------------------------------------------------------ frames */

static unsigned char *fbuf;		/* all frames, WebSocket-framed, back to back */
static size_t *foff;			/* frame i is fbuf[foff[i] .. foff[i+1]) */
static size_t nframes;
static size_t payload_bytes;

static bool
load_frames(const char *path, char *err, size_t errlen)
{
	FILE	   *f = fopen(path, "rb");
	struct stat st;
	unsigned char *raw;
	size_t		pos = 0,
				n = 0,
				total = 0,
				pb = 0;

	if (!f || fstat(fileno(f), &st) != 0)
	{
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		if (f)
			fclose(f);
		return false;
	}
	raw = xrealloc(NULL, st.st_size);
	if (st.st_size && fread(raw, 1, st.st_size, f) != (size_t) st.st_size)
	{
		snprintf(err, errlen, "short read of %s", path);
		fclose(f);
		free(raw);
		return false;
	}
	fclose(f);
	while (pos + 4 <= (size_t) st.st_size)
	{
		uint32_t	len = ((uint32_t) raw[pos] << 24) | (raw[pos + 1] << 16) | (raw[pos + 2] << 8) | raw[pos + 3];
		unsigned char h[14];

		if (pos + 4 + len > (size_t) st.st_size)
			break;
		total += ws_header(h, 1, len, false) + len;
		pos += 4 + len;
		n++;
	}
	if (pos != (size_t) st.st_size)
	{
		snprintf(err, errlen, "%s: truncated frames file", path);
		free(raw);
		return false;
	}
	free(fbuf);
	free(foff);
	fbuf = xrealloc(NULL, total);
	foff = xrealloc(NULL, (n + 1) * sizeof(size_t));
	pos = 0;
	total = 0;
	for (size_t i = 0; i < n; i++)
	{
		uint32_t	len = ((uint32_t) raw[pos] << 24) | (raw[pos + 1] << 16) | (raw[pos + 2] << 8) | raw[pos + 3];

		foff[i] = total;
		total += ws_header(fbuf + total, 1, len, false);
		memcpy(fbuf + total, raw + pos + 4, len);
		total += len;
		pb += len;
		pos += 4 + len;
	}
	foff[n] = total;
	nframes = n;
	payload_bytes = pb;
	free(raw);
	return true;
}

/* ------------------------------------------------------------ connections */

enum
{
	C_TLS, C_HTTP, C_WS
};
enum
{
	CHUNK_NONE, CHUNK_CTRL, CHUNK_BULK
};

typedef struct Conn
{
	int			fd;
	SSL		   *ssl;
	int			state;
	int			id;
	char		path[256];
	Buf			in;				/* bytes read, not yet parsed */
	Buf			ctrl;			/* control frames / HTTP answer waiting */
	Buf			inflight_ctrl;	/* the control bytes being written */
	const unsigned char *chunk;
	size_t		chunk_len,
				chunk_done;
	int			chunk_kind;
	size_t		chunk_end_frame;
	bool		close_after_write;
	bool		dead;
	int			topics;
	bool		subscribed;
	uint64_t	frames_in,
				pings_in,
				pongs_in,
				pings_out,
				bytes_out;
	int64_t		next_ping;		/* mono ns */
} Conn;

static Conn *conns[MAX_CONNS];
static int next_conn_id = 1;
static int connections_total;
static SSL_CTX *server_ctx;
static double ping_interval = 10.0;
static const char *customer_id = "7d2f3c1a-5b6e-4f80-9a1b-2c3d4e5f6a7b";
static unsigned long long rest_requests = 0;	/* GET /v1.0/calls/… answered */

typedef struct Job
{
	int			state;			/* 0 idle, 1 running, 2 done, 3 failed */
	int			kind;			/* 1 blast, 2 pace */
	int			conn_id;
	size_t		next;			/* next frame to start writing */
	size_t		sent;			/* frames completely handed to TLS */
	int64_t		t_first,
				t_last;			/* real ns */
	double		rate;
	int64_t		t0;				/* mono ns of frame 0's schedule */
	int64_t    *sendtimes;
	uint64_t	late;			/* paced frames started > 1 ms after their slot */
	int64_t		max_late_ns;
	char		out[1024];
	char		err[256];
} Job;

static Job job;

static void
set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int
listen_on(const char *host, int *port)
{
	int			fd = socket(AF_INET, SOCK_STREAM, 0);
	int			one = 1;
	struct sockaddr_in a = {0};
	socklen_t	al = sizeof(a);

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_family = AF_INET;
	a.sin_port = htons(*port);
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		die("bad --host");
	if (bind(fd, (struct sockaddr *) &a, sizeof(a)) != 0 || listen(fd, 64) != 0)
		die("bind/listen");
	getsockname(fd, (struct sockaddr *) &a, &al);
	*port = ntohs(a.sin_port);
	set_nonblock(fd);
	return fd;
}

static void
conn_free(Conn *c)
{
	if (job.state == 1 && job.conn_id == c->id)
	{
		job.state = 3;
		snprintf(job.err, sizeof(job.err), "connection %d closed during the job", c->id);
		fprintf(stderr, "emitter: %s\n", job.err);
	}
	if (c->ssl)
		SSL_free(c->ssl);
	close(c->fd);
	free(c->in.d);
	free(c->ctrl.d);
	free(c->inflight_ctrl.d);
	free(c);
}

static void
queue_ctrl(Conn *c, int opcode, const unsigned char *p, size_t n)
{
	unsigned char h[14];
	size_t		k = ws_header(h, opcode, n, false);

	buf_add(&c->ctrl, h, k);
	if (n)
		buf_add(&c->ctrl, p, n);
}

static const char *
find_header(const char *req, const char *name)
{
	size_t		nl = strlen(name);

	for (const char *p = strstr(req, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n"))
	{
		const char *line = p + 2;

		if (strncasecmp(line, name, nl) == 0 && line[nl] == ':')
		{
			line += nl + 1;
			while (*line == ' ' || *line == '\t')
				line++;
			return line;
		}
	}
	return NULL;
}

static void
handle_http(Conn *c, size_t head_len)
{
	char	   *req = (char *) c->in.d;
	char		method[16] = "",
				target[1024] = "";
	const char *key;

	req[head_len - 1] = '\0';	/* the last '\n' of "\r\n\r\n" */
	sscanf(req, "%15s %1023s", method, target);
	{
		char	   *q = strchr(target, '?');

		if (q)
			*q = '\0';			/* never keep the credential */
		snprintf(c->path, sizeof(c->path), "%s", target);
	}
	key = find_header(req, "Sec-WebSocket-Key");
	if (strcmp(method, "GET") == 0 && key && strlen(c->path) >= 3 &&
		strcmp(c->path + strlen(c->path) - 3, "/ws") == 0)
	{
		char		k[128];
		unsigned char sha[SHA_DIGEST_LENGTH];
		unsigned char acc[64];
		size_t		kl = strcspn(key, "\r\n");

		snprintf(k, sizeof(k), "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int) (kl > 64 ? 64 : kl), key);
		SHA1((unsigned char *) k, strlen(k), sha);
		EVP_EncodeBlock(acc, sha, SHA_DIGEST_LENGTH);
		buf_printf(&c->ctrl, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
		c->state = C_WS;
		c->next_ping = mono_ns() + (int64_t) (ping_interval * 1e9);
	}
	else if (strcmp(method, "GET") == 0 && strcmp(c->path, "/v1.0/customer") == 0)
	{
		char		body[512];
		int			n = snprintf(body, sizeof(body),
								 "{\"id\":\"%s\",\"name\":\"bench\",\"detail\":\"\",\"email\":\"bench@example.com\","
								 "\"phone_number\":\"\",\"address\":\"\",\"webhook_method\":\"POST\",\"webhook_uri\":\"\","
								 "\"status\":\"active\",\"tm_create\":\"2026-01-01T00:00:00Z\"}", customer_id);

		buf_printf(&c->ctrl, "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
				   "Content-Length: %d\r\nConnection: close\r\n\r\n%s", n, body);
		c->close_after_write = true;
	}
	else if (strcmp(method, "GET") == 0 && strncmp(c->path, "/v1.0/calls/", 12) == 0)
	{
		/*
		 * the bench's queued requests (voipbin_request): answered at once,
		 * counted, and the connection kept for the next, as VoIPBIN does
		 */
		rest_requests++;
		buf_printf(&c->ctrl, "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
				   "Content-Length: 2\r\n\r\n{}");
	}
	else
	{
		buf_printf(&c->ctrl, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
		c->close_after_write = true;
	}
	/* anything after the request head is WebSocket data */
	memmove(c->in.d, c->in.d + head_len, c->in.len - head_len);
	c->in.len -= head_len;
}

static int
count_topics(const char *p, size_t n)
{
	int			k = 0;

	for (size_t i = 0; i + 13 <= n; i++)
		if (p[i] == '"' && (memcmp(p + i + 1, "customer_id:", 12) == 0 || memcmp(p + i + 1, "agent_id:", 9) == 0))
			k++;
	return k;
}

static void
client_text(Conn *c, const unsigned char *p, size_t n)
{
	const char *s = (const char *) p;

	c->frames_in++;
	if (memmem(s, n, "\"unsubscribe\"", 13))
		c->topics -= count_topics(s, n);
	else if (memmem(s, n, "\"subscribe\"", 11))
		c->topics += count_topics(s, n);
	if (c->topics < 0)
		c->topics = 0;
	c->subscribed = c->topics > 0;
}

/* Client frames are masked; handles every whole frame in c->in. */
static void
parse_ws(Conn *c)
{
	size_t		pos = 0;

	for (;;)
	{
		unsigned char *b = c->in.d + pos;
		size_t		avail = c->in.len - pos,
					hl = 2;
		uint64_t	n;
		int			opcode;
		bool		masked;

		if (avail < 2)
			break;
		opcode = b[0] & 0x0f;
		masked = b[1] & 0x80;
		n = b[1] & 0x7f;
		if (n == 126)
		{
			if (avail < 4)
				break;
			n = ((uint64_t) b[2] << 8) | b[3];
			hl = 4;
		}
		else if (n == 127)
		{
			if (avail < 10)
				break;
			n = 0;
			for (int i = 0; i < 8; i++)
				n = (n << 8) | b[2 + i];
			hl = 10;
		}
		if (masked)
			hl += 4;
		if (avail < hl + n)
			break;
		if (masked)
		{
			unsigned char *m = b + hl - 4;

			for (uint64_t i = 0; i < n; i++)
				b[hl + i] ^= m[i & 3];
		}
		switch (opcode)
		{
			case 0x0:
			case 0x1:
				client_text(c, b + hl, n);
				break;
			case 0x8:
				queue_ctrl(c, 0x8, b + hl, n > 2 ? 2 : n);
				c->close_after_write = true;
				break;
			case 0x9:
				c->pings_in++;
				queue_ctrl(c, 0xA, b + hl, n);
				break;
			case 0xA:
				c->pongs_in++;
				break;
			default:
				break;
		}
		pos += hl + n;
	}
	memmove(c->in.d, c->in.d + pos, c->in.len - pos);
	c->in.len -= pos;
}

/* Reads what TLS has; false when the connection is gone. */
static bool
conn_read(Conn *c)
{
	if (c->state == C_TLS)
	{
		int			r = SSL_accept(c->ssl);

		if (r == 1)
			c->state = C_HTTP;
		else
		{
			int			e = SSL_get_error(c->ssl, r);

			return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
		}
	}
	for (;;)
	{
		int			r;

		buf_reserve(&c->in, 65536);
		r = SSL_read(c->ssl, c->in.d + c->in.len, (int) (c->in.cap - c->in.len));
		if (r > 0)
		{
			c->in.len += r;
			if (c->state == C_HTTP && c->in.len > REQ_MAX)
				return false;
			continue;
		}
		{
			int			e = SSL_get_error(c->ssl, r);

			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				break;
			return false;
		}
	}
	if (c->state == C_HTTP)
	{
		unsigned char *end;

		buf_reserve(&c->in, 1);
		c->in.d[c->in.len] = '\0';
		end = memmem(c->in.d, c->in.len, "\r\n\r\n", 4);
		if (!end)
			return true;
		handle_http(c, end + 4 - c->in.d);
	}
	if (c->state == C_WS)
		parse_ws(c);
	return true;
}

static void
job_finish(void)
{
	job.t_last = real_ns();
	job.state = 2;
	if (job.kind == 2 && job.out[0])
	{
		FILE	   *f = fopen(job.out, "w");

		if (!f)
		{
			job.state = 3;
			snprintf(job.err, sizeof(job.err), "cannot write %.200s", job.out);
			return;
		}
		for (size_t i = 0; i < nframes; i++)
			fprintf(f, "%lld\n", (long long) job.sendtimes[i]);
		fclose(f);
	}
}

static int64_t
pace_due(size_t i)
{
	return job.t0 + (int64_t) ((double) i * 1e9 / job.rate);
}

/* Picks the next thing to write: control frames first, then the job's frames. */
static bool
next_chunk(Conn *c)
{
	if (c->ctrl.len)
	{
		Buf			t = c->inflight_ctrl;

		c->inflight_ctrl = c->ctrl;
		c->ctrl = t;
		c->ctrl.len = 0;
		c->chunk = c->inflight_ctrl.d;
		c->chunk_len = c->inflight_ctrl.len;
		c->chunk_kind = CHUNK_CTRL;
		return true;
	}
	if (c->state != C_WS || job.state != 1 || job.conn_id != c->id || job.next >= nframes)
		return false;
	if (job.kind == 1)
	{
		size_t		start = foff[job.next],
					k = job.next + 1;

		while (k < nframes && foff[k + 1] - start <= CHUNK_BYTES)
			k++;
		if (job.t_first == 0)
			job.t_first = real_ns();
		c->chunk = fbuf + start;
		c->chunk_len = foff[k] - start;
		c->chunk_end_frame = k;
	}
	else
	{
		int64_t		now = mono_ns();
		int64_t		due = pace_due(job.next);

		if (now < due)
			return false;
		if (now - due > 1000000)
			job.late++;
		if (now - due > job.max_late_ns)
			job.max_late_ns = now - due;
		job.sendtimes[job.next] = real_ns();
		if (job.t_first == 0)
			job.t_first = job.sendtimes[job.next];
		c->chunk = fbuf + foff[job.next];
		c->chunk_len = foff[job.next + 1] - foff[job.next];
		c->chunk_end_frame = job.next + 1;
	}
	c->chunk_kind = CHUNK_BULK;
	job.next = c->chunk_end_frame;
	return true;
}

/* Writes what is due until TLS would block; false when the connection is gone. */
static bool
conn_write(Conn *c, bool *blocked)
{
	*blocked = false;
	if (c->state == C_TLS)
		return true;
	for (;;)
	{
		int			r;

		if (c->chunk_kind == CHUNK_NONE && !next_chunk(c))
			return !(c->close_after_write && c->ctrl.len == 0);
		r = SSL_write(c->ssl, c->chunk + c->chunk_done, (int) (c->chunk_len - c->chunk_done));
		if (r > 0)
		{
			c->chunk_done += r;
			c->bytes_out += r;
			if (c->chunk_done == c->chunk_len)
			{
				if (c->chunk_kind == CHUNK_BULK)
				{
					job.sent = c->chunk_end_frame;
					if (job.sent == nframes && job.state == 1)
						job_finish();
				}
				c->chunk_kind = CHUNK_NONE;
				c->chunk_done = 0;
			}
			continue;
		}
		{
			int			e = SSL_get_error(c->ssl, r);

			if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			{
				*blocked = true;
				return true;
			}
			return false;
		}
	}
}

static bool
wants_write(Conn *c)
{
	return c->chunk_kind != CHUNK_NONE || c->ctrl.len ||
		(c->state == C_WS && job.state == 1 && job.conn_id == c->id && job.next < nframes &&
		 (job.kind == 1 || mono_ns() >= pace_due(job.next)));
}

/* ------------------------------------------------------------ control port */

typedef struct Ctl
{
	int			fd;
	Buf			in;
} Ctl;

static Ctl *ctls[MAX_CTL];

static int
target_conn(char *err, size_t errlen)
{
	int			found = 0,
				id = 0;

	for (int i = 0; i < MAX_CONNS; i++)
		if (conns[i] && conns[i]->state == C_WS && conns[i]->subscribed)
		{
			found++;
			id = conns[i]->id;
		}
	if (found != 1)
	{
		snprintf(err, errlen, "need exactly one subscribed connection, have %d", found);
		return 0;
	}
	return id;
}

static void
ctl_command(Ctl *k, char *line)
{
	Buf			out = {0};
	char		err[512] = "";

	if (strncmp(line, "load ", 5) == 0)
	{
		if (job.state == 1)
			snprintf(err, sizeof(err), "a job is running");
		else if (load_frames(line + 5, err, sizeof(err)))
			buf_printf(&out, "{\"ok\":true,\"frames\":%zu,\"payload_bytes\":%zu,\"wire_bytes\":%zu}",
					   nframes, payload_bytes, foff[nframes]);
	}
	else if (strcmp(line, "blast") == 0 || strncmp(line, "pace ", 5) == 0)
	{
		double		rate = 0;
		char		path[1024] = "";
		int			id;

		if (line[0] == 'p' && (sscanf(line + 5, "%lf %1023s", &rate, path) != 2 || rate <= 0))
			snprintf(err, sizeof(err), "usage: pace <rate> <path>");
		else if (job.state == 1)
			snprintf(err, sizeof(err), "a job is running");
		else if (nframes == 0)
			snprintf(err, sizeof(err), "no frames loaded");
		else if ((id = target_conn(err, sizeof(err))) != 0)
		{
			free(job.sendtimes);
			memset(&job, 0, sizeof(job));
			job.state = 1;
			job.kind = line[0] == 'b' ? 1 : 2;
			job.conn_id = id;
			job.rate = rate;
			if (job.kind == 2)
			{
				job.sendtimes = calloc(nframes, sizeof(int64_t));
				snprintf(job.out, sizeof(job.out), "%s", path);
				job.t0 = mono_ns();
			}
			buf_printf(&out, "{\"ok\":true,\"conn\":%d,\"frames\":%zu}", id, nframes);
		}
	}
	else if (strcmp(line, "abort") == 0)
	{
		if (job.state == 1)
		{
			job.state = 3;
			snprintf(job.err, sizeof(job.err), "aborted");
		}
		buf_printf(&out, "{\"ok\":true}");
	}
	else if (strcmp(line, "status") == 0)
	{
		static const char *jstates[] = {"idle", "running", "done", "failed"};
		bool		first = true;

		buf_printf(&out, "{\"ok\":true,\"frames_loaded\":%zu,\"connections_total\":%d,"
				   "\"rest_requests\":%llu,\"conns\":[",
				   nframes, connections_total, rest_requests);
		for (int i = 0; i < MAX_CONNS; i++)
		{
			Conn	   *c = conns[i];

			if (!c)
				continue;
			buf_printf(&out, "%s{\"id\":%d,\"state\":\"%s\",\"path\":\"%s\",\"topics\":%d,\"subscribed\":%s,"
					   "\"frames_in\":%llu,\"pings_in\":%llu,\"pongs_in\":%llu,\"pings_out\":%llu,\"bytes_out\":%llu}",
					   first ? "" : ",", c->id, c->state == C_WS ? "ws" : c->state == C_HTTP ? "http" : "tls",
					   c->path, c->topics, c->subscribed ? "true" : "false",
					   (unsigned long long) c->frames_in, (unsigned long long) c->pings_in,
					   (unsigned long long) c->pongs_in, (unsigned long long) c->pings_out,
					   (unsigned long long) c->bytes_out);
			first = false;
		}
		buf_printf(&out, "],\"job\":{\"state\":\"%s\",\"kind\":\"%s\",\"conn\":%d,\"frames\":%zu,\"sent\":%zu,"
				   "\"t_first_ns\":%lld,\"t_last_ns\":%lld,\"rate\":%g,\"late\":%llu,\"max_late_ns\":%lld,\"error\":\"%s\"}}",
				   jstates[job.state], job.kind == 1 ? "blast" : job.kind == 2 ? "pace" : "",
				   job.conn_id, nframes, job.sent, (long long) job.t_first, (long long) job.t_last,
				   job.rate, (unsigned long long) job.late, (long long) job.max_late_ns, job.err);
	}
	else
		snprintf(err, sizeof(err), "unknown command");
	if (err[0])
	{
		out.len = 0;
		for (char *p = err; *p; p++)
			if (*p == '"' || *p == '\\')
				*p = '\'';
		buf_printf(&out, "{\"ok\":false,\"error\":\"%s\"}", err);
	}
	buf_add(&out, "\n", 1);
	/* replies are small and the peer reads them at once: a blocking write is fine */
	{
		size_t		done = 0;
		int			fl = fcntl(k->fd, F_GETFL);

		fcntl(k->fd, F_SETFL, fl & ~O_NONBLOCK);
		while (done < out.len)
		{
			ssize_t		w = write(k->fd, out.d + done, out.len - done);

			if (w <= 0)
				break;
			done += w;
		}
		fcntl(k->fd, F_SETFL, fl);
	}
	free(out.d);
}

static bool
ctl_read(Ctl *k)
{
	for (;;)
	{
		ssize_t		r;

		buf_reserve(&k->in, 4096);
		r = read(k->fd, k->in.d + k->in.len, k->in.cap - k->in.len);
		if (r > 0)
		{
			k->in.len += r;
			continue;
		}
		if (r == 0)
			return false;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		if (errno != EINTR)
			return false;
	}
	for (;;)
	{
		unsigned char *nl = memchr(k->in.d, '\n', k->in.len);
		size_t		n;

		if (!nl)
			break;
		*nl = '\0';
		n = nl - k->in.d + 1;
		if (nl > k->in.d && nl[-1] == '\r')
			nl[-1] = '\0';
		ctl_command(k, (char *) k->in.d);
		memmove(k->in.d, k->in.d + n, k->in.len - n);
		k->in.len -= n;
	}
	return true;
}

/* ------------------------------------------------------------ serve */

static void
on_signal(int sig)
{
	stopping = 1;
}

static int
serve(const char *host, const char *cert, const char *key)
{
	int			port = 0,
				cport = 0;
	int			lfd,
				cfd;

	server_ctx = SSL_CTX_new(TLS_server_method());
	if (!server_ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(server_ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(server_ctx, cert) != 1 ||
		SSL_CTX_use_PrivateKey_file(server_ctx, key, SSL_FILETYPE_PEM) != 1)
		die("loading the certificate");
	SSL_CTX_set_mode(server_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	lfd = listen_on(host, &port);
	cfd = listen_on(host, &cport);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("{\"port\": %d, \"control_port\": %d}\n", port, cport);
	fflush(stdout);

	while (!stopping)
	{
		struct pollfd pfd[2 + MAX_CTL + MAX_CONNS];
		void	   *who[2 + MAX_CTL + MAX_CONNS];
		int			np = 0;
		int64_t		now = mono_ns(),
					wake = now + 1000000000LL;
		struct timespec ts;
		bool		pending_tls = false;

		pfd[np] = (struct pollfd) {lfd, POLLIN, 0};
		who[np++] = NULL;
		pfd[np] = (struct pollfd) {cfd, POLLIN, 0};
		who[np++] = NULL;
		for (int i = 0; i < MAX_CTL; i++)
			if (ctls[i])
			{
				pfd[np] = (struct pollfd) {ctls[i]->fd, POLLIN, 0};
				who[np++] = ctls[i];
			}
		for (int i = 0; i < MAX_CONNS; i++)
		{
			Conn	   *c = conns[i];

			if (!c)
				continue;
			if (c->state == C_WS && now >= c->next_ping)
			{
				queue_ctrl(c, 0x9, NULL, 0);
				c->pings_out++;
				c->next_ping = now + (int64_t) (ping_interval * 1e9);
			}
			if (c->state == C_WS && c->next_ping < wake)
				wake = c->next_ping;
			if (c->ssl && SSL_pending(c->ssl) > 0)
				pending_tls = true;
			pfd[np] = (struct pollfd) {c->fd, POLLIN, 0};
			if (wants_write(c))
				pfd[np].events |= POLLOUT;
			who[np++] = c;
		}
		if (job.state == 1 && job.kind == 2 && job.next < nframes)
		{
			int64_t		due = pace_due(job.next);

			if (due < wake)
				wake = due;
		}
		if (pending_tls || wake < now)
			wake = now;
		ts.tv_sec = (wake - now) / 1000000000LL;
		ts.tv_nsec = (wake - now) % 1000000000LL;
		if (ppoll(pfd, np, &ts, NULL) < 0 && errno != EINTR)
			die("poll");

		if (pfd[0].revents & POLLIN)
		{
			int			fd;

			while ((fd = accept(lfd, NULL, NULL)) >= 0)
			{
				int			slot = -1,
							one = 1;

				for (int i = 0; i < MAX_CONNS && slot < 0; i++)
					if (!conns[i])
						slot = i;
				if (slot < 0)
				{
					close(fd);
					continue;
				}
				set_nonblock(fd);
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				conns[slot] = calloc(1, sizeof(Conn));
				conns[slot]->fd = fd;
				conns[slot]->id = next_conn_id++;
				conns[slot]->ssl = SSL_new(server_ctx);
				SSL_set_fd(conns[slot]->ssl, fd);
				connections_total++;
			}
		}
		if (pfd[1].revents & POLLIN)
		{
			int			fd;

			while ((fd = accept(cfd, NULL, NULL)) >= 0)
			{
				int			slot = -1;

				for (int i = 0; i < MAX_CTL && slot < 0; i++)
					if (!ctls[i])
						slot = i;
				if (slot < 0)
				{
					close(fd);
					continue;
				}
				set_nonblock(fd);
				ctls[slot] = calloc(1, sizeof(Ctl));
				ctls[slot]->fd = fd;
			}
		}
		for (int j = 2; j < np; j++)
		{
			if (!who[j])
				continue;
			for (int i = 0; i < MAX_CTL; i++)
				if (ctls[i] == who[j] && (pfd[j].revents & (POLLIN | POLLHUP | POLLERR)))
				{
					if (!ctl_read(ctls[i]))
					{
						close(ctls[i]->fd);
						free(ctls[i]->in.d);
						free(ctls[i]);
						ctls[i] = NULL;
					}
				}
		}
		for (int i = 0; i < MAX_CONNS; i++)
		{
			Conn	   *c = conns[i];
			bool		blocked;
			bool		alive = true;

			if (!c)
				continue;
			/* read first: pings and subscriptions even while a blast runs */
			alive = conn_read(c);
			if (alive)
				alive = conn_write(c, &blocked);
			if (!alive || (c->close_after_write && c->chunk_kind == CHUNK_NONE && c->ctrl.len == 0))
			{
				conn_free(c);
				conns[i] = NULL;
			}
		}
	}
	for (int i = 0; i < MAX_CONNS; i++)
		if (conns[i])
			conn_free(conns[i]);
	return 0;
}

/* ------------------------------------------------------------ sink */

static void
ssl_write_all(SSL *ssl, const void *p, size_t n)
{
	while (n)
	{
		int			r = SSL_write(ssl, p, (int) n);

		if (r <= 0)
			die("SSL_write");
		p = (const char *) p + r;
		n -= r;
	}
}

static void
send_masked(SSL *ssl, int opcode, const void *p, size_t n)
{
	unsigned char h[14 + 4];
	size_t		k = ws_header(h, opcode, n, true);
	unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
	unsigned char *m = malloc(n + 1);

	memcpy(h + k, mask, 4);
	k += 4;
	for (size_t i = 0; i < n; i++)
		m[i] = ((const unsigned char *) p)[i] ^ mask[i & 3];
	ssl_write_all(ssl, h, k);
	if (n)
		ssl_write_all(ssl, m, n);
	free(m);
}

static int
sink(const char *host, int port, const char *ca, uint64_t count)
{
	SSL_CTX    *ctx = SSL_CTX_new(TLS_client_method());
	SSL		   *ssl;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {0};
	char		req[512];
	char		resp[4096];
	size_t		rl = 0;
	static unsigned char buf[1 << 18];
	/* frame parser state */
	unsigned char hdr[14];
	size_t		hlen = 0;
	uint64_t	remaining = 0;
	int			opcode = 0;
	unsigned char ctrl[128];
	size_t		ctrl_len = 0;
	uint64_t	frames = 0,
				bytes = 0;
	int64_t		first = 0,
				last = 0;
	const char *sub = "{\"type\":\"subscribe\",\"topics\":[\"customer_id:7d2f3c1a-5b6e-4f80-9a1b-2c3d4e5f6a7b:call:call_\"]}";

	signal(SIGPIPE, SIG_IGN);
	if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		die("loading the CA");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	inet_pton(AF_INET, host, &a.sin_addr);
	if (connect(fd, (struct sockaddr *) &a, sizeof(a)) != 0)
		die("connect");
	ssl = SSL_new(ctx);
	X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		die("TLS handshake");
	snprintf(req, sizeof(req),
			 "GET /v1.0/ws?accesskey=vb_bench HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			 "Sec-WebSocket-Version: 13\r\n\r\n", host, port);
	ssl_write_all(ssl, req, strlen(req));
	while (!memmem(resp, rl, "\r\n\r\n", 4))
	{
		int			r = SSL_read(ssl, resp + rl, 1);	/* byte by byte: no frame bytes swallowed */

		if (r <= 0 || ++rl >= sizeof(resp))
			die("reading the handshake answer");
	}
	if (strncmp(resp, "HTTP/1.1 101", 12) != 0)
		die("handshake refused");
	send_masked(ssl, 1, sub, strlen(sub));
	printf("ready\n");
	fflush(stdout);

	while (frames < count)
	{
		int			r = SSL_read(ssl, buf, sizeof(buf));
		size_t		pos = 0;

		if (r <= 0)
			die("SSL_read");
		bytes += r;
		while (pos < (size_t) r)
		{
			if (remaining == 0 && hlen < 2)
			{
				hdr[hlen++] = buf[pos++];
				continue;
			}
			if (remaining == 0)
			{
				size_t		need = 2;
				uint64_t	n = hdr[1] & 0x7f;

				if (n == 126)
					need = 4;
				else if (n == 127)
					need = 10;
				if (hlen < need)
				{
					hdr[hlen++] = buf[pos++];
					continue;
				}
				if (n == 126)
					n = ((uint64_t) hdr[2] << 8) | hdr[3];
				else if (n == 127)
				{
					n = 0;
					for (int i = 0; i < 8; i++)
						n = (n << 8) | hdr[2 + i];
				}
				opcode = hdr[0] & 0x0f;
				hlen = 0;
				ctrl_len = 0;
				remaining = n;
				if (n == 0)
					goto frame_done;
				if (remaining == 0)
					continue;
			}
			{
				size_t		take = (size_t) r - pos;

				if (take > remaining)
					take = remaining;
				if (opcode >= 0x8 && ctrl_len + take <= sizeof(ctrl))
				{
					memcpy(ctrl + ctrl_len, buf + pos, take);
					ctrl_len += take;
				}
				pos += take;
				remaining -= take;
				if (remaining)
					continue;
			}
	frame_done:
			if (opcode == 0x1 || opcode == 0x0)
			{
				frames++;
				if (frames == 1)
					first = real_ns();
				if (frames == count)
				{
					last = real_ns();
					break;
				}
			}
			else if (opcode == 0x9)
				send_masked(ssl, 0xA, ctrl, ctrl_len);
		}
	}
	printf("{\"frames\": %llu, \"bytes\": %llu, \"first_ns\": %lld, \"last_ns\": %lld}\n",
		   (unsigned long long) frames, (unsigned long long) bytes, (long long) first, (long long) last);
	fflush(stdout);
	send_masked(ssl, 0x8, "\x03\xe8", 2);
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	return 0;
}

/* ------------------------------------------------------------ main */

static const char *
arg(int argc, char **argv, const char *name, const char *dflt)
{
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return dflt;
}

int
main(int argc, char **argv)
{
	const char *host;

	if (argc < 2)
	{
		fprintf(stderr, "usage: emitter serve --cert C --key K [--host H] [--ping-interval S] [--customer-id U]\n"
				"       emitter sink --port N --ca CA --count K [--host H]\n");
		return 2;
	}
	host = arg(argc, argv, "--host", "127.0.0.1");
	if (strcmp(argv[1], "serve") == 0)
	{
		const char *cert = arg(argc, argv, "--cert", NULL);
		const char *key = arg(argc, argv, "--key", NULL);

		if (!cert || !key)
		{
			fprintf(stderr, "emitter serve: --cert and --key are required\n");
			return 2;
		}
		ping_interval = atof(arg(argc, argv, "--ping-interval", "10"));
		if (ping_interval <= 0)
			ping_interval = 10;
		customer_id = arg(argc, argv, "--customer-id", customer_id);
		return serve(host, cert, key);
	}
	if (strcmp(argv[1], "sink") == 0)
	{
		const char *port = arg(argc, argv, "--port", NULL);
		const char *ca = arg(argc, argv, "--ca", NULL);
		const char *count = arg(argc, argv, "--count", NULL);

		if (!port || !ca || !count)
		{
			fprintf(stderr, "emitter sink: --port, --ca and --count are required\n");
			return 2;
		}
		return sink(host, atoi(port), ca, strtoull(count, NULL, 10));
	}
	fprintf(stderr, "emitter: unknown mode %s\n", argv[1]);
	return 2;
}
