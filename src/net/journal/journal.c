/*
 * journal.c — the write-ahead journal: append, fsync, cache, replay, recycle.
 *
 * Every message is written to the current segment file (pwritev, under the
 * writer mutex, so webhook and repair threads may submit alongside the
 * network thread) before it is queued; the main thread reads by position,
 * from the memory cache when it holds the record and from the file when it
 * does not (the cache was full, or the process restarted).  A flusher thread
 * fdatasync()s what was written at least every 100 ms, and at once for a
 * caller of journal_wait_durable().  Positions are byte offsets in one
 * endless stream; segments are slices of it named by their first position.
 *
 * No PostgreSQL here: libc and pthreads only.  Signals stay blocked in the
 * flusher so the postmaster's reach the worker's main thread.
 */
#ifdef POSTGRES_H
#error "journal.c must not use the PostgreSQL API"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "net/journal/journal.h"
#include "net/journal/pio.h"
#include "net/journal/record.h"
#include "net/no_postgres.h"

#define REC_MAGIC	0x4a4e4256u	/* "VBNJ" */
#define META_MAGIC	0x4d4e4256u	/* "VBNM" */
#define META_VERSION 1
#define META_FILE	"journal.meta"
#define HDR_SIZE	32
#define SEG_MAX		(16u * 1024 * 1024)
#define SEG_MIN		(64u * 1024)
#define RESERVE_AHEAD (64ull * 1024 * 1024)
#define FLUSH_EVERY_MS 100
#define MAX_RECORD	(1u << 30)	/* larger lengths are damage, not data */
#define REPORT_MAX	16

typedef struct RecHdr
{
	uint32_t	magic;
	uint32_t	crc;			/* CRC-32C of the header from len on, then the data */
	uint32_t	len;
	uint8_t		flags;
	uint8_t		source;
	uint16_t	pad;
	uint64_t	orig_len;
	int64_t		at_us;
} RecHdr;

typedef struct Meta
{
	uint32_t	magic;
	uint32_t	version;
	uint64_t	dir_ino;
	uint64_t	file_ino;
	uint64_t	reserved;		/* no position at or past this was handed out */
	char		id[40];
	uint32_t	pad;
	uint32_t	crc;
} Meta;

typedef struct Segment
{
	struct Segment *next;
	uint64_t	base;
	uint64_t	size;			/* bytes of whole records */
	uint64_t	synced;			/* bytes known to be on disk */
	int			fd;
	int			pins;			/* flusher or reader using fd outside mu */
	bool		dead;			/* unlinked: close once unpinned */
} Segment;

typedef struct Report
{
	char		text[400];
	bool		warning;
} Report;

typedef struct Overflow
{
	uint64_t	count;
	int64_t		first_us,
				last_us;
} Overflow;

/* mu guards everything below unless noted; wmu serialises appends. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flush_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t durable_cv = PTHREAD_COND_INITIALIZER;

static bool opened;				/* journal_open() ran and journal_close() did not */
static bool on_disk;			/* false: memory-only mode */
static bool do_sync;
static int	dir_fd = -1;
static int	meta_fd = -1;
static Meta meta;
static char dir_path[1024];
static Segment *segs;			/* oldest first; the last one takes appends */
static bool tail_fresh;			/* appends must start a new segment (after open, or a
								 * partial record that could not be cut off) */
static uint64_t next_base;		/* where a new segment starts */
static uint64_t write_end;		/* past the last whole record */
static uint64_t durable_end;	/* fsync'd up to here */
static bool dir_dirty;			/* a segment was created or unlinked */
static uint64_t stored_floor;	/* everything before is stored */
static uint64_t disk_bytes;		/* sum of segment sizes */
static uint64_t limit_bytes = UINT64_MAX;
static size_t mem_limit = SIZE_MAX;

static JournalRecord *cache_head,
		   *cache_tail;
static size_t cache_bytes;

static uint64_t lost_total;
static uint64_t read_pos;		/* the worker took everything before */
static uint64_t *backlog_out,
		   *lost_out;
static bool ov_open;
static Overflow ov_cur,
			ov_done;
static bool ov_done_pending;

static Report reports[REPORT_MAX];
static int	report_n;

static int	waiters;
static bool flusher_idle;		/* in its untimed wait: a new record must wake it */
static bool flusher_stop;
static bool flusher_running;
static pthread_t flusher;
static int	wake_fd = -1;

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++)
	{
		uint32_t	c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t
crc_hw(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t	c = crc;

	while (len >= 8)
	{
		uint64_t	v;

		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t) c, *p++);
	return (uint32_t) c;
}
#endif

uint32_t
journal_crc32c(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc_hw(crc, p, len);
#endif
	pthread_once(&crc_once, crc_init);
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint32_t
record_crc(const RecHdr *h, const char *data, size_t len)
{
	uint32_t	c = journal_crc32c(0, (const char *) h + 8, HDR_SIZE - 8);

	return journal_crc32c(c, data, len);
}

static uint32_t
meta_crc(const Meta *m)
{
	return journal_crc32c(0, m, offsetof(Meta, crc));
}

/* ---- small helpers ---- */

/* Called with mu held. */
static void report(bool warning, const char *fmt,...) __attribute__((format(printf, 2, 3)));
static void
report(bool warning, const char *fmt,...)
{
	va_list		ap;

	if (report_n >= REPORT_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(reports[report_n].text, sizeof(reports[report_n].text), fmt, ap);
	va_end(ap);
	reports[report_n].warning = warning;
	report_n++;
}

static void
seg_name(char *buf, size_t len, uint64_t base)
{
	snprintf(buf, len, "%016" PRIx64 ".seg", base);
}

static size_t
event_cost(size_t len)
{
	return len + 1 + sizeof(JournalRecord) + 4 * sizeof(size_t);	/* two malloc headers */
}

void
journal_record_free(JournalRecord *ev)
{
	free(ev->data);
	free(ev);
}

static void
wake_main(void)
{
	uint64_t	one = 1;
	ssize_t		rc;

	if (wake_fd < 0)
		return;
	do
		rc = write(wake_fd, &one, sizeof(one));
	while (rc < 0 && errno == EINTR);
}

/* ---- buffered reading of a segment ---- */

typedef struct Reader
{
	int			fd;
	uint64_t	end;			/* readable bytes in the file */
	char	   *buf;
	size_t		cap;
	uint64_t	boff;			/* file offset of buf[0] */
	size_t		blen;
} Reader;

#define READ_CHUNK (1u << 20)

/* Bytes [off, off+len) of the file, or NULL past its end or on a read error. */
static const char *
rd_get(Reader *r, uint64_t off, size_t len)
{
	if (off + len > r->end || off + len < off)
		return NULL;
	if (off >= r->boff && off + len <= r->boff + r->blen)
		return r->buf + (off - r->boff);
	{
		size_t		want = len > READ_CHUNK ? len : READ_CHUNK;

		if (want > r->end - off)
			want = (size_t) (r->end - off);
		if (want > r->cap)
		{
			char	   *p = realloc(r->buf, want);

			if (!p)
				return NULL;
			r->buf = p;
			r->cap = want;
		}
		if (!pread_all(r->fd, r->buf, want, off))
		{
			r->blen = 0;
			return NULL;
		}
		r->boff = off;
		r->blen = want;
		return r->buf;
	}
}

/* The record at off if it is whole and its CRC holds; *data points into r. */
static bool
rd_record(Reader *r, uint64_t off, RecHdr *h, const char **data)
{
	const char *p = rd_get(r, off, HDR_SIZE);

	if (!p)
		return false;
	memcpy(h, p, HDR_SIZE);
	if (h->magic != REC_MAGIC || h->len > MAX_RECORD ||
		off + HDR_SIZE + h->len > r->end)
		return false;
	p = rd_get(r, off + HDR_SIZE, h->len);
	if (!p)
		return false;
	if (record_crc(h, p, h->len) != h->crc)
		return false;
	*data = p;
	return true;
}

/* The next offset past off where a whole record starts, or r->end. */
static uint64_t
rd_resync(Reader *r, uint64_t off)
{
	RecHdr		h;
	const char *d;

	for (uint64_t o = off + 1; o + HDR_SIZE <= r->end; o++)
	{
		const char *p = rd_get(r, o, 4);
		uint32_t	m;

		if (!p)
			break;
		memcpy(&m, p, 4);
		if (m == REC_MAGIC && rd_record(r, o, &h, &d))
			return o;
	}
	return r->end;
}

/* ---- the identity ---- */

static bool
meta_write(char *err, size_t errlen)
{
	meta.crc = meta_crc(&meta);
	if (!pwrite_all(meta_fd, &meta, sizeof(meta), 0) ||
		(do_sync && fdatasync(meta_fd) != 0))
	{
		snprintf(err, errlen, "could not write \"%s/%s\": %s", dir_path, META_FILE,
				 strerror(errno));
		return false;
	}
	return true;
}

static bool
new_identity(const struct stat *dst, const struct stat *fst, uint64_t reserved,
			 char *err, size_t errlen)
{
	unsigned char rnd[16];

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
	{
		snprintf(err, errlen, "getrandom failed: %s", strerror(errno));
		return false;
	}
	memset(&meta, 0, sizeof(meta));
	meta.magic = META_MAGIC;
	meta.version = META_VERSION;
	meta.dir_ino = (uint64_t) dst->st_ino;
	meta.file_ino = (uint64_t) fst->st_ino;
	meta.reserved = reserved;
	for (int i = 0; i < 16; i++)
		snprintf(meta.id + 2 * i, 3, "%02x", rnd[i]);
	return meta_write(err, errlen);
}

/* ---- recovery ---- */

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = *(const uint64_t *) a,
				y = *(const uint64_t *) b;

	return x < y ? -1 : x > y;
}

/* Segment bases found in the directory, sorted; *n of them. */
static uint64_t *
list_segments(int *n)
{
	DIR		   *d = fdopendir(dup(dir_fd));
	struct dirent *de;
	uint64_t   *v = NULL;
	int			cap = 0;

	*n = 0;
	if (!d)
		return NULL;
	rewinddir(d);
	while ((de = readdir(d)) != NULL)
	{
		char	   *end;
		uint64_t	base;

		if (strlen(de->d_name) != 20 || strcmp(de->d_name + 16, ".seg") != 0)
			continue;
		base = strtoull(de->d_name, &end, 16);
		if (end != de->d_name + 16)
			continue;
		if (*n == cap)
		{
			uint64_t   *p = realloc(v, sizeof(uint64_t) * (cap = cap ? cap * 2 : 16));

			if (!p)
				break;
			v = p;
		}
		v[(*n)++] = base;
	}
	closedir(d);
	if (v)
		qsort(v, *n, sizeof(uint64_t), cmp_u64);
	return v;
}

static void
unlink_segment(uint64_t base)
{
	char		name[32];

	seg_name(name, sizeof(name), base);
	unlinkat(dir_fd, name, 0);
}

/*
 * Reads one segment: counts its records, reports damage, and cuts a torn
 * tail (a write the crash interrupted).  Returns the segment, or NULL when
 * nothing in it is readable (the file is then removed).
 */
static Segment *
recover_segment(uint64_t base, uint64_t *frames, uint64_t limit_end)
{
	char		name[32];
	struct stat st;
	Reader		r = {0};
	uint64_t	off = 0,
				good_end = 0,
				bad = 0,
				n = 0;
	Segment    *s;

	seg_name(name, sizeof(name), base);
	r.fd = openat(dir_fd, name, O_RDWR | O_CLOEXEC);
	if (r.fd < 0 || fstat(r.fd, &st) != 0)
	{
		report(true, "journal segment %s could not be opened: %s; its frames are lost",
			   name, strerror(errno));
		if (r.fd >= 0)
			close(r.fd);
		return NULL;
	}
	r.end = (uint64_t) st.st_size;
	if (limit_end > base && r.end > limit_end - base)
		r.end = limit_end - base;	/* overlaps the next segment: damage */
	while (off < r.end)
	{
		RecHdr		h;
		const char *d;

		if (rd_record(&r, off, &h, &d))
		{
			off += HDR_SIZE + h.len;
			good_end = off;
			n++;
			continue;
		}
		{
			uint64_t	next = rd_resync(&r, off);

			bad += next - off;
			if (next < r.end)
				report(true, "journal segment %s: %" PRIu64 " damaged byte(s) at offset %" PRIu64
					   " skipped; the frames there are lost", name, next - off, off);
			else
				report(true, "journal segment %s: %" PRIu64 " unreadable byte(s) at its end"
					   " (offset %" PRIu64 ", a torn or damaged write) discarded; the frames there are lost",
					   name, next - off, off);
			off = next;
		}
	}
	free(r.buf);
	*frames += n;
	if (good_end == 0)
	{
		close(r.fd);
		unlinkat(dir_fd, name, 0);
		return NULL;
	}
	if ((uint64_t) st.st_size > good_end && ftruncate(r.fd, (off_t) good_end) != 0)
		report(true, "journal segment %s could not be cut to %" PRIu64 " bytes: %s",
			   name, good_end, strerror(errno));
	(void) bad;
	s = calloc(1, sizeof(Segment));
	if (!s)
	{
		close(r.fd);
		return NULL;
	}
	s->base = base;
	s->size = good_end;
	s->synced = good_end;
	s->fd = r.fd;
	return s;
}

static void *flusher_main(void *arg);

static bool
mkdir_p(const char *path)
{
	char		buf[1024];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++)
		if (*p == '/')
		{
			*p = '\0';
			if (mkdir(buf, 0700) != 0 && errno != EEXIST)
				return false;
			*p = '/';
		}
	return mkdir(buf, 0700) == 0 || errno == EEXIST;
}

/* Opens (creating) the directory and its journal.meta, locked; their inodes in *dst, *fst. */
static bool
open_dir_locked(const char *dir, struct stat *dst, struct stat *fst, char *err, size_t errlen)
{
	if (!mkdir_p(dir) ||
		(dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
		fstat(dir_fd, dst) != 0)
	{
		snprintf(err, errlen, "could not open the journal directory \"%s\": %s", dir, strerror(errno));
		return false;
	}
	meta_fd = openat(dir_fd, META_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (meta_fd < 0 || fstat(meta_fd, fst) != 0)
	{
		snprintf(err, errlen, "could not open \"%s/%s\": %s", dir, META_FILE, strerror(errno));
		return false;
	}
	/* two servers configured with the same directory must not share it */
	if (flock(meta_fd, LOCK_EX | LOCK_NB) != 0)
	{
		snprintf(err, errlen, "the journal directory \"%s\" is in use by another process", dir);
		return false;
	}
	return true;
}

/* Recovers the segments at bases[0..nseg), oldest first, into segs; the frames they hold. */
static uint64_t
recover_segments(const uint64_t *bases, int nseg)
{
	uint64_t	frames = 0;
	Segment   **link = &segs;

	for (int i = 0; i < nseg; i++)
	{
		Segment    *s = recover_segment(bases[i], &frames, i + 1 < nseg ? bases[i + 1] : 0);

		if (!s)
			continue;
		*link = s;
		link = &s->next;
		disk_bytes += s->size;
		if (s->base + s->size > write_end)
			write_end = s->base + s->size;
	}
	return frames;
}

static bool
open_files(const char *dir, char *err, size_t errlen)
{
	struct stat dst,
				fst;
	Meta		m;
	bool		have_meta = false;
	int			nseg = 0;
	uint64_t   *bases;
	uint64_t	frames;

	snprintf(dir_path, sizeof(dir_path), "%s", dir);
	if (!open_dir_locked(dir, &dst, &fst, err, errlen))
		return false;
	if (pread_all(meta_fd, &m, sizeof(m), 0) && m.magic == META_MAGIC &&
		m.version == META_VERSION && m.crc == meta_crc(&m) && memchr(m.id, '\0', sizeof(m.id)))
		have_meta = true;

	bases = list_segments(&nseg);
	if (have_meta && (m.dir_ino != (uint64_t) dst.st_ino || m.file_ino != (uint64_t) fst.st_ino))
	{
		/*
		 * Another inode: this directory is a copy (pg_basebackup, a file
		 * copy).  Its frames belong to the server it was copied from, which
		 * stores them itself; storing them here would store them twice.
		 * st_dev is not compared: device numbers may change across reboots.
		 */
		report(true, "the journal in \"%s\" was copied from another server (pg_basebackup or a file copy):"
			   " its %d segment(s) are discarded, the original server stores those frames", dir, nseg);
		for (int i = 0; i < nseg; i++)
			unlink_segment(bases[i]);
		nseg = 0;
		have_meta = false;
	}
	else if (!have_meta && nseg > 0)
	{
		report(true, "the journal in \"%s\" has no readable identity (%s): its %d segment(s) are discarded",
			   dir, META_FILE, nseg);
		for (int i = 0; i < nseg; i++)
			unlink_segment(bases[i]);
		nseg = 0;
	}
	if (have_meta)
		meta = m;
	else if (!new_identity(&dst, &fst, 0, err, errlen))
	{
		free(bases);
		return false;
	}

	frames = recover_segments(bases, nseg);
	free(bases);

	/*
	 * New records go to a new segment past every position ever handed out:
	 * the database may have recorded one the files lost in a power cut.
	 */
	next_base = write_end > meta.reserved ? write_end : meta.reserved;
	if (segs == NULL)
		write_end = next_base;
	tail_fresh = true;
	durable_end = write_end;
	stored_floor = segs ? segs->base : next_base;
	if (frames > 0)
		report(false, "journal \"%s\": %" PRIu64 " frame(s) in %" PRIu64 " bytes to replay or skip",
			   dir, frames, disk_bytes);
	return true;
}

bool
journal_open(const char *dir, uint64_t limit, size_t mem, bool sync, char *err, size_t errlen)
{
	sigset_t	all,
				old;
	bool		ok;
	int			rc;

	err[0] = '\0';
	if (opened)
		return on_disk;
	/*
	 * One eventfd for the process, kept across journal_close(): closing it
	 * there could race a submitter's wake_main() onto a reused descriptor.
	 */
	if (wake_fd < 0)
		wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_lock(&wmu);
	pthread_mutex_lock(&mu);
	do_sync = sync;
	limit_bytes = limit;
	mem_limit = mem;
	ok = dir && open_files(dir, err, errlen);
	if (!ok)
	{
		if (meta_fd >= 0)
			close(meta_fd);
		if (dir_fd >= 0)
			close(dir_fd);
		meta_fd = dir_fd = -1;
		snprintf(meta.id, sizeof(meta.id), "%s", "");
	}
	on_disk = ok;
	opened = true;
	flusher_stop = false;
	pthread_mutex_unlock(&mu);
	pthread_mutex_unlock(&wmu);

	if (ok)
	{
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		rc = pthread_create(&flusher, NULL, flusher_main, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		flusher_running = rc == 0;
		if (rc != 0)
			snprintf(err, errlen, "could not start the journal flusher: %s", strerror(rc));
	}
	/* what a previous worker left: the main thread replays it first */
	wake_main();
	return ok;
}

/* ---- appending ---- */

/* Called with mu held: unlinks the segments wholly stored (never the tail). */
static void
recycle_locked(void)
{
	while (segs && segs->next && segs->base + segs->size <= stored_floor)
	{
		Segment    *s = segs;

		segs = s->next;
		unlink_segment(s->base);
		disk_bytes -= s->size;
		dir_dirty = true;
		if (s->pins == 0)
		{
			close(s->fd);
			free(s);
		}
		else
			s->dead = true;
	}
}

static Segment *
tail_segment(void)
{
	Segment    *s = segs;

	while (s && s->next)
		s = s->next;
	return s;
}

/* Called with wmu held, not mu: a new segment at next_base. */
static Segment *
start_segment(uint64_t need)
{
	char		name[32];
	Segment    *s;
	int			fd;

	if (next_base + need > meta.reserved)
	{
		char		err[256];

		meta.reserved = next_base + need + RESERVE_AHEAD;
		if (!meta_write(err, sizeof(err)))
		{
			pthread_mutex_lock(&mu);
			report(true, "%s", err);
			pthread_mutex_unlock(&mu);
			return NULL;
		}
	}
	seg_name(name, sizeof(name), next_base);
	fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	s = calloc(1, sizeof(Segment));
	if (!s)
	{
		close(fd);
		unlinkat(dir_fd, name, 0);
		return NULL;
	}
	s->base = next_base;
	s->fd = fd;
	pthread_mutex_lock(&mu);
	if (segs)
		tail_segment()->next = s;
	else
		segs = s;
	if (write_end < s->base)
		write_end = s->base;
	if (durable_end < s->base)
		durable_end = s->base;
	dir_dirty = true;
	recycle_locked();
	pthread_mutex_unlock(&mu);
	tail_fresh = false;
	return s;
}

/* Called with mu held. */
static uint64_t
backlog_locked(uint64_t from)
{
	uint64_t	n = 0;

	if (!on_disk)
		return cache_bytes;
	for (Segment *s = segs; s; s = s->next)
	{
		uint64_t	b = s->base > from ? s->base : from;

		if (s->base + s->size > b)
			n += s->base + s->size - b;
	}
	return n;
}

/* Called with mu held. */
static void
publish_locked(void)
{
	if (backlog_out)
		__atomic_store_n(backlog_out, backlog_locked(read_pos), __ATOMIC_RELAXED);
	if (lost_out)
		__atomic_store_n(lost_out, lost_total, __ATOMIC_RELAXED);
}

/* Called with mu held. */
static void
count_lost(int64_t at_us)
{
	lost_total++;
	if (lost_out)
		__atomic_store_n(lost_out, lost_total, __ATOMIC_RELAXED);
	if (!ov_open)
	{
		ov_open = true;
		ov_cur.count = 0;
		ov_cur.first_us = at_us;
	}
	ov_cur.count++;
	ov_cur.last_us = at_us;
}

/* Called with mu held. */
static void
end_overflow(void)
{
	if (!ov_open)
		return;
	if (!ov_done_pending)
		ov_done = ov_cur;
	else
	{
		ov_done.count += ov_cur.count;
		ov_done.last_us = ov_cur.last_us;
	}
	ov_done_pending = true;
	ov_open = false;
}

static uint64_t
lost(int64_t at_us, char *data)
{
	pthread_mutex_lock(&mu);
	count_lost(at_us);
	pthread_mutex_unlock(&mu);
	free(data);
	return 0;
}

/*
 * Called with wmu held: whether a record of rec bytes fits within
 * voipbin.spool_limit (else it is counted lost); *tail and *all_stored are
 * the tail segment and whether everything written is stored, as of now.
 */
static bool
admit_record(uint64_t rec, int64_t at_us, Segment **tail, bool *all_stored)
{
	bool		fits;

	pthread_mutex_lock(&mu);
	/* the directory's size, stored-but-not-recycled bytes included */
	fits = (on_disk ? disk_bytes : write_end - stored_floor) + rec <= limit_bytes;
	if (!fits)
		count_lost(at_us);
	*tail = tail_segment();
	*all_stored = stored_floor >= write_end;
	pthread_mutex_unlock(&mu);
	return fits;
}

/*
 * Called with wmu held: the segment a record of rec bytes goes to, the tail
 * or a new one when the tail is full (or sizeable and wholly stored, so it
 * can go at once) or must take no more (tail_fresh); with positions reserved
 * in journal.meta past its end.  NULL when that failed.
 */
static Segment *
segment_for(uint64_t rec, Segment *tail, bool all_stored)
{
	uint64_t	seg_target = limit_bytes / 8;

	if (seg_target > SEG_MAX)
		seg_target = SEG_MAX;
	if (seg_target < SEG_MIN)
		seg_target = SEG_MIN;
	if (tail == NULL || tail_fresh ||
		(tail->size > 0 && tail->size + rec > seg_target) ||
		(tail->size >= seg_target / 16 && all_stored))
	{
		next_base = write_end;
		if (tail_fresh && next_base < meta.reserved)
			next_base = meta.reserved;
		tail = start_segment(rec);
		if (!tail)
		{
			pthread_mutex_lock(&mu);
			report(true, "could not create a journal segment in \"%s\": %s", dir_path,
				   strerror(errno));
			pthread_mutex_unlock(&mu);
			return NULL;
		}
	}
	if (tail->base + tail->size + rec > meta.reserved)
	{
		char		err[256];

		meta.reserved = tail->base + tail->size + rec + RESERVE_AHEAD;
		if (!meta_write(err, sizeof(err)))
			return NULL;
	}
	return tail;
}

/*
 * Called with wmu held: writes the record (h, then data) at the end of tail.
 * A write that fails part-way leaves a partial record, which is cut off again
 * so the next record goes where it began.  Should that cut fail too, the
 * partial record stays past the segment's end: the segment then takes no
 * more records (the next starts a new segment past every position handed
 * out, as after a restart), so no record is ever written over what is left
 * of it, and recovery after a restart cuts it as it does a crash's torn
 * write.  Both failures are reported.
 */
static bool
write_record(Segment *tail, RecHdr *h, const char *data, size_t len)
{
	struct iovec iov[2];
	ssize_t		n;
	size_t		rec = HDR_SIZE + len;
	int			e,
				cut_errno = 0;

	h->crc = record_crc(h, data, len);
	iov[0].iov_base = h;
	iov[0].iov_len = HDR_SIZE;
	iov[1].iov_base = (void *) data;
	iov[1].iov_len = len;
	do
		n = pwritev(tail->fd, iov, 2, (off_t) tail->size);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t) rec)
		return true;
	e = n < 0 ? errno : ENOSPC;
	if (ftruncate(tail->fd, (off_t) tail->size) != 0)
	{
		cut_errno = errno;
		tail_fresh = true;
	}
	pthread_mutex_lock(&mu);
	if (!ov_open)
		report(true, "could not write to the journal in \"%s\": %s", dir_path, strerror(e));
	if (cut_errno)
	{
		char		name[32];

		seg_name(name, sizeof(name), tail->base);
		report(true, "could not cut a partly written record off journal segment %s in \"%s\": %s;"
			   " the segment takes no more records", name, dir_path, strerror(cut_errno));
	}
	pthread_mutex_unlock(&mu);
	return false;
}

/*
 * Called with wmu held: the record [pos, end) is written (or, in memory
 * only, taken): accounts for it, caches it when the cache has room (taking
 * data, else freeing it) and wakes the flusher and the main thread.
 */
static void
record_written(JournalSource source, unsigned flags, int64_t at_us, char *data, size_t len,
			   uint64_t orig_len, Segment *tail, uint64_t pos, uint64_t end)
{
	JournalRecord *ev = calloc(1, sizeof(JournalRecord));

	pthread_mutex_lock(&mu);
	if (tail && on_disk)
		tail->size += end - pos;
	write_end = end;
	disk_bytes += on_disk ? end - pos : 0;
	end_overflow();
	/* in memory only, the cache is the journal: it takes everything within the limit */
	if (ev && (!on_disk || cache_bytes + event_cost(len) <= mem_limit))
	{
		ev->binary = (flags & JOURNAL_BINARY) != 0;
		ev->oversize_len = (flags & JOURNAL_OVERSIZE) ? orig_len : 0;
		ev->source = (uint8_t) source;
		ev->at_us = at_us;
		ev->len = len;
		ev->data = data;
		ev->jpos = pos;
		ev->jend = end;
		if (cache_tail)
			cache_tail->next = ev;
		else
			cache_head = ev;
		cache_tail = ev;
		cache_bytes += event_cost(len);
		ev = NULL;
		data = NULL;
	}
	if (!on_disk)
		durable_end = end;
	publish_locked();
	/* between its timed syncs the flusher needs no wake-up per record */
	if (flusher_idle)
		pthread_cond_signal(&flush_cv);
	pthread_mutex_unlock(&mu);
	free(ev);
	free(data);
}

uint64_t
journal_submit_owned(JournalSource source, unsigned flags, int64_t at_us,
					 char *data, size_t len, uint64_t orig_len)
{
	RecHdr		h;
	uint64_t	rec = HDR_SIZE + (uint64_t) len,
				pos;
	Segment    *tail;
	bool		all_stored;

	if (len > MAX_RECORD)
		return lost(at_us, data);
	pthread_mutex_lock(&wmu);
	if (!opened)
	{
		pthread_mutex_unlock(&wmu);
		free(data);
		return 0;
	}
	if (!admit_record(rec, at_us, &tail, &all_stored))
	{
		pthread_mutex_unlock(&wmu);
		free(data);
		return 0;
	}

	memset(&h, 0, sizeof(h));
	h.magic = REC_MAGIC;
	h.len = (uint32_t) len;
	h.flags = (uint8_t) flags;
	h.source = (uint8_t) source;
	h.orig_len = orig_len;
	h.at_us = at_us;

	if (on_disk)
	{
		tail = segment_for(rec, tail, all_stored);
		if (!tail || !write_record(tail, &h, data, len))
		{
			pthread_mutex_unlock(&wmu);
			return lost(at_us, data);
		}
		pos = tail->base + tail->size;
	}
	else
		pos = write_end;

	record_written(source, flags, at_us, data, len, orig_len, tail, pos, pos + rec);
	pthread_mutex_unlock(&wmu);
	wake_main();
	return pos + rec;
}

uint64_t
journal_submit(JournalSource source, unsigned flags, int64_t at_us,
			   const char *data, size_t len, uint64_t orig_len)
{
	char	   *copy = malloc(len + 1);

	if (!copy)
	{
		pthread_mutex_lock(&mu);
		count_lost(at_us);
		pthread_mutex_unlock(&mu);
		return 0;
	}
	memcpy(copy, data, len);
	copy[len] = '\0';
	return journal_submit_owned(source, flags, at_us, copy, len, orig_len);
}

/* ---- durability ---- */

static void
add_ms(struct timespec *ts, long ms)
{
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L)
	{
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *
flusher_main(void *arg)
{
	struct timespec last = {0};

	(void) arg;
	pthread_mutex_lock(&mu);
	for (;;)
	{
		Segment    *todo[64];
		uint64_t	upto[64];
		int			n = 0;
		uint64_t	target;
		bool		dir_too;
		bool		failed = false;

		while (durable_end >= write_end && !flusher_stop)
		{
			flusher_idle = true;
			pthread_cond_wait(&flush_cv, &mu);
			flusher_idle = false;
		}
		if (durable_end >= write_end && flusher_stop)
			break;
		/* at most every FLUSH_EVERY_MS, at once for a waiter or at the end */
		if (waiters == 0 && !flusher_stop)
		{
			struct timespec due = last,
						now;

			add_ms(&due, FLUSH_EVERY_MS);
			clock_gettime(CLOCK_REALTIME, &now);
			if (now.tv_sec < due.tv_sec || (now.tv_sec == due.tv_sec && now.tv_nsec < due.tv_nsec))
			{
				pthread_cond_timedwait(&flush_cv, &mu, &due);
				continue;
			}
		}
		target = write_end;
		for (Segment *s = segs; s && n < 64; s = s->next)
			if (s->synced < s->size)
			{
				s->pins++;
				todo[n] = s;
				upto[n++] = s->size;
			}
		dir_too = dir_dirty;
		dir_dirty = false;
		pthread_mutex_unlock(&mu);

		for (int i = 0; i < n; i++)
			if (do_sync && fdatasync(todo[i]->fd) != 0)
				failed = true;
		if (dir_too && do_sync && fsync(dir_fd) != 0)
			failed = true;

		pthread_mutex_lock(&mu);
		clock_gettime(CLOCK_REALTIME, &last);
		for (int i = 0; i < n; i++)
		{
			Segment    *s = todo[i];

			if (!failed && s->synced < upto[i])
				s->synced = upto[i];
			if (--s->pins == 0 && s->dead)
			{
				close(s->fd);
				free(s);
			}
		}
		if (failed)
		{
			report(true, "fsync of the journal in \"%s\" failed: %s", dir_path, strerror(errno));
			dir_dirty = dir_dirty || dir_too;
		}
		else if (n < 64 && target > durable_end)
			durable_end = target;
		pthread_cond_broadcast(&durable_cv);
		if (failed && flusher_stop)
			break;
		if (failed)
		{
			struct timespec due = last;

			add_ms(&due, FLUSH_EVERY_MS);
			pthread_cond_timedwait(&flush_cv, &mu, &due);
		}
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

bool
journal_wait_durable(uint64_t pos, int timeout_ms)
{
	struct timespec due;
	bool		ok;

	if (pos == 0)
		return false;
	clock_gettime(CLOCK_REALTIME, &due);
	add_ms(&due, timeout_ms);
	pthread_mutex_lock(&mu);
	if (!opened || !on_disk)
	{
		pthread_mutex_unlock(&mu);
		return false;
	}
	waiters++;
	pthread_cond_signal(&flush_cv);
	while (durable_end < pos && opened &&
		   pthread_cond_timedwait(&durable_cv, &mu, &due) != ETIMEDOUT)
		;
	waiters--;
	ok = durable_end >= pos;
	pthread_mutex_unlock(&mu);
	return ok;
}

/* ---- the main thread's side ---- */

/* Reads records [from, stop) of s into the list at *tail; returns the new position. */
static uint64_t
read_segment(Segment *s, uint64_t from, uint64_t stop, size_t *budget, int *frames,
			 JournalRecord ***tail, bool *first)
{
	Reader		r = {0};
	uint64_t	off = from - s->base;

	r.fd = s->fd;
	r.end = stop - s->base;
	while (off < r.end && (*first || (*budget > 0 && *frames > 0)))
	{
		RecHdr		h;
		const char *d;
		JournalRecord    *ev;

		if (!rd_record(&r, off, &h, &d))
		{
			/* damage found at open was reported there; skip it again */
			off = rd_resync(&r, off);
			continue;
		}
		ev = calloc(1, sizeof(JournalRecord));
		if (ev)
			ev->data = malloc((size_t) h.len + 1);
		if (!ev || !ev->data)
		{
			free(ev);
			break;				/* out of memory: try again on the next call */
		}
		memcpy(ev->data, d, h.len);
		ev->data[h.len] = '\0';
		ev->len = h.len;
		ev->binary = (h.flags & JOURNAL_BINARY) != 0;
		ev->oversize_len = (h.flags & JOURNAL_OVERSIZE) ? h.orig_len : 0;
		ev->source = h.source;
		ev->at_us = h.at_us;
		ev->jpos = s->base + off;
		off += HDR_SIZE + h.len;
		ev->jend = s->base + off;
		**tail = ev;
		*tail = &ev->next;
		*budget = *budget > h.len ? *budget - h.len : 0;
		(*frames)--;
		*first = false;
	}
	free(r.buf);
	return s->base + off;
}

JournalRecord *
journal_read(uint64_t from, size_t max_bytes, int max_frames, uint64_t *next)
{
	JournalRecord    *head = NULL,
			  **tail = &head;
	uint64_t	pos = from;
	size_t		budget = max_bytes;
	bool		first = true;

	pthread_mutex_lock(&mu);
	/* what the cache holds below pos was taken from the files already */
	while (cache_head && cache_head->jend <= pos)
	{
		JournalRecord    *ev = cache_head;

		cache_head = ev->next;
		if (!cache_head)
			cache_tail = NULL;
		cache_bytes -= event_cost(ev->len);
		journal_record_free(ev);
	}
	while (pos < write_end && (first || (budget > 0 && max_frames > 0)))
	{
		Segment    *s;
		uint64_t	stop;

		if (cache_head && cache_head->jpos <= pos)
		{
			JournalRecord    *ev = cache_head;

			cache_head = ev->next;
			if (!cache_head)
				cache_tail = NULL;
			cache_bytes -= event_cost(ev->len);
			ev->next = NULL;
			*tail = ev;
			tail = &ev->next;
			pos = ev->jend;
			budget = budget > ev->len ? budget - ev->len : 0;
			max_frames--;
			first = false;
			continue;
		}
		if (!on_disk)
		{
			/* memory only: a record not cached is lost; jump to what is */
			pos = cache_head ? cache_head->jpos : write_end;
			continue;
		}
		for (s = segs; s && s->base + s->size <= pos; s = s->next)
			;
		if (!s)
		{
			pos = write_end;
			break;
		}
		if (pos < s->base)
		{
			pos = s->base;		/* a gap: a new segment after a restart */
			continue;
		}
		stop = s->base + s->size;
		if (cache_head && cache_head->jpos < stop && cache_head->jpos > pos)
			stop = cache_head->jpos;
		s->pins++;
		pthread_mutex_unlock(&mu);
		pos = read_segment(s, pos, stop, &budget, &max_frames, &tail, &first);
		pthread_mutex_lock(&mu);
		if (--s->pins == 0 && s->dead)
		{
			close(s->fd);
			free(s);
		}
		if (pos < stop)
			break;				/* out of memory or budget */
	}
	read_pos = pos;
	publish_locked();
	pthread_mutex_unlock(&mu);
	*next = pos;
	return head;
}

void
journal_stored(uint64_t upto)
{
	pthread_mutex_lock(&wmu);
	pthread_mutex_lock(&mu);
	if (upto > stored_floor)
		stored_floor = upto;
	recycle_locked();
	{
		Segment    *t = segs;
		uint64_t	seg_target = limit_bytes / 8 > SEG_MAX ? SEG_MAX : limit_bytes / 8;

		/*
		 * All stored: a tail past a sixteenth of a segment goes too (the next
		 * message starts a new one), so an idle journal holds little.
		 */
		if (t && !t->next && on_disk && stored_floor >= write_end &&
			t->size >= (seg_target < SEG_MIN ? SEG_MIN : seg_target) / 16)
		{
			segs = NULL;
			unlink_segment(t->base);
			disk_bytes -= t->size;
			dir_dirty = true;
			next_base = write_end;
			if (t->pins == 0)
			{
				close(t->fd);
				free(t);
			}
			else
				t->dead = true;
		}
	}
	/* room again: the overflow is over, its WARNING can go out */
	if (ov_open && disk_bytes + SEG_MIN <= limit_bytes)
		end_overflow();
	publish_locked();
	pthread_mutex_unlock(&mu);
	pthread_mutex_unlock(&wmu);
}

uint64_t
journal_start(void)
{
	uint64_t	v;

	pthread_mutex_lock(&mu);
	v = segs ? segs->base : write_end;
	pthread_mutex_unlock(&mu);
	return v;
}

uint64_t
journal_end(void)
{
	uint64_t	v;

	pthread_mutex_lock(&mu);
	v = write_end;
	pthread_mutex_unlock(&mu);
	return v;
}

uint64_t
journal_backlog(uint64_t from)
{
	uint64_t	n;

	pthread_mutex_lock(&mu);
	n = backlog_locked(from);
	pthread_mutex_unlock(&mu);
	return n;
}

bool
journal_has_room(size_t len)
{
	bool		room;

	pthread_mutex_lock(&mu);
	room = opened && len <= MAX_RECORD &&
		(on_disk ? disk_bytes : write_end - stored_floor) + HDR_SIZE + (uint64_t) len <= limit_bytes;
	pthread_mutex_unlock(&mu);
	return room;
}

void
journal_publish_to(uint64_t *backlog, uint64_t *lost)
{
	pthread_mutex_lock(&mu);
	backlog_out = backlog;
	lost_out = lost;
	publish_locked();
	pthread_mutex_unlock(&mu);
}

uint64_t
journal_frames_lost(void)
{
	uint64_t	n;

	pthread_mutex_lock(&mu);
	n = lost_total;
	pthread_mutex_unlock(&mu);
	return n;
}

bool
journal_take_overflow(uint64_t *count, int64_t *first_us, int64_t *last_us,
					  uint64_t *ongoing_count, int64_t *ongoing_first_us)
{
	bool		done;

	pthread_mutex_lock(&mu);
	done = ov_done_pending;
	if (done)
	{
		*count = ov_done.count;
		*first_us = ov_done.first_us;
		*last_us = ov_done.last_us;
		ov_done_pending = false;
	}
	*ongoing_count = ov_open ? ov_cur.count : 0;
	*ongoing_first_us = ov_open ? ov_cur.first_us : 0;
	pthread_mutex_unlock(&mu);
	return done;
}

bool
journal_overflowing(void)
{
	bool		open;

	pthread_mutex_lock(&mu);
	open = ov_open;
	pthread_mutex_unlock(&mu);
	return open;
}

bool
journal_take_report(char *buf, size_t len, bool *is_warning)
{
	bool		got = false;

	pthread_mutex_lock(&mu);
	if (report_n > 0)
	{
		snprintf(buf, len, "%s", reports[0].text);
		*is_warning = reports[0].warning;
		memmove(reports, reports + 1, sizeof(Report) * (report_n - 1));
		report_n--;
		got = true;
	}
	pthread_mutex_unlock(&mu);
	return got;
}

const char *
journal_id(void)
{
	return opened && on_disk ? meta.id : NULL;
}

int
journal_wake_fd(void)
{
	return wake_fd;
}

void
journal_ack_wakeup(void)
{
	uint64_t	n;

	while (read(wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
}

void
journal_set_limits(uint64_t limit, size_t mem)
{
	pthread_mutex_lock(&mu);
	limit_bytes = limit;
	mem_limit = mem;
	pthread_mutex_unlock(&mu);
}

void
journal_close(void)
{
	pthread_mutex_lock(&wmu);
	pthread_mutex_lock(&mu);
	if (!opened)
	{
		pthread_mutex_unlock(&mu);
		pthread_mutex_unlock(&wmu);
		return;
	}
	opened = false;				/* later submits are refused */
	flusher_stop = true;
	end_overflow();
	pthread_cond_broadcast(&flush_cv);
	pthread_cond_broadcast(&durable_cv);
	pthread_mutex_unlock(&mu);
	pthread_mutex_unlock(&wmu);
	if (flusher_running)
		pthread_join(flusher, NULL);
	flusher_running = false;

	pthread_mutex_lock(&mu);
	while (segs)
	{
		Segment    *s = segs;

		segs = s->next;
		close(s->fd);
		free(s);
	}
	while (cache_head)
	{
		JournalRecord    *ev = cache_head;

		cache_head = ev->next;
		journal_record_free(ev);
	}
	cache_tail = NULL;
	cache_bytes = 0;
	disk_bytes = 0;
	write_end = durable_end = stored_floor = read_pos = 0;
	backlog_out = lost_out = NULL;
	if (meta_fd >= 0)
		close(meta_fd);			/* releases the lock */
	if (dir_fd >= 0)
		close(dir_fd);
	meta_fd = dir_fd = -1;
	if (wake_fd >= 0)
		close(wake_fd);
	wake_fd = -1;
	/* a later journal_open() (a fuzzer's next input) starts afresh */
	lost_total = 0;
	ov_open = ov_done_pending = false;
	report_n = 0;
	on_disk = false;
	pthread_mutex_unlock(&mu);
}
