/*
 * intake.c — frames from the journal into voipbin_events.  The network
 * thread journals every frame it receives; this takes them from the
 * journal, at most a batch at a time (the rest waits in the journal: its
 * memory cache, bounded by voipbin.buffer_limit, then its files), stores a
 * batch in one transaction, and tells the journal how far it is stored.
 *
 * Nothing is read until the position is known: voipbin_journal says how far
 * an earlier worker stored this journal.  Frames wait in the journal while
 * the extension is absent or still at 1.0.
 */
#include "voipbin.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker/intake.h"
#include "worker/activity.h"
#include "base/db.h"
#include "base/guard.h"
#include "base/settings.h"
#include "base/status.h"
#include "base/time.h"
#include "ingest/position.h"
#include "ingest/store.h"
#include "net/journal/journal.h"
#include "net/journal/record.h"
#include "net/ws/ws_client.h"
#include "repair/gaps.h"

/* One transaction takes at most this much: big enough to amortise a commit. */
#define BATCH_MAX_FRAMES 2000
#define BATCH_MAX_BYTES (8 * 1024 * 1024)
#define BATCH_MIN_BYTES (32 * 1024)
/*
 * What storing a batch allocates, in multiples of its bytes: the jsonb of
 * each frame, the statement's array of them, the rows RETURNING copies, two
 * NOTIFY payloads per event and PostgreSQL's table of them (measured: bench/).
 */
#define BATCH_MEMORY_FACTOR 6
#define STORE_RETRY_MS 1000

typedef struct Intake
{
	/* frames taken from the journal and not stored yet, oldest first */
	JournalRecord *pending_head,
			   *pending_tail;
	size_t		pending_bytes;
	int			pending_frames;
	TimestampTz store_retry_at;

	/*
	 * The journal: cursor is where the next frame is read from (past the
	 * pending ones), stored how far this worker knows it stored.  Until the
	 * position is read from voipbin_journal nothing is read.
	 */
	bool		position_known;
	bool		told_old_version;
	uint64		cursor;
	uint64		stored;
	char	   *journal_problem;	/* what recovery reported: kept in last_error */
	bool		restart_checked;	/* has the previous worker's end been looked for */
} Intake;

static Intake in;

/*
 * voipbin.buffer_limit bounds all the worker holds of received frames: the
 * journal's memory cache, the batch taken from it, and what storing that
 * batch allocates.  A batch is a 32nd of the limit (2 MB at the 64MB
 * default: more than 2,000 of VoIPBIN's frames; 256 kB at 8MB); the cache
 * gets what the batch leaves, at least a quarter.  Pure.
 */
static size_t
batch_bytes_for(size_t limit)
{
	return Min(Max(limit / 32, BATCH_MIN_BYTES), BATCH_MAX_BYTES);
}

static size_t
cache_bytes_for(size_t limit)
{
	size_t		batch = batch_bytes_for(limit) * (1 + BATCH_MEMORY_FACTOR);

	return limit > batch && limit - batch > limit / 4 ? limit - batch : limit / 4;
}

static size_t
buffer_limit_bytes(void)
{
	return (size_t) voipbin_buffer_limit_kb * 1024;
}

size_t
intake_cache_bytes(void)
{
	return cache_bytes_for(buffer_limit_bytes());
}

void
intake_set_limits(void)
{
	journal_set_limits((uint64) voipbin_spool_limit_kb * 1024, intake_cache_bytes());
	ws_set_max_frame_size((size_t) voipbin_max_frame_size);
}

bool
intake_position_known(void)
{
	return in.position_known;
}

const char *
intake_journal_problem(void)
{
	return in.journal_problem;
}

/*
 * What waits here counts in voipbin_status().buffered_bytes at once: the
 * next store may wait on a lock for long, and the frames it took from the
 * journal left the journal's own count already.
 */
static void
publish_pending(void)
{
	pg_atomic_write_u64(&voipbin_shared->buffered_bytes, in.pending_bytes);
}

static void
free_pending(void)
{
	while (in.pending_head)
	{
		JournalRecord *ev = in.pending_head;

		in.pending_head = ev->next;
		journal_record_free(ev);
	}
	in.pending_tail = NULL;
	in.pending_bytes = 0;
	in.pending_frames = 0;
	publish_pending();
}

static void
take_frame(JournalRecord *ev)
{
	pg_atomic_fetch_add_u64(&voipbin_shared->frames_received, 1);
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->last_frame_at = time_from_unix_us(ev->at_us);
	SpinLockRelease(&voipbin_shared->mutex);
	ev->next = NULL;
	if (in.pending_tail)
		in.pending_tail->next = ev;
	else
		in.pending_head = ev;
	in.pending_tail = ev;
	in.pending_bytes += ev->len;
	in.pending_frames++;
}

/* Takes frames from the journal while fewer than a batch wait here. */
static void
take_frames(void)
{
	if (!in.position_known)
		return;
	/* one batch waits here, no more: the rest is the cache's, within its share of the limit */
	while (in.pending_bytes < batch_bytes_for(buffer_limit_bytes()) && in.pending_frames < BATCH_MAX_FRAMES)
	{
		uint64		next;
		JournalRecord *ev = journal_read(in.cursor, batch_bytes_for(buffer_limit_bytes()) - in.pending_bytes,
										 BATCH_MAX_FRAMES - in.pending_frames, &next);

		in.cursor = next;
		if (ev == NULL)
			break;
		while (ev)
		{
			JournalRecord *n = ev->next;

			take_frame(ev);
			ev = n;
		}
	}
	publish_pending();
}

/*
 * Reads how far voipbin_journal says this journal is stored, and starts
 * reading there.  Frames wait in the journal while the extension is absent
 * or still at 1.0.
 */
static void
load_position(void *arg)
{
	uint64		upto = 0;
	TimestampTz alive_at = 0;
	PositionState st;

	if (journal_id() == NULL)
	{
		/* memory only: nothing to replay, nothing to record */
		in.position_known = true;
		in.cursor = Max(in.cursor, journal_start());
		return;
	}
	db_begin_work();
	st = position_load(journal_id(), &upto, &alive_at);
	db_end_work();
	if (st == POSITION_OLD_VERSION)
	{
		if (!in.told_old_version)
		{
			ereport(WARNING,
					(errmsg("voipbin: the extension in database \"%s\" is at version 1.0: received frames wait in the journal",
							voipbin_database),
					 errhint("Run ALTER EXTENSION voipbin UPDATE.")));
			voipbin_set_error("the extension is at version 1.0: run ALTER EXTENSION voipbin UPDATE; received frames wait in the journal");
			in.told_old_version = true;
		}
		return;
	}
	if (st != POSITION_READY)
		return;
	if (in.told_old_version)
	{
		ereport(LOG, (errmsg("voipbin: the extension is updated, storing the frames the journal holds")));
		voipbin_set_error("");
		in.told_old_version = false;
	}
	/* an earlier worker, connected until alive_at, is gone: so was the stream */
	if (!in.restart_checked)
	{
		in.restart_checked = true;
		gaps_worker_restarted(alive_at);
	}
	/* what was taken before is read again from where the table says */
	free_pending();
	in.cursor = Max(Max(upto, in.stored), journal_start());
	in.position_known = true;
	elog(DEBUG1, "voipbin: journal %s stored up to " UINT64_FORMAT ", reading from " UINT64_FORMAT,
		 journal_id(), upto, in.cursor);
}

bool
intake_store_batch(void)
{
	JournalRecord *batch[BATCH_MAX_FRAMES];
	int			n = 0;
	size_t		bytes = 0;
	uint64		upto;
	StoreResult r;

	take_frames();
	if (in.store_retry_at && GetCurrentTimestamp() < in.store_retry_at)
		return false;
	in.store_retry_at = 0;
	if (!in.position_known)
	{
		activity_running("reading the journal position");
		voipbin_guarded(load_position, NULL, "reading the journal position");
		if (!in.position_known)
		{
			in.store_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_RETRY_MS);
			return false;
		}
		take_frames();
	}
	if (in.pending_head == NULL)
		return false;

	for (JournalRecord *ev = in.pending_head; ev && n < BATCH_MAX_FRAMES; ev = ev->next)
	{
		if (n > 0 && bytes + ev->len > batch_bytes_for(buffer_limit_bytes()))
			break;
		batch[n++] = ev;
		bytes += ev->len;
	}
	upto = batch[n - 1]->jend;
	activity_running(n == 1 ? "storing %d event" : "storing %d events", n);
	r = store_frames(batch, n, journal_id(), upto, &in.store_retry_at);
	if (r != STORE_DONE)
	{
		/* keep them, in order, and try again shortly */
		if (r == STORE_NOT_READY)
		{
			in.store_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_RETRY_MS);
			/* dropped, or back at 1.0: the position is read again once it is there */
			in.position_known = false;
		}
		return false;
	}
	in.stored = Max(in.stored, upto);
	journal_stored(upto);
	in.pending_head = batch[n - 1]->next;
	if (!in.pending_head)
		in.pending_tail = NULL;
	in.pending_bytes -= bytes;
	in.pending_frames -= n;
	publish_pending();
	for (int i = 0; i < n; i++)
		journal_record_free(batch[i]);
	/*
	 * What the journal holds joins the next batch now: intake_due() judges
	 * by what waits here, and the journal's wake-up was spent on frames
	 * taken long ago (a backlog in its cache or files wakes nobody).
	 */
	take_frames();
	return true;
}

TimestampTz
intake_due(void)
{
	if (in.store_retry_at)
		return in.store_retry_at;
	return in.pending_head ? GetCurrentTimestamp() : DT_NOEND;
}

/* Logs what the journal had to say, and publishes its counters. */
static void
journal_news(void)
{
	char		line[512];
	bool		warning;
	uint64		count,
				ongoing;
	int64		first_us,
				last_us,
				ongoing_first;

	while (journal_take_report(line, sizeof(line), &warning))
	{
		ereport(warning ? WARNING : LOG, (errmsg("voipbin: %s", line)));
		if (warning)
		{
			voipbin_set_error(line);
			if (in.journal_problem)
				pfree(in.journal_problem);
			in.journal_problem = MemoryContextStrdup(TopMemoryContext, line);
		}
	}
	if (journal_take_overflow(&count, &first_us, &last_us, &ongoing, &ongoing_first))
	{
		/* timestamptz_to_str() answers in one static buffer: keep the first */
		char	   *first = pstrdup(timestamptz_to_str(time_from_unix_us(first_us)));

		gaps_overflow(time_from_unix_us(first_us), time_from_unix_us(last_us), count);
		ereport(WARNING,
				(errmsg_plural("voipbin: %llu received frame lost between %s and %s: the journal could not take it",
							   "voipbin: %llu received frames lost between %s and %s: the journal could not take them",
							   count,
							   (unsigned long long) count,
							   first,
							   timestamptz_to_str(time_from_unix_us(last_us))),
				 errdetail("The journal holds at most voipbin.spool_limit (%d kB) of frames not stored yet, on a disk with room for them.",
						   voipbin_spool_limit_kb),
				 errhint("Find what keeps the worker from storing (a lock, a full disk, the extension missing), or raise voipbin.spool_limit.")));
	}
	if (ongoing > 0)
		voipbin_set_error(psprintf(ongoing == 1 ? "the journal is full: %llu frame lost since %s" :
								   "the journal is full: %llu frames lost since %s",
								   (unsigned long long) ongoing,
								   timestamptz_to_str(time_from_unix_us(ongoing_first))));
}

void
intake_publish_backlog(void)
{
	/* the journal keeps network_backlog and frames_lost current itself */
	publish_pending();
	journal_news();
}
