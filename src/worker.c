/*
 * worker.c — the background worker: its state machine and main loop.
 *
 * The network thread (ws_client.c) reads the socket whatever happens here.
 * This loop sleeps only in WaitEventSetWait() over its latch (SQL backends,
 * SIGTERM, SIGHUP), the thread's eventfd, and a timer, so an idle worker uses
 * no CPU, wakes within microseconds of a frame and exits at once on shutdown.
 * Each wake it takes the frames that arrived, stores them in one
 * transaction, then does whatever the state machine says is due.
 */
#include "voipbin.h"

#include <math.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "common/pg_prng.h"
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

#include "repair.h"
#include "store.h"
#include "net/ws_client.h"

/* One transaction takes at most this much: big enough to amortise a commit. */
#define BATCH_MAX_FRAMES 2000
#define BATCH_MAX_BYTES (8 * 1024 * 1024)
#define HANDSHAKE_TIMEOUT_MS 10000
#define STANDBY_POLL_MS 1000
#define STORE_RETRY_MS 1000
#define PRUNE_EVERY_MS 60000
#define STORE_SLICE_MS 200
#define SPOOL_FILE "voipbin.spool"

typedef struct Worker
{
	VoipbinState state;
	uint32_t	conn;			/* current connection number, 0 for none */
	bool		ever_connected;
	TimestampTz next_attempt;	/* backoff / unauthorized: when to try again */
	TimestampTz connect_deadline;
	int			failures;		/* consecutive, for the backoff */
	bool		subs_dirty;

	/* the configuration the current connection was made with */
	char	   *cred;
	CredentialKind cred_kind;
	char	   *api_url;
	char	   *ca_file;
	char	   *config_error;

	/* frames taken from the thread and not stored yet, oldest first */
	WsEvent    *pending_head,
			   *pending_tail;
	size_t		pending_bytes;
	TimestampTz store_retry_at;
	uint64		frames_lost;

	TimestampTz next_prune;
} Worker;

static Worker w;

static void topics_dropped(TimestampTz closed_at, const char *why);

static TimestampTz
unix_us_to_timestamptz(int64 us)
{
	return (TimestampTz) us -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC);
}

static void
report_activity(void)
{
	char		buf[128];

	snprintf(buf, sizeof(buf), "voipbin: %s, %d topic(s)",
			 voipbin_state_name(w.state), subs_live_count());
	pgstat_report_activity(w.state == VB_STATE_CONNECTED ? STATE_RUNNING : STATE_IDLE, buf);
}

static void
set_state(VoipbinState state, const char *error)
{
	char	   *safe = error ? redact_secret(error, w.cred) : NULL;

	w.state = state;
	voipbin_set_state(state, safe);
	report_activity();
}

static void
worker_exit(int code, Datum arg)
{
	/* what is not stored yet goes to the spool, for the next worker */
	ws_stop(w.pending_head);
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = 0;
	voipbin_shared->worker_latch = NULL;
	voipbin_shared->state = VB_STATE_DISABLED;
	voipbin_shared->connected_since = 0;
	SpinLockRelease(&voipbin_shared->mutex);
	pg_atomic_write_u64(&voipbin_shared->buffered_bytes, 0);
	__atomic_store_n(&voipbin_shared->network_backlog, 0, __ATOMIC_RELAXED);
}

static bool
str_changed(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

/*
 * Reads the credential, URL and CA file.  Returns true when they differ from
 * what the current connection was made with.
 */
static bool
load_config(void)
{
	CredentialKind kind;
	char	   *error = NULL;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *cred = credential_load(&kind, &error);
	bool		changed;

	changed = str_changed(cred, w.cred) ||
		str_changed(voipbin_api_url, w.api_url) ||
		str_changed(voipbin_ca_file, w.ca_file) ||
		str_changed(error, w.config_error);
	if (w.cred)
	{
		explicit_bzero(w.cred, strlen(w.cred));
		pfree(w.cred);
	}
	if (w.api_url)
		pfree(w.api_url);
	if (w.ca_file)
		pfree(w.ca_file);
	if (w.config_error)
		pfree(w.config_error);
	w.cred = cred;
	w.cred_kind = kind;
	w.api_url = pstrdup(voipbin_api_url ? voipbin_api_url : "");
	w.ca_file = pstrdup(voipbin_ca_file ? voipbin_ca_file : "");
	w.config_error = error;
	MemoryContextSwitchTo(old);
	return changed;
}

static const char *
disabled_reason(void)
{
	return w.config_error ? w.config_error :
		"no credential: set voipbin.token or voipbin.token_file";
}

static void
drop_connection(void)
{
	if (w.state == VB_STATE_CONNECTED)
		gaps_connection_lost(GetCurrentTimestamp(), "the worker reconnected");
	if (w.conn != 0)
		ws_disconnect();
	w.conn = 0;
	subs_reset();
}

static void
start_connection(void)
{
	Endpoint	ep;
	const char *error;
	WsTarget	t;
	char	   *path;

	if (!endpoint_parse(w.api_url, &ep, &error))
	{
		set_state(VB_STATE_DISABLED, error);
		return;
	}
	if (w.cred_kind == CRED_ACCESSKEY)
		path = psprintf("%s/ws?accesskey=%s", ep.base_path, w.cred);
	else
		path = psprintf("%s/ws", ep.base_path);

	memset(&t, 0, sizeof(t));
	t.host = ep.host;
	t.port = ep.port;
	t.path = path;
	t.tls = ep.tls;
	t.bearer = w.cred_kind == CRED_JWT ? w.cred : NULL;
	t.ca_file = w.ca_file[0] ? w.ca_file : NULL;
	t.idle_timeout_s = voipbin_idle_timeout_s;
	t.handshake_timeout_s = HANDSHAKE_TIMEOUT_MS / 1000;

	subs_reset();
	w.conn = ws_connect(&t);
	explicit_bzero(path, strlen(path));
	w.connect_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HANDSHAKE_TIMEOUT_MS);
	elog(DEBUG1, "voipbin: connecting to %s://%s:%d%s/ws",
		 ep.tls ? "wss" : "ws", ep.host, ep.port, ep.base_path);
	set_state(VB_STATE_CONNECTING, NULL);
}

/* Exponential backoff with jitter, between the two settings. */
static int
backoff_ms(void)
{
	double		base = voipbin_reconnect_min_delay_ms * pow(2.0, Min(w.failures - 1, 30));
	double		delay;

	base = Min(base, (double) voipbin_reconnect_max_delay_ms);
	delay = base + base * 0.5 * pg_prng_double(&pg_global_prng_state);
	delay = Min(delay, (double) voipbin_reconnect_max_delay_ms);
	return (int) Max(delay, (double) voipbin_reconnect_min_delay_ms);
}

static void
connection_failed(int http_status, const char *why)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *msg;

	w.conn = 0;
	subs_reset();
	w.failures++;
	if (http_status == 401)
	{
		msg = psprintf("VoIPBIN refused the credential (HTTP 401); waiting for a reload or %d s",
					   voipbin_reconnect_max_delay_ms / 1000);
		w.next_attempt = TimestampTzPlusMilliseconds(now, voipbin_reconnect_max_delay_ms);
		ereport(LOG, (errmsg("voipbin: %s", msg)));
		set_state(VB_STATE_UNAUTHORIZED, msg);
		return;
	}
	{
		int			delay = backoff_ms();

		w.next_attempt = TimestampTzPlusMilliseconds(now, delay);
		msg = psprintf("%s", why ? why : "connection failed");
		ereport(LOG, (errmsg("voipbin: reconnect in %.1f s because %s",
							 delay / 1000.0, redact_secret(msg, w.cred))));
		set_state(VB_STATE_BACKOFF, msg);
	}
}

static void
on_event(WsEvent *ev)
{
	/* a frame is an event whatever became of its connection */
	if (ev->kind != WS_EV_FRAME && (ev->conn != w.conn || w.conn == 0))
	{
		ws_event_free(ev);		/* news of a connection already given up */
		return;
	}
	switch (ev->kind)
	{
		case WS_EV_CONNECTED:
			if (w.ever_connected)
				pg_atomic_fetch_add_u64(&voipbin_shared->reconnects, 1);
			w.ever_connected = true;
			w.failures = 0;
			w.subs_dirty = true;
			set_state(VB_STATE_CONNECTED, "");
			ereport(LOG, (errmsg("voipbin: connected")));
			ws_event_free(ev);
			break;
		case WS_EV_CLOSED:
			if (w.state == VB_STATE_CONNECTED)
			{
				gaps_connection_lost(unix_us_to_timestamptz(ev->at_us), ev->data);
				topics_dropped(unix_us_to_timestamptz(ev->at_us), ev->data);
			}
			connection_failed(ev->http_status, ev->data);
			ws_event_free(ev);
			break;
		case WS_EV_FRAME:
			pg_atomic_fetch_add_u64(&voipbin_shared->frames_received, 1);
			SpinLockAcquire(&voipbin_shared->mutex);
			voipbin_shared->last_frame_at = unix_us_to_timestamptz(ev->at_us);
			SpinLockRelease(&voipbin_shared->mutex);
			ev->next = NULL;
			if (w.pending_tail)
				w.pending_tail->next = ev;
			else
				w.pending_head = ev;
			w.pending_tail = ev;
			w.pending_bytes += ev->len;
			break;
	}
}

/*
 * Takes what the network thread has: connection news always, frames while
 * fewer than a batch wait here (the rest waits in the thread's queue, bounded
 * by voipbin.buffer_limit, then in the spool).
 */
static void
pull_events(void)
{
	do
	{
		WsEvent    *ev = ws_take(BATCH_MAX_BYTES - Min(w.pending_bytes, BATCH_MAX_BYTES - 1));

		if (ev == NULL)
			break;
		while (ev)
		{
			WsEvent    *next = ev->next;

			on_event(ev);
			ev = next;
		}
	} while (w.pending_bytes < BATCH_MAX_BYTES);
}

static void
publish_backlog(void)
{
	uint64		lost = ws_frames_lost();

	pg_atomic_write_u64(&voipbin_shared->buffered_bytes, w.pending_bytes);
	if (lost > w.frames_lost)
	{
		ereport(WARNING,
				(errmsg("voipbin: %llu frame(s) lost: the spool file could not take them",
						(unsigned long long) (lost - w.frames_lost)),
				 errhint("Free disk space in the data directory, or raise voipbin.buffer_limit.")));
		w.frames_lost = lost;
	}
}

/*
 * Stores pending frames, a batch per transaction, while the database takes
 * them; gives the loop back after STORE_SLICE_MS so a long backlog does not
 * starve subscriptions and timers.  True when frames are left.
 */
static bool
store_pending(void)
{
	WsEvent    *batch[BATCH_MAX_FRAMES];
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_SLICE_MS);

	/* connection news must not wait for the database's retry timer */
	pull_events();
	if (w.store_retry_at && GetCurrentTimestamp() < w.store_retry_at)
		return true;
	w.store_retry_at = 0;
	while (w.pending_head)
	{
		int			n = 0;
		size_t		bytes = 0;
		uint64		spool_end = 0;
		StoreResult r;

		for (WsEvent *ev = w.pending_head; ev && n < BATCH_MAX_FRAMES; ev = ev->next)
		{
			if (n > 0 && bytes + ev->len > BATCH_MAX_BYTES)
				break;
			batch[n++] = ev;
			bytes += ev->len;
		}
		r = store_frames(batch, n, NULL, 0, &w.store_retry_at);
		if (r != STORE_DONE)
		{
			/* keep them, in order, and try again shortly */
			if (r == STORE_NOT_READY)
				w.store_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_RETRY_MS);
			return true;
		}
		w.pending_head = batch[n - 1]->next;
		if (!w.pending_head)
			w.pending_tail = NULL;
		w.pending_bytes -= bytes;
		for (int i = 0; i < n; i++)
		{
			spool_end = Max(spool_end, batch[i]->spool_end);
			ws_event_free(batch[i]);
		}
		if (spool_end)
			ws_spool_done(spool_end);
		CHECK_FOR_INTERRUPTS();
		/* let newly arrived frames join the next batch */
		pull_events();
		if (GetCurrentTimestamp() >= until)
			break;
	}
	return w.pending_head != NULL;
}

/* Runs one database step; an error is logged and the loop goes on. */
static void
guarded(void (*step) (void), const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		step();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING, (errmsg("voipbin: %s failed: %s", what, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

static void
promote_now(void)
{
	/* a suspect cleared lets the next one go */
	if (subs_promote_due(GetCurrentTimestamp()))
		w.subs_dirty = true;
}

static TimestampTz dropped_at;
static const char *dropped_why;

static void
topics_dropped_step(void)
{
	subs_connection_dropped(dropped_at, dropped_why);
}

static void
topics_dropped(TimestampTz closed_at, const char *why)
{
	dropped_at = closed_at;
	dropped_why = why;
	guarded(topics_dropped_step, "recording a dropped connection");
}

static long
ms_until(TimestampTz now, TimestampTz then)
{
	if (then <= now)
		return 0;
	return (long) ((then - now + 999) / 1000);
}

/* Decides what to do now and how long the loop may then sleep. */
static long
step(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = -1;
	TimestampTz due;
	bool		more_frames;
	long		stats_ms;

	if (RecoveryInProgress())
	{
		if (w.state != VB_STATE_STANDBY)
		{
			drop_connection();
			set_state(VB_STATE_STANDBY, NULL);
		}
		return STANDBY_POLL_MS;
	}
	if (w.state == VB_STATE_STANDBY)
	{
		elog(LOG, "voipbin: the server was promoted, connecting");
		w.state = VB_STATE_DISABLED;
		w.next_attempt = 0;
	}

	if (pg_atomic_exchange_u32(&voipbin_shared->reconnect_requested, 0))
	{
		drop_connection();
		w.next_attempt = 0;
		w.failures = 0;
		if (w.cred)
			set_state(VB_STATE_BACKOFF, NULL);
	}

	if (w.cred == NULL)
	{
		if (w.state != VB_STATE_DISABLED)
		{
			drop_connection();
			set_state(VB_STATE_DISABLED, disabled_reason());
		}
	}
	else if (w.conn == 0 && now >= w.next_attempt)
		start_connection();
	else if (w.state == VB_STATE_CONNECTING && now >= w.connect_deadline)
	{
		ws_disconnect();
		connection_failed(0, "the handshake did not complete within 10 s");
	}

	/* frames first: they are what users wait for */
	ws_set_buffer_limit((size_t) voipbin_buffer_limit_kb * 1024);
	more_frames = store_pending();
	publish_backlog();

	if (pg_atomic_exchange_u32(&voipbin_shared->subscriptions_changed, 0))
		w.subs_dirty = true;
	if (w.subs_dirty && w.state == VB_STATE_CONNECTED)
	{
		w.subs_dirty = false;
		guarded(subs_sync, "reading voipbin_subscriptions");
		gaps_resubscribed();
		report_activity();
	}
	now = GetCurrentTimestamp();
	if (w.state == VB_STATE_CONNECTED && (due = subs_next_deadline()) != 0)
	{
		if (due <= now)
			guarded(promote_now, "marking topics active");
		else
			timeout = ms_until(now, due);
	}

	if (now >= w.next_prune)
	{
		guarded(store_prune, "pruning old events");
		w.next_prune = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PRUNE_EVERY_MS);
	}

	/* gap repair: after the live stream, never in its way */
	{
		long		repair_ms = repair_step();

		if (repair_ms >= 0 && (timeout < 0 || repair_ms < timeout))
			timeout = repair_ms;
	}

	/* the worker's inserts must reach the statistics, or autovacuum never sees them */
	stats_ms = pgstat_report_stat(false);

	/* how long until something is due */
#define CONSIDER(t) do { long ms_ = ms_until(now, (t)); if (timeout < 0 || ms_ < timeout) timeout = ms_; } while (0)
	CONSIDER(w.next_prune);
	if (w.cred && w.conn == 0)
		CONSIDER(w.next_attempt);
	if (w.state == VB_STATE_CONNECTING)
		CONSIDER(w.connect_deadline);
	if (more_frames)
		CONSIDER(w.store_retry_at ? w.store_retry_at : now);
	if (w.subs_dirty && w.state == VB_STATE_CONNECTED)
		CONSIDER(now);
	if (stats_ms > 0)
		CONSIDER(TimestampTzPlusMilliseconds(now, stats_ms));
#undef CONSIDER
	return timeout;
}

void
voipbin_worker_main(Datum arg)
{
	char		errbuf[256];
	int			wake_fd;
	WaitEventSet *wes;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(voipbin_database, NULL, 0);
	pgstat_report_appname("voipbin worker");

	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = MyProcPid;
	voipbin_shared->worker_latch = MyLatch;
	SpinLockRelease(&voipbin_shared->mutex);
	before_shmem_exit(worker_exit, (Datum) 0);

	wake_fd = ws_start(psprintf("%s/%s", DataDir, SPOOL_FILE), &voipbin_shared->network_backlog,
					   errbuf, sizeof(errbuf));
	if (wake_fd < 0)
		ereport(FATAL, (errmsg("voipbin: %s", errbuf)));
	if (errbuf[0])
		ereport(WARNING,
				(errmsg("voipbin: %s", errbuf),
				 errdetail("Events the database cannot take yet will be held in memory only.")));

	wes = CreateWaitEventSet(TopMemoryContext, 4);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, wake_fd, NULL, NULL);
	if (repair_wait_fd() >= 0)
		AddWaitEventToSet(wes, WL_SOCKET_READABLE, repair_wait_fd(), NULL, NULL);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "voipbin worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	memset(&w, 0, sizeof(w));
	w.state = VB_STATE_DISABLED;
	w.subs_dirty = true;
	load_config();
	set_state(VB_STATE_DISABLED, w.cred ? NULL : disabled_reason());
	ereport(LOG, (errmsg("voipbin: worker started for database \"%s\"", voipbin_database)));

	for (;;)
	{
		WaitEvent	event;
		long		timeout;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		timeout = step();

		(void) WaitEventSetWait(wes, timeout, &event, 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		ws_ack_wakeup();
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			MemoryContextSwitchTo(loop_cxt);
			w.next_prune = 0;	/* a new retention applies at once */
			if (load_config())
			{
				elog(LOG, "voipbin: credential, URL or CA changed, reconnecting");
				drop_connection();
				gaps_config_changed();
				w.next_attempt = 0;
				w.failures = 0;
				set_state(w.cred ? VB_STATE_BACKOFF : VB_STATE_DISABLED,
						  w.cred ? "" : disabled_reason());
			}
		}
	}
}
