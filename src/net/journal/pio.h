/*
 * pio.h — whole reads and writes at a file offset, for the journal and the
 * 1.0 spool reader.  pread()/pwrite() may move fewer bytes than asked, or be
 * interrupted; these go on until all of it moved.  False at an error or, for
 * a read, at the end of the file (errno is then EIO).  Plain C, no PostgreSQL.
 */
#ifndef VOIPBIN_PIO_H
#define VOIPBIN_PIO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

static inline bool
pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	while (len > 0)
	{
		ssize_t		n = pread(fd, buf, len, (off_t) off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			if (n == 0)
				errno = EIO;
			return false;
		}
		buf = (char *) buf + n;
		len -= (size_t) n;
		off += (uint64_t) n;
	}
	return true;
}

static inline bool
pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	while (len > 0)
	{
		ssize_t		n = pwrite(fd, buf, len, (off_t) off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf = (const char *) buf + n;
		len -= (size_t) n;
		off += (uint64_t) n;
	}
	return true;
}

#endif
