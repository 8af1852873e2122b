/*
 * timers.c — what the worker does now and then, between batches: the
 * partitions of voipbin_events made ahead and dropped past retention, old
 * rows pruned, voipbin_journal.alive_at written while connected (how early
 * a restart's gap may start), the statistics flushed for autovacuum, and the
 * count of dead letters a failing handler made logged once a minute.
 */
#include "voipbin.h"

#include "pgstat.h"
#include "utils/timestamp.h"

#include "worker/timers.h"
#include "worker/activity.h"
#include "base/db.h"
#include "base/guard.h"
#include "base/settings.h"
#include "ingest/boundaries.h"
#include "ingest/position.h"
#include "ingest/store_report.h"
#include "maintenance/partitions.h"
#include "maintenance/prune.h"
#include "net/journal/journal.h"

#define PRUNE_EVERY_MS 60000
#define PRUNE_AGAIN_MS 1000		/* rows or a partition still due */
/* how early a restart's gap may start: VoIPBIN pings every 10 s anyway */
#define ALIVE_EVERY_MS 15000

static struct
{
	TimestampTz next_prune;
	TimestampTz next_alive;		/* when voipbin_journal.alive_at is due */
	TimestampTz stats_due;		/* when pending statistics are flushed by force */
} timers;

/* partitions_maintain() into *(TimestampTz *) arg: when the next partition is due to go */
static void
maintain_partitions(void *arg)
{
	*(TimestampTz *) arg = partitions_maintain();
}

/* prune_step() into *(bool *) arg: whether rows are still due */
static void
prune(void *arg)
{
	*(bool *) arg = prune_step();
}

static void
note_alive(void *arg)
{
	db_begin_work();
	position_alive(journal_id());
	db_end_work();
}

/* Partitions made and dropped, then old rows pruned; when again. */
static void
maintain_events(void)
{
	TimestampTz after;
	int64		every_ms;
	TimestampTz next_drop = 0;
	bool		prune_unfinished = false;

	activity_running("maintaining partitions");
	voipbin_guarded(maintain_partitions, &next_drop, "maintaining the partitions of voipbin_events");
	activity_running("pruning old events");
	voipbin_guarded(prune, &prune_unfinished, "pruning old events");
	after = GetCurrentTimestamp();
	/* partitions are made two ranges ahead: back within one, or rows go to the default one */
	every_ms = Min(PRUNE_EVERY_MS, (int64) partition_step_s(voipbin_partition_interval_s,
														   voipbin_event_retention_s) * 1000);
	timers.next_prune = TimestampTzPlusMilliseconds(after, prune_unfinished ? PRUNE_AGAIN_MS : every_ms);

	/*
	 * The next partition due is dropped when it is, not up to a pass later.
	 * One due already was in use (the drop waited lock_timeout for it): that
	 * waits for the next pass, not the worker for it every second.
	 */
	if (next_drop > after && next_drop < timers.next_prune)
		timers.next_prune = TimestampTzPlusMilliseconds(next_drop, 10);
}

void
timers_run(bool alive_wanted)
{
	TimestampTz now = GetCurrentTimestamp();

	if (now >= timers.next_prune)
		maintain_events();
	if (alive_wanted && now >= timers.next_alive)
	{
		activity_running("recording that the worker is connected");
		voipbin_guarded(note_alive, NULL, "recording that the worker is connected");
		timers.next_alive = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ALIVE_EVERY_MS);
	}
}

TimestampTz
timers_due(bool alive_wanted)
{
	TimestampTz due = alive_wanted ? Min(timers.next_prune, timers.next_alive) : timers.next_prune;
	TimestampTz report = store_report_flush();

	return report != 0 ? Min(due, report) : due;
}

void
timers_reloaded(void)
{
	timers.next_prune = 0;
}

/*
 * The worker's inserts must reach the statistics promptly, or autovacuum
 * does not see them.  pgstat_report_stat(false) flushes at most once a
 * second, judging the second by the end of the last transaction: called
 * again while idle, it would wait for the next transaction (the next prune,
 * a minute on).  So what it holds back is flushed by force a second later.
 */
TimestampTz
timers_flush_statistics(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (timers.stats_due != 0 && now >= timers.stats_due)
	{
		pgstat_report_stat(true);
		timers.stats_due = 0;
	}
	else if (pgstat_report_stat(false) > 0 && timers.stats_due == 0)
		timers.stats_due = TimestampTzPlusMilliseconds(now, 1000);
	return timers.stats_due != 0 ? timers.stats_due : DT_NOEND;
}
