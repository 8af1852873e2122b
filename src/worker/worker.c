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

#include <malloc.h>
#include <math.h>

#include "pgtime.h"

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

#include "worker/worker.h"
#include "base/db.h"
#include "base/endpoint.h"
#include "base/guard.h"
#include "base/rest.h"
#include "base/settings.h"
#include "base/status.h"
#include "base/time.h"
#include "ingest/boundaries.h"
#include "ingest/position.h"
#include "ingest/spool_import.h"
#include "ingest/store.h"
#include "maintenance/partitions.h"
#include "maintenance/prune.h"
#include "net/journal/journal.h"
#include "net/journal/record.h"
#include "net/ws/ws_client.h"
#include "repair/gaps.h"
#include "repair/repair.h"
#include "worker/subscriptions.h"
#include "worker/webhook_ctl.h"

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
#define HANDSHAKE_TIMEOUT_MS 10000
/* the network thread names a handshake timeout itself; this is the backstop */
#define HANDSHAKE_GIVE_UP_MS (HANDSHAKE_TIMEOUT_MS + 2000)
/* the same failure again is logged at LOG this often, with its count */
#define FAILURE_LOG_EVERY_MS (10 * 60 * 1000)
/* a Retry-After longer than this is not waited for in full */
#define RETRY_AFTER_MAX_S 3600
#define STANDBY_POLL_MS 1000
#define STORE_RETRY_MS 1000
#define PRUNE_EVERY_MS 60000
#define PRUNE_AGAIN_MS 1000		/* rows or a partition still due */
/* how early a restart's gap may start: VoIPBIN pings every 10 s anyway */
#define ALIVE_EVERY_MS 15000
#define STORE_SLICE_MS 200
#define NET_STOP_WAIT_MS 1000	/* a network thread stuck in DNS is left behind after this */

typedef struct Worker
{
	VoipbinState state;
	uint32_t	conn;			/* current connection number, 0 for none */
	bool		ever_connected;
	TimestampTz next_attempt;	/* backoff / unauthorized: when to try again */
	TimestampTz connect_deadline;
	int			failures;		/* consecutive, for the backoff */
	bool		subs_dirty;

	/*
	 * Log throttling: the cause of the failures in a row (their message
	 * without what changes on each, such as a request id), how many, since
	 * when, and how many had been counted when it was last logged at LOG.
	 */
	char	   *fail_key;
	int			fail_repeats;
	int			fail_logged_repeats;
	TimestampTz fail_since;
	TimestampTz fail_logged_at;

	/* the configuration the current connection was made with */
	char	   *cred;
	CredentialKind cred_kind;
	char	   *api_url;
	char	   *ca_file;
	char	   *config_error;

	/* frames taken from the journal and not stored yet, oldest first */
	JournalRecord    *pending_head,
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

	TimestampTz next_prune;
	TimestampTz next_alive;		/* when voipbin_journal.alive_at is due */
	bool		restart_checked;	/* has the previous worker's end been looked for */
	TimestampTz stats_due;		/* when pending statistics are flushed by force */
} Worker;

static Worker w;

static void topics_dropped(TimestampTz closed_at, const char *why);

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

static void
report_activity(void)
{
	char		buf[128];

	int			topics = subs_live_count();

	snprintf(buf, sizeof(buf), "voipbin: %s, %d %s",
			 voipbin_state_name(w.state), topics, topics == 1 ? "topic" : "topics");
	pgstat_report_activity(w.state == VB_STATE_CONNECTED ? STATE_RUNNING : STATE_IDLE, buf);
}

static void
set_state(VoipbinState state, const char *error)
{
	char	   *safe = error ? redact_secret(error, w.cred) : NULL;

	w.state = state;
	voipbin_set_state(state, safe);
	voipbin_set_attempts(w.failures,
						 state == VB_STATE_BACKOFF || state == VB_STATE_UNAUTHORIZED ?
						 w.next_attempt : 0);
	report_activity();
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
	Endpoint	ep = {0};
	const char *url_error;

	/* a URL the worker will not use disables it, saying why, until a reload */
	if (error == NULL && !endpoint_parse(voipbin_api_url ? voipbin_api_url : "", &ep, &url_error))
		error = pstrdup(url_error);
	if (ep.host)
		pfree(ep.host);
	if (ep.base_path)
		pfree(ep.base_path);
	if (error && cred)
	{
		explicit_bzero(cred, strlen(cred));
		pfree(cred);
		cred = NULL;
		kind = CRED_NONE;
	}

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
	{
		char	   *key = rest_query_escape(w.cred);

		path = psprintf("%s/ws?accesskey=%s", ep.base_path, key);
		explicit_bzero(key, strlen(key));
		pfree(key);
	}
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
	w.connect_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HANDSHAKE_GIVE_UP_MS);
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

/* "10:02": when a run of failures began, in the log's time zone. */
static char *
clock_time(TimestampTz t)
{
	pg_time_t	tt = timestamptz_to_time_t(t);
	char		buf[16];

	pg_strftime(buf, sizeof(buf), "%H:%M", pg_localtime(&tt, log_timezone));
	return pstrdup(buf);
}

/* The run of identical failures that ends now, if some of it was not logged. */
static void
log_failure_run_end(void)
{
	if (w.fail_key && w.fail_repeats > w.fail_logged_repeats)
		ereport(LOG, (errmsg("voipbin: %s (failed %d times since %s)",
							 redact_secret(w.fail_key, w.cred), w.fail_repeats,
							 clock_time(w.fail_since))));
	if (w.fail_key)
		pfree(w.fail_key);
	w.fail_key = NULL;
	w.fail_repeats = w.fail_logged_repeats = 0;
}

/*
 * Logs a failed attempt: at LOG when its cause (key) differs from the one
 * before, and every FAILURE_LOG_EVERY_MS of the same with a count; each one
 * at DEBUG1.  A long outage so costs the log a line per ten minutes.
 */
static void
log_failure(const char *key, const char *line)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *safe = redact_secret(line, w.cred);

	if (w.fail_key && strcmp(w.fail_key, key) == 0)
	{
		w.fail_repeats++;
		if (now - w.fail_logged_at >= (TimestampTz) FAILURE_LOG_EVERY_MS * 1000)
		{
			ereport(LOG, (errmsg("voipbin: %s (failed %d times since %s)", safe,
								 w.fail_repeats, clock_time(w.fail_since))));
			w.fail_logged_at = now;
			w.fail_logged_repeats = w.fail_repeats;
		}
		else
			ereport(DEBUG1, (errmsg("voipbin: %s", safe)));
		return;
	}
	log_failure_run_end();
	w.fail_key = MemoryContextStrdup(TopMemoryContext, key);
	w.fail_repeats = w.fail_logged_repeats = 1;
	w.fail_since = w.fail_logged_at = now;
	ereport(LOG, (errmsg("voipbin: %s", safe)));
}

/* Retry-After in seconds (its delta-seconds form), or -1. */
static long
retry_after_seconds(const char *text)
{
	char	   *end;
	long		s;

	if (text == NULL || !isdigit((unsigned char) text[0]))
		return -1;
	s = strtol(text, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	return *end == '\0' ? Min(s, (long) RETRY_AFTER_MAX_S) : -1;
}

/* VoIPBIN's error envelope in the answer, or NULL; never an ERROR here. */
static char *
answer_detail(const WsHttpAnswer *a, bool with_request_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *volatile detail = NULL;

	PG_TRY();
	{
		detail = rest_error_detail(a->body, a->body_len, with_request_id, a->request_id);
	}
	PG_CATCH();
	{
		/* a body that is not VoIPBIN's JSON just names nothing */
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		detail = NULL;
	}
	PG_END_TRY();
	return detail;
}

/*
 * A refused handshake in the words of the REST functions (src/rest.c):
 * the status, then what VoIPBIN's error envelope says.  *key leaves out the
 * request id, which differs every time.
 */
static void
describe_http_refusal(int status, const WsHttpAnswer *a, char **msg, char **key)
{
	const char *head;
	char	   *detail = a ? answer_detail(a, true) : NULL;
	char	   *stable = a ? answer_detail(a, false) : NULL;

	if (status == 401)
		head = "VoIPBIN refused the credential at the WebSocket handshake";
	else if (status == 403)
		head = "VoIPBIN denied the WebSocket handshake";
	else if (status == 429)
		head = "VoIPBIN's rate limit refused the WebSocket handshake";
	else if (status >= 500)
		head = "VoIPBIN failed the WebSocket handshake";
	else
		head = "VoIPBIN refused the WebSocket handshake";
	*msg = psprintf("%s (HTTP %d%s%s)", head, status, detail ? ", " : "", detail ? detail : "");
	*key = psprintf("%s (HTTP %d%s%s)", head, status, stable ? ", " : "", stable ? stable : "");
}

/*
 * An attempt failed, or a connection ended: says why in last_error and the
 * log, and schedules the next attempt.
 */
static void
connection_failed(const WsNews *ev, const char *why)
{
	TimestampTz now = GetCurrentTimestamp();
	int			http_status = ev ? ev->http_status : 0;
	char	   *msg;
	char	   *key;
	char	   *line;
	int			delay;
	long		retry_after = -1;

	w.conn = 0;
	subs_reset();
	w.failures++;
	if (http_status > 0)
	{
		describe_http_refusal(http_status, ev->answer, &msg, &key);
		if (http_status == 429 && ev->answer)
			retry_after = retry_after_seconds(ev->answer->retry_after);
	}
	else
		msg = key = pstrdup(why ? why : ev && ev->data ? ev->data : "connection failed");

	if (http_status == 401)
	{
		delay = voipbin_reconnect_max_delay_ms;
		msg = psprintf("%s; waiting for a reload or %d s", msg, delay / 1000);
		line = msg;
	}
	else
	{
		delay = backoff_ms();
		if (retry_after >= 0)
		{
			/* VoIPBIN said when: not sooner than that */
			msg = psprintf("%s; Retry-After: %ld s", msg, retry_after);
			delay = Max(delay, (int) (retry_after * 1000));
		}
		line = psprintf("reconnect in %.1f s because %s", delay / 1000.0, msg);
	}
	w.next_attempt = TimestampTzPlusMilliseconds(now, delay);
	log_failure(key, line);
	set_state(http_status == 401 ? VB_STATE_UNAUTHORIZED : VB_STATE_BACKOFF, msg);
}

static void
on_news(WsNews *ev)
{
	if (ev->conn != w.conn || w.conn == 0)
	{
		ws_news_free(ev);		/* news of a connection already given up */
		return;
	}
	switch (ev->kind)
	{
		case WS_NEWS_CONNECTED:
			if (w.ever_connected)
				pg_atomic_fetch_add_u64(&voipbin_shared->reconnects, 1);
			w.ever_connected = true;
			log_failure_run_end();
			if (w.failures > 0)
				ereport(LOG, (errmsg_plural("voipbin: connected after %d failed attempt",
											"voipbin: connected after %d failed attempts",
											w.failures, w.failures)));
			else
				ereport(LOG, (errmsg("voipbin: connected")));
			w.failures = 0;
			w.subs_dirty = true;
			set_state(VB_STATE_CONNECTED, w.journal_problem ? w.journal_problem : "");
			ws_news_free(ev);
			break;
		case WS_NEWS_CLOSED:
			if (w.state == VB_STATE_CONNECTED)
			{
				gaps_connection_lost(time_from_unix_us(ev->at_us), ev->data);
				topics_dropped(time_from_unix_us(ev->at_us), ev->data);
			}
			connection_failed(ev, NULL);
			ws_news_free(ev);
			break;
	}
}

static void
free_pending(void)
{
	while (w.pending_head)
	{
		JournalRecord    *ev = w.pending_head;

		w.pending_head = ev->next;
		journal_record_free(ev);
	}
	w.pending_tail = NULL;
	w.pending_bytes = 0;
	w.pending_frames = 0;
}

static void
take_frame(JournalRecord *ev)
{
	pg_atomic_fetch_add_u64(&voipbin_shared->frames_received, 1);
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->last_frame_at = time_from_unix_us(ev->at_us);
	SpinLockRelease(&voipbin_shared->mutex);
	ev->next = NULL;
	if (w.pending_tail)
		w.pending_tail->next = ev;
	else
		w.pending_head = ev;
	w.pending_tail = ev;
	w.pending_bytes += ev->len;
	w.pending_frames++;
}

/*
 * Takes connection news always, and frames from the journal while fewer
 * than a batch wait here (the rest waits in the journal: its memory cache,
 * bounded by voipbin.buffer_limit, then its files).
 */
static void
pull_events(void)
{
	for (WsNews *ev = ws_take(); ev;)
	{
		WsNews	   *next = ev->next;

		on_news(ev);
		ev = next;
	}
	if (!w.position_known)
		return;
	/* one batch waits here, no more: the rest is the cache's, within its share of the limit */
	while (w.pending_bytes < batch_bytes_for(buffer_limit_bytes()) && w.pending_frames < BATCH_MAX_FRAMES)
	{
		uint64		next;
		JournalRecord    *ev = journal_read(w.cursor, batch_bytes_for(buffer_limit_bytes()) - w.pending_bytes,
									  BATCH_MAX_FRAMES - w.pending_frames, &next);

		w.cursor = next;
		if (ev == NULL)
			break;
		while (ev)
		{
			JournalRecord    *n = ev->next;

			take_frame(ev);
			ev = n;
		}
	}
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
		w.position_known = true;
		w.cursor = Max(w.cursor, journal_start());
		return;
	}
	db_begin_work();
	st = position_load(journal_id(), &upto, &alive_at);
	db_end_work();
	if (st == POSITION_OLD_VERSION)
	{
		if (!w.told_old_version)
		{
			ereport(WARNING,
					(errmsg("voipbin: the extension in database \"%s\" is at version 1.0: received frames wait in the journal",
							voipbin_database),
					 errhint("Run ALTER EXTENSION voipbin UPDATE.")));
			voipbin_set_error("the extension is at version 1.0: run ALTER EXTENSION voipbin UPDATE; received frames wait in the journal");
			w.told_old_version = true;
		}
		return;
	}
	if (st != POSITION_READY)
		return;
	if (w.told_old_version)
	{
		ereport(LOG, (errmsg("voipbin: the extension is updated, storing the frames the journal holds")));
		voipbin_set_error("");
		w.told_old_version = false;
	}
	/* an earlier worker, connected until alive_at, is gone: so was the stream */
	if (!w.restart_checked)
	{
		w.restart_checked = true;
		gaps_worker_restarted(alive_at);
	}
	/* what was taken before is read again from where the table says */
	free_pending();
	w.cursor = Max(Max(upto, w.stored), journal_start());
	w.position_known = true;
	elog(DEBUG1, "voipbin: journal %s stored up to " UINT64_FORMAT ", reading from " UINT64_FORMAT,
		 journal_id(), upto, w.cursor);
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
			if (w.journal_problem)
				pfree(w.journal_problem);
			w.journal_problem = MemoryContextStrdup(TopMemoryContext, line);
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

static void
publish_backlog(void)
{
	/* the journal keeps network_backlog and frames_lost current itself */
	pg_atomic_write_u64(&voipbin_shared->buffered_bytes, w.pending_bytes);
	journal_news();
}

/*
 * Stores pending frames, a batch per transaction, while the database takes
 * them; gives the loop back after STORE_SLICE_MS so a long backlog does not
 * starve subscriptions and timers.  True when frames are left.
 */
static bool
store_pending(void)
{
	JournalRecord    *batch[BATCH_MAX_FRAMES];
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_SLICE_MS);

	/* connection news must not wait for the database's retry timer */
	pull_events();
	if (w.store_retry_at && GetCurrentTimestamp() < w.store_retry_at)
		return true;
	w.store_retry_at = 0;
	if (!w.position_known)
	{
		voipbin_guarded(load_position, NULL, "reading the journal position");
		if (!w.position_known)
		{
			w.store_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_RETRY_MS);
			return true;
		}
		pull_events();
	}
	while (w.pending_head)
	{
		int			n = 0;
		size_t		bytes = 0;
		uint64		upto;
		StoreResult r;

		for (JournalRecord *ev = w.pending_head; ev && n < BATCH_MAX_FRAMES; ev = ev->next)
		{
			if (n > 0 && bytes + ev->len > batch_bytes_for(buffer_limit_bytes()))
				break;
			batch[n++] = ev;
			bytes += ev->len;
		}
		upto = batch[n - 1]->jend;
		r = store_frames(batch, n, journal_id(), upto, &w.store_retry_at);
		if (r != STORE_DONE)
		{
			/* keep them, in order, and try again shortly */
			if (r == STORE_NOT_READY)
			{
				w.store_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STORE_RETRY_MS);
				/* dropped, or back at 1.0: the position is read again once it is there */
				w.position_known = false;
			}
			return true;
		}
		w.stored = Max(w.stored, upto);
		journal_stored(upto);
		w.pending_head = batch[n - 1]->next;
		if (!w.pending_head)
			w.pending_tail = NULL;
		w.pending_bytes -= bytes;
		w.pending_frames -= n;
		for (int i = 0; i < n; i++)
			journal_record_free(batch[i]);
		CHECK_FOR_INTERRUPTS();
		/* let newly arrived frames join the next batch */
		pull_events();
		if (GetCurrentTimestamp() >= until)
			break;
	}
	return w.pending_head != NULL;
}

static void
promote_now(void *arg)
{
	/* a suspect cleared lets the next one go */
	if (subs_promote_due(GetCurrentTimestamp()))
		w.subs_dirty = true;
}

/*
 * alive_at is written while connected, once the position is read (a 1.0
 * extension has no voipbin_journal; a memory-only journal has no row): the
 * same test decides whether it is due and whether the loop waits for it.
 */
static bool
alive_wanted(void)
{
	return w.state == VB_STATE_CONNECTED && w.position_known && journal_id() != NULL;
}

static void
note_alive(void *arg)
{
	db_begin_work();
	position_alive(journal_id());
	db_end_work();
}

typedef struct DroppedConnection
{
	TimestampTz closed_at;
	const char *why;
} DroppedConnection;

static void
topics_dropped_step(void *arg)
{
	DroppedConnection *d = arg;

	subs_connection_dropped(d->closed_at, d->why);
}

static void
topics_dropped(TimestampTz closed_at, const char *why)
{
	DroppedConnection d = {closed_at, why};

	voipbin_guarded(topics_dropped_step, &d, "recording a dropped connection");
}

static void
sync_topics(void *arg)
{
	subs_sync();
}

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
	long		webhook_ms;

	if (RecoveryInProgress())
	{
		if (w.state != VB_STATE_STANDBY)
		{
			drop_connection();
			set_state(VB_STATE_STANDBY, NULL);
		}
		(void) webhook_worker_step();
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
		log_failure_run_end();	/* what fails after this is news */
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
		const char *stage = ws_attempt_stage();

		ws_disconnect();
		connection_failed(NULL, psprintf("the connection was not established within %d s%s%s%s",
										 HANDSHAKE_GIVE_UP_MS / 1000, stage ? " (still " : "",
										 stage ? stage : "", stage ? ")" : ""));
	}

	/* frames first: they are what users wait for */
	journal_set_limits((uint64) voipbin_spool_limit_kb * 1024, cache_bytes_for(buffer_limit_bytes()));
	ws_set_max_frame_size((size_t) voipbin_max_frame_size);
	more_frames = store_pending();
	publish_backlog();

	if (pg_atomic_exchange_u32(&voipbin_shared->subscriptions_changed, 0))
		w.subs_dirty = true;
	if (w.subs_dirty && w.state == VB_STATE_CONNECTED)
	{
		w.subs_dirty = false;
		voipbin_guarded(sync_topics, NULL, "reading voipbin_subscriptions");
		gaps_resubscribed();
		report_activity();
	}
	now = GetCurrentTimestamp();
	if (w.state == VB_STATE_CONNECTED && (due = subs_next_deadline()) != 0)
	{
		if (due <= now)
			voipbin_guarded(promote_now, NULL, "marking topics active");
		else
			timeout = ms_until(now, due);
	}

	if (now >= w.next_prune)
	{
		TimestampTz after;
		int64		every_ms;
		TimestampTz next_drop = 0;
		bool		prune_unfinished = false;

		voipbin_guarded(maintain_partitions, &next_drop, "maintaining the partitions of voipbin_events");
		voipbin_guarded(prune, &prune_unfinished, "pruning old events");
		after = GetCurrentTimestamp();
		/* partitions are made two ranges ahead: back within one, or rows go to the default one */
		every_ms = Min(PRUNE_EVERY_MS, (int64) partition_step_s(voipbin_partition_interval_s,
															   voipbin_event_retention_s) * 1000);
		w.next_prune = TimestampTzPlusMilliseconds(after, prune_unfinished ? PRUNE_AGAIN_MS : every_ms);
		/*
		 * The next partition due is dropped when it is, not up to a pass
		 * later.  One due already was in use (the drop waited lock_timeout
		 * for it): that waits for the next pass, not the worker for it every
		 * second.
		 */
		if (next_drop > after && next_drop < w.next_prune)
			w.next_prune = TimestampTzPlusMilliseconds(next_drop, 10);
	}

	if (alive_wanted() && now >= w.next_alive)
	{
		voipbin_guarded(note_alive, NULL, "recording that the worker is connected");
		w.next_alive = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ALIVE_EVERY_MS);
	}

	/* gap repair: after the live stream, never in its way */
	{
		long		repair_ms = gaps_step();

		if (repair_ms >= 0 && (timeout < 0 || repair_ms < timeout))
			timeout = repair_ms;
	}

	/*
	 * The worker's inserts must reach the statistics promptly, or autovacuum
	 * does not see them.  pgstat_report_stat(false) flushes at most once a
	 * second, judging the second by the end of the last transaction: called
	 * again while idle, it would wait for the next transaction (the next
	 * prune, a minute on).  So what it holds back is flushed by force a
	 * second later.
	 */
	if (w.stats_due != 0 && now >= w.stats_due)
	{
		pgstat_report_stat(true);
		w.stats_due = 0;
	}
	else if (pgstat_report_stat(false) > 0 && w.stats_due == 0)
		w.stats_due = TimestampTzPlusMilliseconds(now, 1000);

	/* how long until something is due */
#define CONSIDER(t) do { long ms_ = ms_until(now, (t)); if (timeout < 0 || ms_ < timeout) timeout = ms_; } while (0)
	CONSIDER(w.next_prune);
	if (alive_wanted())
		CONSIDER(w.next_alive);
	if (w.cred && w.conn == 0)
		CONSIDER(w.next_attempt);
	if (w.state == VB_STATE_CONNECTING)
		CONSIDER(w.connect_deadline);
	if (more_frames)
		CONSIDER(w.store_retry_at ? w.store_retry_at : now);
	if (w.subs_dirty && w.state == VB_STATE_CONNECTED)
		CONSIDER(now);
	if (w.stats_due != 0)
		CONSIDER(w.stats_due);
	if ((webhook_ms = webhook_worker_step()) >= 0)
		CONSIDER(TimestampTzPlusMilliseconds(now, webhook_ms));
#undef CONSIDER
	return timeout;
}

/* voipbin.spool_directory, a relative one under the data directory. */
static char *
journal_directory(void)
{
	const char *d = voipbin_spool_directory && voipbin_spool_directory[0] ?
		voipbin_spool_directory : "voipbin_journal";

	return is_absolute_path(d) ? pstrdup(d) : psprintf("%s/%s", DataDir, d);
}

void
voipbin_worker_main(Datum arg)
{
	sigjmp_buf	local_sigjmp_buf;
	char		errbuf[512];
	int			wake_fd;
	WaitEventSet *wes;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* what status shows should the role be refused: InitPostgres exits FATAL */
	if (voipbin_worker_role[0])
		voipbin_set_state(VB_STATE_DISABLED,
						  psprintf("the worker could not connect to database \"%s\" as voipbin.worker_role \"%s\"; see the server log",
								   voipbin_database, voipbin_worker_role));
	BackgroundWorkerInitializeConnection(voipbin_database,
										 voipbin_worker_role[0] ? voipbin_worker_role : NULL, 0);
	if (voipbin_worker_role[0])
		voipbin_set_error("");
	pgstat_report_appname("voipbin worker");

	/*
	 * pg_catalog first, whatever ALTER DATABASE or ALTER ROLE put in
	 * search_path: the worker's SQL names its tables by schema, and so always
	 * means the built-in functions and operators.  The rest stays, for the
	 * triggers and handlers it fires.
	 */
	{
		const char *path = GetConfigOption("search_path", false, false);

		SetConfigOption("search_path",
						path && path[0] ? psprintf("pg_catalog, %s", path) : "pg_catalog",
						PGC_USERSET, PGC_S_SESSION);
	}

	/*
	 * No JIT: the batch statement is planned once and run thousands of
	 * times; compiling it would cost milliseconds of latency per batch, and
	 * loading LLVM some 8 MB of the worker's memory budget.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);

	/*
	 * Freed memory kept for the next batch.  glibc gives the heap's free top
	 * back once it passes twice the mmap threshold (which it raises as it
	 * goes, 16 MB at most in practice); a batch of 2,000 events allocates and
	 * frees more than that (frames, rows, notifications), so each batch
	 * page-faulted all of it in again.  Kept, it is never more than the
	 * largest batch's, which the peak includes anyway.
	 */
	mallopt(M_MMAP_THRESHOLD, 16 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);

	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = MyProcPid;
	voipbin_shared->worker_latch = MyLatch;
	SpinLockRelease(&voipbin_shared->mutex);
	before_shmem_exit(worker_exit, (Datum) 0);

	/* the journal first: the network thread appends to it from its first frame */
	if (!journal_open(journal_directory(), (uint64) voipbin_spool_limit_kb * 1024,
					  cache_bytes_for(buffer_limit_bytes()), enableFsync,
					  errbuf, sizeof(errbuf)))
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
	wake_fd = ws_start(errbuf, sizeof(errbuf));
	if (wake_fd < 0)
		ereport(FATAL, (errmsg("voipbin: %s", errbuf)));

	wes = CreateWaitEventSet(TopMemoryContext, 6);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, wake_fd, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, journal_wake_fd(), NULL, NULL);
	if (repair_wait_fd() >= 0)
		AddWaitEventToSet(wes, WL_SOCKET_READABLE, repair_wait_fd(), NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, webhook_worker_start(), NULL, NULL);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "voipbin worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	memset(&w, 0, sizeof(w));
	w.state = VB_STATE_DISABLED;
	w.subs_dirty = true;
	load_config();
	set_state(VB_STATE_DISABLED, w.cred ? NULL : disabled_reason());
	ereport(LOG, (errmsg("voipbin: worker started for database \"%s\"", voipbin_database)));

	/*
	 * An ERROR raised outside the steps' own handlers (a cancel at the
	 * CHECK_FOR_INTERRUPTS() below) is reported and the loop goes on: without
	 * this it would become FATAL and restart the worker.
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
		WaitEvent	event;
		long		timeout;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		timeout = step();

		(void) WaitEventSetWait(wes, timeout, &event, 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		ws_ack_wakeup();
		journal_ack_wakeup();
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			MemoryContextSwitchTo(loop_cxt);
			w.next_prune = 0;	/* a new retention or partition interval applies at once */
			webhook_worker_reload();
			if (load_config())
			{
				elog(LOG, "voipbin: credential, URL or CA changed, reconnecting");
				drop_connection();
				gaps_config_changed();
				w.next_attempt = 0;
				w.failures = 0;
				log_failure_run_end();
				set_state(w.cred ? VB_STATE_BACKOFF : VB_STATE_DISABLED,
						  w.cred ? "" : disabled_reason());
			}
		}
	}
}
