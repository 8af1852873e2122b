/*
 * worker.c — the background worker: its start, its main loop, its end.
 *
 * The network thread (net/ws/ws_client.c) reads the socket whatever happens
 * here, and journals every frame.  This loop sleeps only in
 * WaitEventSetWait() over its latch (SQL backends, SIGTERM, SIGHUP), the
 * thread's eventfd, the journal's, gap repair's and the webhook receiver's,
 * and a timer, so an idle worker uses no CPU, wakes within microseconds of
 * a frame and exits at once on shutdown.  Each pass follows the connection,
 * stores the frames that arrived, then does whatever else is due:
 *
 *   connection.c          the state machine, backoff, news of the connection
 *   connection_failure.c  how a failed attempt is worded and logged
 *   intake.c              journal -> batch -> voipbin_events
 *   timers.c              partitions, pruning, alive_at, statistics
 *   requests/             voipbin_requests sent (request_worker.c)
 *   activity.c            what pg_stat_activity says the worker is doing
 *   database_wait.c       a voipbin.database that does not exist, waited for
 */
#include "voipbin.h"

#include <malloc.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "worker/worker.h"
#include "base/guard.h"
#include "base/loop_http.h"
#include "base/settings.h"
#include "base/status.h"
#include "ingest/spool_import.h"
#include "net/journal/journal.h"
#include "net/ws/ws_client.h"
#include "repair/gaps.h"
#include "repair/repair.h"
#include "requests/request_worker.h"
#include "worker/activity.h"
#include "worker/connection.h"
#include "worker/database_wait.h"
#include "worker/intake.h"
#include "worker/subscriptions.h"
#include "worker/timers.h"
#include "worker/webhook_ctl.h"

#define STANDBY_POLL_MS 1000
#define STORE_SLICE_MS 200
#define NET_STOP_WAIT_MS 1000	/* a network thread stuck in DNS is left behind after this */

/* The earliest moment a step is due again: the loop sleeps until then, or until woken. */
typedef struct Wake
{
	TimestampTz at;				/* DT_NOEND: nothing due */
} Wake;

/* Whether the topics in voipbin_subscriptions are to be sent again. */
static bool topics_dirty = true;

static void
wake_at(Wake *wake, TimestampTz t)
{
	wake->at = Min(wake->at, t);
}

static void
wake_in(Wake *wake, long ms)
{
	if (ms >= 0)
		wake_at(wake, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms));
}

/* on_standby drops the connection while the server is a standby, and says whether it is one. */
static bool
on_standby(Wake *wake)
{
	if (!RecoveryInProgress())
	{
		connection_promoted();
		return false;
	}
	connection_standby();
	wake_in(wake, STANDBY_POLL_MS);
	return true;
}

/* follow_connection connects, reconnects or gives up an attempt, as the state machine says. */
static void
follow_connection(Wake *wake)
{
	connection_step();
	wake_at(wake, connection_due());
}

/* take_news takes the network thread's news of the connection: connected, or closed (try again when). */
static void
take_news(Wake *wake)
{
	connection_take_news();
	wake_at(wake, connection_due());
}

/*
 * store_pending stores the frames the journal holds, a batch per
 * transaction, while the database takes them; it gives the loop back after
 * STORE_SLICE_MS so a long backlog does not starve topics and timers.
 * Frames first: they are what users wait for.
 */
static void
store_pending(Wake *wake)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_SLICE_MS);

	intake_set_limits();
	while (intake_store_batch())
	{
		CHECK_FOR_INTERRUPTS();
		/* news, and frames that arrived meanwhile join the next batch */
		take_news(wake);
		if (GetCurrentTimestamp() >= until)
			break;
	}
	intake_publish_backlog();
	wake_at(wake, intake_due());
}

static void
sync_step(void *arg)
{
	subs_sync();
}

static void
promote_step(void *arg)
{
	/* a suspect cleared lets the next one go */
	if (subs_promote_due(GetCurrentTimestamp()))
		topics_dirty = true;
}

/*
 * sync_topics sends voipbin_subscriptions' topics when they changed or the
 * connection is new, and marks active the topics proven by now.
 */
static void
sync_topics(Wake *wake)
{
	TimestampTz due;

	if (connection_take_fresh())
		topics_dirty = true;
	if (pg_atomic_exchange_u32(&voipbin_shared->subscriptions_changed, 0))
		topics_dirty = true;
	if (connection_state() != VB_STATE_CONNECTED)
		return;
	if (topics_dirty)
	{
		topics_dirty = false;
		activity_running("syncing topics");
		voipbin_guarded(sync_step, NULL, "reading voipbin_subscriptions");
		gaps_resubscribed();
		activity_context(connection_state(), subs_live_count());
	}
	if ((due = subs_next_deadline()) != 0)
	{
		if (due <= GetCurrentTimestamp())
		{
			activity_running("marking topics active");
			voipbin_guarded(promote_step, NULL, "marking topics active");
		}
		else
			wake_at(wake, due);
	}
	if (topics_dirty)
		wake_at(wake, GetCurrentTimestamp());
}

/*
 * alive_at is written while connected, once the position is read (a 1.0
 * extension has no voipbin_journal; a memory-only journal has no row): the
 * same test decides whether it is due and whether the loop waits for it.
 * It says "up to here, every frame is in the journal or in a recorded gap",
 * since a restart's gap starts there: so not while the journal is losing
 * frames, nor while a gap waits to be written.  (test/chaos found a worker
 * killed during an overflow whose successor's gap began after it.)
 */
static bool
alive_wanted(void)
{
	return connection_state() == VB_STATE_CONNECTED && intake_position_known() && journal_id() != NULL &&
		!journal_overflowing() && !gaps_unrecorded();
}

/*
 * send_requests sends what voipbin_request() queued: after the frames are
 * stored, and never waiting on VoIPBIN (the transfers run on the loop's REST
 * engine, gap repair's lane beside).
 */
static void
send_requests(Wake *wake)
{
	if (request_worker_busy())
		activity_running("sending requests");
	wake_in(wake, request_worker_step());
}

/* run_timers maintains partitions, prunes old events and writes alive_at, when due. */
static void
run_timers(Wake *wake)
{
	timers_run(alive_wanted());
	wake_at(wake, timers_due(alive_wanted()));
}

/* repair_gaps records gaps and fetches over REST what they cost: after the live stream, never in its way. */
static void
repair_gaps(Wake *wake)
{
	if (repair_running())
		activity_running("repairing a gap");
	wake_in(wake, gaps_step());
}

/* flush_statistics gets the worker's inserts to autovacuum promptly. */
static void
flush_statistics(Wake *wake)
{
	wake_at(wake, timers_flush_statistics());
}

/* serve_webhooks publishes the webhook receiver's counts and fetches its secret. */
static void
serve_webhooks(Wake *wake)
{
	wake_in(wake, webhook_worker_step());
}

static long
ms_until(TimestampTz now, TimestampTz then)
{
	if (then <= now)
		return 0;
	return (long) ((then - now + 999) / 1000);
}

/* wait_for_work sleeps until something is due, a frame arrives, or someone sets the latch. */
static void
wait_for_work(WaitEventSet *wes, const Wake *wake)
{
	WaitEvent	event;

	activity_idle();
	(void) WaitEventSetWait(wes, wake->at == DT_NOEND ? -1 : ms_until(GetCurrentTimestamp(), wake->at),
							&event, 1, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	ws_ack_wakeup();
	journal_ack_wakeup();
	CHECK_FOR_INTERRUPTS();
}

/* reload_if_asked reads the configuration again after a SIGHUP. */
static void
reload_if_asked(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	MemoryContextSwitchTo(cxt);
	timers_reloaded();
	request_worker_reloaded();
	webhook_worker_reload();
	connection_reloaded();
}

static void
worker_exit(int code, Datum arg)
{
	/* what is not stored yet is in the journal already, for the next worker */
	webhook_worker_stop();
	ws_stop(NET_STOP_WAIT_MS);
	journal_close();
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = 0;
	voipbin_shared->worker_latch = NULL;
	voipbin_shared->state = VB_STATE_DISABLED;
	voipbin_shared->connected_since = 0;
	SpinLockRelease(&voipbin_shared->mutex);
	pg_atomic_write_u64(&voipbin_shared->buffered_bytes, 0);
	__atomic_store_n(&voipbin_shared->network_backlog, 0, __ATOMIC_RELAXED);
}

/* Connects to voipbin.database as voipbin.worker_role, with the session the worker's SQL needs. */
static void
open_session(void)
{
	const char *path;

	/* what status shows should the role be refused: InitPostgres exits FATAL */
	if (voipbin_worker_role[0])
		voipbin_set_state(VB_STATE_DISABLED,
						  psprintf("the worker could not connect to database \"%s\" as voipbin.worker_role \"%s\"; see the server log",
								   voipbin_database, voipbin_worker_role));
	BackgroundWorkerInitializeConnection(voipbin_database,
										 voipbin_worker_role[0] ? voipbin_worker_role : NULL, 0);
	database_wait_connected();
	if (voipbin_worker_role[0])
		voipbin_set_error("");
	pgstat_report_appname("voipbin worker");

	/*
	 * pg_catalog first, whatever ALTER DATABASE or ALTER ROLE put in
	 * search_path: the worker's SQL names its tables by schema, and so always
	 * means the built-in functions and operators.  The rest stays, for the
	 * triggers and handlers it fires.
	 */
	path = GetConfigOption("search_path", false, false);
	SetConfigOption("search_path",
					path && path[0] ? psprintf("pg_catalog, %s", path) : "pg_catalog",
					PGC_USERSET, PGC_S_SESSION);

	/*
	 * No JIT: the batch statement is planned once and run thousands of
	 * times; compiling it would cost milliseconds of latency per batch, and
	 * loading LLVM some 8 MB of the worker's memory budget.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);
}

/*
 * Freed memory kept for the next batch.  glibc gives the heap's free top
 * back once it passes twice the mmap threshold (which it raises as it goes,
 * 16 MB at most in practice); a batch of 2,000 events allocates and frees
 * more than that (frames, rows, notifications), so each batch page-faulted
 * all of it in again.  Kept, it is never more than the largest batch's,
 * which the peak includes anyway.
 */
static void
keep_freed_memory(void)
{
	mallopt(M_MMAP_THRESHOLD, 16 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

/* voipbin.spool_directory, a relative one under the data directory. */
static char *
journal_directory(void)
{
	const char *d = voipbin_spool_directory && voipbin_spool_directory[0] ?
		voipbin_spool_directory : "voipbin_journal";

	return is_absolute_path(d) ? pstrdup(d) : psprintf("%s/%s", DataDir, d);
}

/* Opens the journal (in memory only, saying so, if it cannot) and imports 1.0's spool. */
static void
open_journal(void)
{
	char		errbuf[512];

	/* the journal first: the network thread appends to it from its first frame */
	if (!journal_open(journal_directory(), (uint64) voipbin_spool_limit_kb * 1024,
					  intake_cache_bytes(), enableFsync, errbuf, sizeof(errbuf)))
	{
		ereport(WARNING,
				(errmsg("voipbin: %s", errbuf),
				 errdetail("Received frames are held in memory only: a crash loses those not stored yet."),
				 errhint("Check voipbin.spool_directory, then restart the worker.")));
		voipbin_set_error(errbuf);
	}
	else if (errbuf[0])
		ereport(WARNING, (errmsg("voipbin: %s", errbuf)));
	/* before anything is received: 1.0's spooled frames are older */
	import_spool_1_0();
	/* pg_atomic_uint64 is a plain aligned uint64 on every platform PostgreSQL 15 builds with gcc */
	StaticAssertStmt(sizeof(voipbin_shared->frames_lost) == sizeof(uint64), "pg_atomic_uint64 layout");
	journal_publish_to(&voipbin_shared->network_backlog,
					   (uint64_t *) &voipbin_shared->frames_lost);
}

/* Starts the network thread, and the set of what the loop waits on. */
static WaitEventSet *
start_waiting_set(void)
{
	char		errbuf[512];
	int			wake_fd = ws_start(errbuf, sizeof(errbuf));
	WaitEventSet *wes;

	if (wake_fd < 0)
		ereport(FATAL, (errmsg("voipbin: %s", errbuf)));
	wes = vb_create_wait_event_set(6);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, wake_fd, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, journal_wake_fd(), NULL, NULL);
	/* one descriptor for every REST transfer of the loop: gap repair's and the requests' */
	if (lh_wait_fd() >= 0)
		AddWaitEventToSet(wes, WL_SOCKET_READABLE, lh_wait_fd(), NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, webhook_worker_start(), NULL, NULL);
	return wes;
}

void
voipbin_worker_main(Datum arg)
{
	sigjmp_buf	local_sigjmp_buf;
	WaitEventSet *wes;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* the worker before this one died connecting: voipbin.database may not exist */
	if (database_wait_needed())
		database_wait();
	open_session();
	keep_freed_memory();

	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = MyProcPid;
	voipbin_shared->worker_latch = MyLatch;
	SpinLockRelease(&voipbin_shared->mutex);
	before_shmem_exit(worker_exit, (Datum) 0);

	open_journal();
	wes = start_waiting_set();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "voipbin worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	connection_init();
	ereport(LOG, (errmsg("voipbin: worker started for database \"%s\"", voipbin_database)));

	/*
	 * An ERROR raised outside the steps' own handlers (a cancel at a
	 * CHECK_FOR_INTERRUPTS()) is reported and the loop goes on: without this
	 * it would become FATAL and restart the worker.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortCurrentTransaction();
		FlushErrorState();
		MemoryContextSwitchTo(TopMemoryContext);
		RESUME_INTERRUPTS();
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		Wake		wake = {DT_NOEND};

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);

		if (!on_standby(&wake))
		{
			follow_connection(&wake);
			take_news(&wake);
			store_pending(&wake);
			sync_topics(&wake);
			send_requests(&wake);
			run_timers(&wake);
			repair_gaps(&wake);
			flush_statistics(&wake);
		}
		serve_webhooks(&wake);
		wait_for_work(wes, &wake);
		reload_if_asked();
	}
}
