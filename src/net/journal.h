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
 */
#ifndef VOIPBIN_JOURNAL_H
#define VOIPBIN_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* Waits until the journal is on disk (fsync'd) up to pos, at most timeout_ms. */
extern bool journal_wait_durable(uint64_t pos, int timeout_ms);

#endif
