/*
 * spool.c — the overflow file behind the network thread's queue.
 *
 * A record is a fixed header then the frame's bytes.  The .pos file holds
 * the offset up to which records are in the database, so a worker that
 * restarts after a crash replays the rest (a replayed event is a duplicate
 * the unique index drops).  Neither file is fsync'd: this protects against
 * the worker dying, not against the machine losing power.
 */
#ifdef POSTGRES_H
#error "spool.c runs on the network thread and must not use the PostgreSQL API"
#endif

#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_MAGIC 0x56425350u	/* "VBSP" */

typedef struct RecordHeader
{
	uint32_t	magic;
	uint32_t	len;
	int64_t		at_us;
	uint32_t	flags;			/* bit 0: binary frame */
	uint32_t	pad;
} RecordHeader;

static bool
read_exact(int fd, void *buf, size_t len, uint64_t off)
{
	while (len > 0)
	{
		ssize_t		n = pread(fd, buf, len, (off_t) off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf = (char *) buf + n;
		len -= (size_t) n;
		off += (uint64_t) n;
	}
	return true;
}

static bool
write_exact(int fd, const void *buf, size_t len, uint64_t off)
{
	while (len > 0)
	{
		ssize_t		n = pwrite(fd, buf, len, (off_t) off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			if (n == 0)
				errno = ENOSPC;
			return false;
		}
		buf = (const char *) buf + n;
		len -= (size_t) n;
		off += (uint64_t) n;
	}
	return true;
}

static void
save_done(Spool *s)
{
	/* best effort: losing it only means replaying stored events, deduped */
	(void) write_exact(s->pos_fd, &s->done_off, sizeof(s->done_off), 0);
}

bool
spool_open(Spool *s, const char *path, char *err, size_t errlen)
{
	char		pos_path[4096];
	struct stat st;
	uint64_t	off;

	s->fd = s->pos_fd = -1;
	s->write_off = s->read_off = s->done_off = 0;
	snprintf(pos_path, sizeof(pos_path), "%s.pos", path);
	s->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->fd < 0 || (s->pos_fd = open(pos_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
		fstat(s->fd, &st) != 0)
	{
		snprintf(err, errlen, "could not open the spool file \"%s\": %s", path, strerror(errno));
		spool_close(s);
		return false;
	}
	if (!read_exact(s->pos_fd, &s->done_off, sizeof(s->done_off), 0))
		s->done_off = 0;

	/* walk the whole records; a torn one at the end is cut off */
	off = 0;
	for (;;)
	{
		RecordHeader h;

		if ((uint64_t) st.st_size - off < sizeof(h) ||
			!read_exact(s->fd, &h, sizeof(h), off) || h.magic != SPOOL_MAGIC ||
			(uint64_t) st.st_size - off - sizeof(h) < h.len)
			break;
		off += sizeof(h) + h.len;
	}
	s->write_off = off;
	if (s->done_off > s->write_off)
		s->done_off = 0;
	s->read_off = s->done_off;
	if (ftruncate(s->fd, (off_t) s->write_off) != 0)
	{
		/* keep going: records past write_off are simply overwritten */
	}
	if (s->read_off == s->write_off)
		spool_done(s, s->write_off);
	return true;
}

void
spool_close(Spool *s)
{
	if (s->fd >= 0)
		close(s->fd);
	if (s->pos_fd >= 0)
		close(s->pos_fd);
	s->fd = s->pos_fd = -1;
}

bool
spool_append(Spool *s, bool binary, int64_t at_us, const char *data, size_t len)
{
	RecordHeader h = {SPOOL_MAGIC, (uint32_t) len, at_us, binary ? 1u : 0u, 0};

	if (s->fd < 0)
	{
		errno = EBADF;
		return false;
	}
	if (len > UINT32_MAX)
	{
		errno = EFBIG;
		return false;
	}
	if (!write_exact(s->fd, &h, sizeof(h), s->write_off) ||
		!write_exact(s->fd, data, len, s->write_off + sizeof(h)))
		return false;
	s->write_off += sizeof(h) + len;
	return true;
}

bool
spool_read(Spool *s, bool *binary, int64_t *at_us, char **data, size_t *len, uint64_t *end)
{
	RecordHeader h;
	char	   *buf;

	if (s->fd < 0 || s->read_off >= s->write_off ||
		!read_exact(s->fd, &h, sizeof(h), s->read_off) || h.magic != SPOOL_MAGIC)
		return false;
	buf = malloc((size_t) h.len + 1);
	if (buf == NULL || !read_exact(s->fd, buf, h.len, s->read_off + sizeof(h)))
	{
		free(buf);
		return false;
	}
	buf[h.len] = '\0';
	*binary = (h.flags & 1) != 0;
	*at_us = h.at_us;
	*data = buf;
	*len = h.len;
	s->read_off += sizeof(h) + h.len;
	*end = s->read_off;
	return true;
}

void
spool_done(Spool *s, uint64_t end)
{
	if (s->fd < 0 || end < s->done_off)
		return;
	s->done_off = end;
	if (s->done_off >= s->write_off && s->read_off >= s->write_off)
	{
		/* all stored: start over, and frames go back to memory */
		if (ftruncate(s->fd, 0) != 0)
		{
			/* harmless: offsets restart at 0 and overwrite */
		}
		s->write_off = s->read_off = s->done_off = 0;
	}
	save_done(s);
}
