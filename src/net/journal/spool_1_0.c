/*
 * spool_1_0.c — voipbin 1.0's spool file, read once for the upgrade.
 * See spool_1_0.h; the layout is release 1.0's src/spool.c.
 */
#ifdef POSTGRES_H
#error "spool_1_0.c is plain C and must not use the PostgreSQL API"
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/journal/spool_1_0.h"
#include "net/journal/pio.h"
#include "net/no_postgres.h"

#define SPOOL_1_0_MAGIC 0x56425350u	/* "VBSP" */

typedef struct RecordHeader
{
	uint32_t	magic;
	uint32_t	len;
	int64_t		at_us;
	uint32_t	flags;			/* bit 0: binary frame */
	uint32_t	pad;
} RecordHeader;

static void
pos_path(const char *path, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s.pos", path);
}

/* The offset 1.0 recorded as stored; 0 when there is none or it is no offset of this file. */
static uint64_t
stored_offset(const char *path, uint64_t size)
{
	char		p[4096];
	uint64_t	off = 0;
	int			fd;

	pos_path(path, p, sizeof(p));
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (!pread_all(fd, &off, sizeof(off), 0) || off > size)
		off = 0;
	close(fd);
	return off;
}

bool
spool_1_0_read(const char *path, size_t max_bytes, Spool10Each each, void *arg,
			   uint64_t *taken_end, uint64_t *whole_end, char *err, size_t errlen)
{
	struct stat st;
	uint64_t	off;
	bool		taking = true;
	int			fd = open(path, O_RDONLY | O_CLOEXEC);

	*taken_end = *whole_end = 0;
	if (fd < 0 || fstat(fd, &st) != 0)
	{
		snprintf(err, errlen, "could not open \"%s\": %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	off = stored_offset(path, (uint64_t) st.st_size);
	*taken_end = off;
	for (;;)
	{
		RecordHeader h;
		uint64_t	left = (uint64_t) st.st_size - off;
		size_t		take;
		char	   *data;

		/* as 1.0's spool_open(): the whole records, a torn one at the end cut off */
		if (left < sizeof(h))
			break;
		if (!pread_all(fd, &h, sizeof(h), off))
		{
			snprintf(err, errlen, "could not read \"%s\": %s", path, strerror(errno));
			close(fd);
			return false;
		}
		if (h.magic != SPOOL_1_0_MAGIC || left - sizeof(h) < h.len)
			break;
		if (taking)
		{
			take = h.len < max_bytes ? h.len : max_bytes;
			data = malloc(take + 1);
			if (data == NULL || !pread_all(fd, data, take, off + sizeof(h)))
			{
				snprintf(err, errlen, "could not read \"%s\": %s", path,
						 data ? strerror(errno) : "out of memory");
				free(data);
				close(fd);
				return false;
			}
			data[take] = '\0';
			taking = each(arg, (h.flags & 1) != 0, h.at_us, data, take, h.len);
			if (taking)
				*taken_end = off + sizeof(h) + h.len;
		}
		off += sizeof(h) + h.len;
	}
	*whole_end = off;
	close(fd);
	return true;
}

bool
spool_1_0_mark(const char *path, uint64_t off, char *err, size_t errlen)
{
	char		p[4096];
	int			fd;
	bool		ok;

	pos_path(path, p, sizeof(p));
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ok = fd >= 0 && pwrite_all(fd, &off, sizeof(off), 0) && fsync(fd) == 0;
	if (!ok)
		snprintf(err, errlen, "could not write \"%s\": %s", p, strerror(errno));
	if (fd >= 0)
		close(fd);
	return ok;
}

bool
spool_1_0_remove(const char *path, char *err, size_t errlen)
{
	char		p[4096];

	pos_path(path, p, sizeof(p));
	/* the records first: a .pos without them is ignored by anyone */
	if (unlink(path) != 0 && errno != ENOENT)
	{
		snprintf(err, errlen, "could not remove \"%s\": %s", path, strerror(errno));
		return false;
	}
	if (unlink(p) != 0 && errno != ENOENT)
	{
		snprintf(err, errlen, "could not remove \"%s\": %s", p, strerror(errno));
		return false;
	}
	return true;
}
