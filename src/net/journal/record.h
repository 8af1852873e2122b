/*
 * record.h — one record of the journal as the worker's main thread reads it:
 * a WebSocket frame, a webhook body or an object fetched by gap repair,
 * whichever way it came, with where it lies in the journal.
 */
#ifndef VOIPBIN_NET_JOURNAL_RECORD_H
#define VOIPBIN_NET_JOURNAL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct JournalRecord
{
	struct JournalRecord *next;
	uint8_t		source;			/* a JournalSource (journal.h) */
	bool		binary;			/* a binary WebSocket message */
	int64_t		at_us;			/* when it arrived, µs since the Unix epoch */
	size_t		len;
	char	   *data;			/* the bytes (NUL-terminated past len) */
	uint64_t	oversize_len;	/* past voipbin.max_frame_size, the message's real length (data is its start); else 0 */
	uint64_t	jpos;			/* its journal position */
	uint64_t	jend;			/* the position past it (what store_frames records as stored) */
} JournalRecord;

#endif
