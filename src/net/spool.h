/*
 * spool.h — frames past voipbin.buffer_limit, kept in a file in arrival order.
 *
 * Plain C file I/O, no PostgreSQL: the network thread appends while the
 * database cannot take events, the worker reads them back once it can.  The
 * caller serialises access (ws_client.c holds its mutex).
 */
#ifndef VOIPBIN_SPOOL_H
#define VOIPBIN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Spool
{
	int			fd;				/* the records */
	int			pos_fd;			/* 8 bytes: offset up to which records are stored */
	uint64_t	write_off;		/* end of the last whole record */
	uint64_t	read_off;		/* next record to hand out */
	uint64_t	done_off;		/* records before this are in the database */
} Spool;

/* Opens (creating) path and path.pos; recovers what a crash left. */
extern bool spool_open(Spool *s, const char *path, char *err, size_t errlen);
extern void spool_close(Spool *s);

/* Appends one frame; false (errno set) when the disk refuses it. */
extern bool spool_append(Spool *s, bool binary, int64_t at_us, const char *data, size_t len);

/*
 * Reads the next record into malloc'd *data; *end is the offset after it,
 * to pass to spool_done() once the frame is stored.  False when none is left.
 */
extern bool spool_read(Spool *s, bool *binary, int64_t *at_us, char **data, size_t *len,
					   uint64_t *end);

/* Records up to end are stored; the file empties once all of them are. */
extern void spool_done(Spool *s, uint64_t end);

static inline bool
spool_in_use(const Spool *s)
{
	return s->fd >= 0 && s->write_off > 0;
}

static inline uint64_t
spool_unread(const Spool *s)
{
	return s->write_off - s->read_off;
}

#endif
