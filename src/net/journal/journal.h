/*
 * journal.h — the write-ahead journal every received message passes through.
 *
 * A WebSocket frame, a webhook body or an object fetched by gap repair is
 * appended here before anything else happens to it; the worker's main thread
 * stores what the journal holds and records, in the same transaction, how far
 * it got (store_frames()), so a crash of any kind neither loses nor repeats a
 * message.  Memory is only a cache in front of the file.
 *
 * Plain C, thread-safe, no PostgreSQL: callers are the network threads and
 * the main thread alike.
 *
 * Recovery is journal_open() on a directory: it reads whatever files it finds
 * there, keeps every record whose CRC holds and reports the rest, so it can be
 * fed arbitrary (fuzzed) files; journal_read() then returns what survived.
 *
 * Files in the directory:
 *   journal.meta       the identity: a random journal_id, the inode numbers of
 *                      the directory and of this file (a copy made by
 *                      pg_basebackup has other inodes, so its frames are known
 *                      to belong to another server and are discarded), and the
 *                      highest position ever handed out (reserved ahead, so a
 *                      journal that lost its tail to a power cut never reuses
 *                      a position the database may have recorded as stored).
 *   <16 hex>.seg       records from that position on; a segment wholly below
 *                      the stored position is unlinked.
 * A record: a 32-byte header (magic, CRC-32C of the rest, length, flags,
 * source, original length, arrival time), then the bytes.
 */
#ifndef VOIPBIN_JOURNAL_H
#define VOIPBIN_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/journal/record.h"

/* Where a message came from: voipbin_events.source and voipbin_dead_letters.source. */
typedef enum JournalSource
{
	JOURNAL_SRC_WEBSOCKET = 0,
	JOURNAL_SRC_WEBHOOK = 1,
	JOURNAL_SRC_REST = 2
} JournalSource;

/* journal_submit() flags */
#define JOURNAL_BINARY		0x01	/* a binary WebSocket message */
#define JOURNAL_OVERSIZE	0x02	/* data is the first max_frame_size bytes of orig_len */

static inline const char *
journal_source_name(int source)
{
	return source == JOURNAL_SRC_WEBHOOK ? "webhook" :
		source == JOURNAL_SRC_REST ? "rest" : "websocket";
}

/*
 * Appends one whole message and queues it for the worker's main thread,
 * waking it.  Returns the journal position just past its record, for
 * journal_wait_durable(); 0 when it could not be journaled (voipbin.spool_limit
 * reached, a full disk): the message is then counted as lost.
 */
extern uint64_t journal_submit(JournalSource source, unsigned flags, int64_t at_us,
							   const char *data, size_t len, uint64_t orig_len);

/* The same, taking over data (malloc'd, len + 1 bytes): spares a copy. */
extern uint64_t journal_submit_owned(JournalSource source, unsigned flags, int64_t at_us,
									 char *data, size_t len, uint64_t orig_len);

/* Waits until the journal is on disk (fsync'd) up to pos, at most timeout_ms. */
extern bool journal_wait_durable(uint64_t pos, int timeout_ms);

/* ---- the worker's side ---- */

/*
 * Opens (creating) the journal in dir and recovers it; starts the flusher.
 * limit_bytes bounds the directory, mem_bytes the in-memory cache; sync
 * false skips fsync (PostgreSQL's fsync = off).  False with err set when the
 * directory is unusable: the journal then runs in memory only (no crash
 * safety), within the same limit.  What recovery found (a copied journal,
 * damaged records) is queued for journal_take_report().
 */
extern bool journal_open(const char *dir, uint64_t limit_bytes, size_t mem_bytes, bool sync,
						 char *err, size_t errlen);

/*
 * Where the journal keeps two counters current with atomic stores, so they
 * can be read while the worker's main thread is busy (a long lock): the
 * bytes not taken by the worker yet, and the messages lost.
 */
extern void journal_publish_to(uint64_t *backlog, uint64_t *lost);

/* Flushes, stops the flusher, closes; later submits return 0.  Safe to call twice. */
extern void journal_close(void);

/* "<random hex>" naming this journal in voipbin_journal, or NULL in memory-only mode. */
extern const char *journal_id(void);

/* The eventfd that becomes readable when a message is queued; and its reset. */
extern int	journal_wake_fd(void);
extern void journal_ack_wakeup(void);

/* Settings that may change on a reload. */
extern void journal_set_limits(uint64_t limit_bytes, size_t mem_bytes);

/*
 * Records from position from on, in order, up to about max_bytes (at least
 * one) and max_frames: from the memory cache where it holds them, else from
 * the files.  *next is the position after what was returned (past any
 * damaged bytes skipped).  Each record has jend set; free it with journal_record_free().
 */
extern JournalRecord *journal_read(uint64_t from, size_t max_bytes, int max_frames,
									uint64_t *next);

/* Everything before upto is stored: recycles the segments wholly below it. */
extern void journal_stored(uint64_t upto);

/* The oldest position the journal still holds. */
extern uint64_t journal_start(void);

/* The position past the last record written: where the next one goes, or before it. */
extern uint64_t journal_end(void);

/* Bytes the journal holds from position from on (not taken by the worker yet). */
extern uint64_t journal_backlog(uint64_t from);

/*
 * Whether a message of len bytes fits within voipbin.spool_limit now, for a
 * caller that would rather keep it elsewhere than have it counted as lost.
 */
extern bool journal_has_room(size_t len);

/* Messages lost so far (limit or disk). */
extern uint64_t journal_frames_lost(void);

/*
 * An overflow that has ended (a message fitted again, or the journal was
 * closed): how many were lost and between which arrival times.  False when
 * none ended since the last call.  *ongoing_* describe one still going on
 * (count 0 when none).
 */
extern bool journal_take_overflow(uint64_t *count, int64_t *first_us, int64_t *last_us,
								  uint64_t *ongoing_count, int64_t *ongoing_first_us);

/*
 * True while messages are being lost (an overflow not ended yet): what
 * arrives now is in no journal and in no recorded gap.
 */
extern bool journal_overflowing(void);

/* One line of what recovery or the flusher had to say (copied into buf); false when none. */
extern bool journal_take_report(char *buf, size_t len, bool *is_warning);

/* Pure: CRC-32C, exposed for tests and fuzzing. */
extern uint32_t journal_crc32c(uint32_t crc, const void *data, size_t len);

/* Frees one record journal_read() returned. */
extern void journal_record_free(JournalRecord *record);

#endif
