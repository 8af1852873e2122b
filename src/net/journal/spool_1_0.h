/*
 * spool_1_0.h — reading the spool file voipbin 1.0 may have left behind.
 *
 * 1.0 kept the frames it could not store yet (past voipbin.buffer_limit, and
 * whatever was unstored when its worker stopped) in $PGDATA/voipbin.spool,
 * and in voipbin.spool.pos the offset up to which they were stored; its next
 * worker replayed the rest.  1.1 journals instead and never reads that file,
 * so its worker imports a leftover one into the journal once, at start
 * (spool_import.c): frames a 1.0 server spooled survive the upgrade.
 *
 * The format is 1.0's (src/spool.c of release 1.0): records of a 24-byte
 * header (magic "VBSP" as a little-endian 0x56425350, length, arrival time in
 * Unix microseconds, flags with bit 0 = binary, padding) then the bytes; a
 * torn record at the end is what a crash mid-append left, and is not a frame.
 * Plain C, no PostgreSQL.
 */
#ifndef VOIPBIN_SPOOL_1_0_H
#define VOIPBIN_SPOOL_1_0_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_1_0_FILE "voipbin.spool"

/*
 * One record: its first max_bytes bytes (data is malloc'd, NUL-terminated,
 * the callee's to free) and its whole length.  False: stop before this
 * record (it stays in the file).
 */
typedef bool (*Spool10Each) (void *arg, bool binary, int64_t at_us, char *data,
							 size_t len, uint64_t orig_len);

/*
 * Hands each(arg, …) every whole record from the stored offset on, in order,
 * until it returns false.  *taken_end: the offset after the last record it
 * took (for spool_1_0_mark()); *whole_end: after the last whole record of the
 * file.  False with err set when the file cannot be read.
 */
extern bool spool_1_0_read(const char *path, size_t max_bytes, Spool10Each each, void *arg,
						   uint64_t *taken_end, uint64_t *whole_end,
						   char *err, size_t errlen);

/* Records in path.pos (fsync'd), as 1.0 did, that records up to off are taken. */
extern bool spool_1_0_mark(const char *path, uint64_t off, char *err, size_t errlen);

/* Removes path and path.pos. */
extern bool spool_1_0_remove(const char *path, char *err, size_t errlen);

#endif
