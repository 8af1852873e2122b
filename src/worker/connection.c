/*
 * connection.c — the worker's connection to VoIPBIN.  The network thread
 * (net/ws/ws_client.c) connects, reads and sends; this decides when:
 *
 *   disabled     no credential, or one the worker will not use: until a reload
 *   connecting   a handshake under way, given up after HANDSHAKE_GIVE_UP_MS
 *   connected    until the network thread's news says it closed
 *   backoff      waiting, exponentially and with jitter, to try again
 *   unauthorized VoIPBIN refused the credential: waiting for a reload
 *   standby      the server is a standby, which stores nothing
 *
 * How a failure is worded and logged is connection_failure.c's.
 */
#include "voipbin.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker/connection.h"
#include "base/backoff.h"
#include "base/endpoint.h"
#include "base/guard.h"
#include "base/rest.h"
#include "base/settings.h"
#include "base/status.h"
#include "base/time.h"
#include "net/http/http_client.h"
#include "net/ws/ws_client.h"
#include "repair/gaps.h"
#include "worker/activity.h"
#include "worker/connection_failure.h"
#include "worker/intake.h"
#include "worker/subscriptions.h"

#define HANDSHAKE_TIMEOUT_MS 10000
/* the network thread names a handshake timeout itself; this is the backstop */
#define HANDSHAKE_GIVE_UP_MS (HANDSHAKE_TIMEOUT_MS + 2000)

typedef struct Connection
{
	VoipbinState state;
	uint32_t	conn;			/* current connection number, 0 for none */
	bool		ever_connected;
	bool		fresh;			/* connected since connection_take_fresh() asked */
	TimestampTz next_attempt;	/* backoff / unauthorized: when to try again */
	TimestampTz connect_deadline;
	int			failures;		/* consecutive, for the backoff */

	/* the configuration the current connection was made with */
	char	   *cred;
	CredentialKind cred_kind;
	char	   *api_url;
	char	   *ca_file;
	char	   *config_error;
} Connection;

static Connection c;

static void
set_state(VoipbinState state, const char *error)
{
	char	   *safe = error ? redact_secret(error, c.cred) : NULL;

	c.state = state;
	voipbin_set_state(state, safe);
	voipbin_set_attempts(c.failures,
						 state == VB_STATE_BACKOFF || state == VB_STATE_UNAUTHORIZED ?
						 c.next_attempt : 0);
	activity_context(state, subs_live_count());
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
		http_wipe(cred);
		pfree(cred);
		cred = NULL;
		kind = CRED_NONE;
	}

	changed = str_changed(cred, c.cred) ||
		str_changed(voipbin_api_url, c.api_url) ||
		str_changed(voipbin_ca_file, c.ca_file) ||
		str_changed(error, c.config_error);
	if (c.cred)
	{
		http_wipe(c.cred);
		pfree(c.cred);
	}
	if (c.api_url)
		pfree(c.api_url);
	if (c.ca_file)
		pfree(c.ca_file);
	if (c.config_error)
		pfree(c.config_error);
	c.cred = cred;
	c.cred_kind = kind;
	c.api_url = pstrdup(voipbin_api_url ? voipbin_api_url : "");
	c.ca_file = pstrdup(voipbin_ca_file ? voipbin_ca_file : "");
	c.config_error = error;
	MemoryContextSwitchTo(old);
	return changed;
}

static const char *
disabled_reason(void)
{
	return c.config_error ? c.config_error :
		"no credential: set voipbin.token or voipbin.token_file";
}

static void
drop_connection(void)
{
	if (c.state == VB_STATE_CONNECTED)
		gaps_connection_lost(GetCurrentTimestamp(), false, 0);
	if (c.conn != 0)
		ws_disconnect();
	c.conn = 0;
	subs_reset();
}

static void
start_connection(void)
{
	Endpoint	ep;
	const char *error;
	WsTarget	t;
	char	   *path;

	if (!endpoint_parse(c.api_url, &ep, &error))
	{
		set_state(VB_STATE_DISABLED, error);
		return;
	}
	if (c.cred_kind == CRED_ACCESSKEY)
	{
		char	   *key = rest_query_escape(c.cred);

		path = psprintf("%s/ws?accesskey=%s", ep.base_path, key);
		http_wipe(key);
		pfree(key);
	}
	else
		path = psprintf("%s/ws", ep.base_path);

	memset(&t, 0, sizeof(t));
	t.host = ep.host;
	t.port = ep.port;
	t.path = path;
	t.tls = ep.tls;
	t.bearer = c.cred_kind == CRED_JWT ? c.cred : NULL;
	t.ca_file = c.ca_file[0] ? c.ca_file : NULL;
	t.idle_timeout_s = voipbin_idle_timeout_s;
	t.handshake_timeout_s = HANDSHAKE_TIMEOUT_MS / 1000;

	subs_reset();
	c.conn = ws_connect(&t);
	http_wipe(path);
	c.connect_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HANDSHAKE_GIVE_UP_MS);
	elog(DEBUG1, "voipbin: connecting to %s://%s:%d%s/ws",
		 ep.tls ? "wss" : "ws", ep.host, ep.port, ep.base_path);
	set_state(VB_STATE_CONNECTING, NULL);
}

/* Doubling from the first delay setting to the second, plus up to half again. */
static int
backoff_ms(void)
{
	return (int) backoff_delay_ms(voipbin_reconnect_min_delay_ms,
								  voipbin_reconnect_max_delay_ms, c.failures, 0.5);
}

/*
 * An attempt failed, or a connection ended: says why in last_error and the
 * log, and schedules the next attempt.
 */
static void
connection_failed(const WsNews *ev, const char *why)
{
	FailedAttempt f;

	c.conn = 0;
	subs_reset();
	c.failures++;
	f = connection_failure_words(ev ? ev->http_status : 0, ev ? ev->answer : NULL,
								 why ? why : ev && ev->data ? ev->data : "connection failed",
								 backoff_ms(), voipbin_reconnect_max_delay_ms);
	c.next_attempt = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), f.delay_ms);
	connection_failure_log(f.key, f.line, c.cred);
	set_state(f.unauthorized ? VB_STATE_UNAUTHORIZED : VB_STATE_BACKOFF, f.message);
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
on_news(WsNews *ev)
{
	if (ev->conn != c.conn || c.conn == 0)
	{
		ws_news_free(ev);		/* news of a connection already given up */
		return;
	}
	switch (ev->kind)
	{
		case WS_NEWS_CONNECTED:
			if (c.ever_connected)
				pg_atomic_fetch_add_u64(&voipbin_shared->reconnects, 1);
			c.ever_connected = true;
			connection_failure_run_end(c.cred);
			if (c.failures > 0)
				ereport(LOG, (errmsg_plural("voipbin: connected after %d failed attempt",
											"voipbin: connected after %d failed attempts",
											c.failures, c.failures)));
			else
				ereport(LOG, (errmsg("voipbin: connected")));
			c.failures = 0;
			c.fresh = true;
			set_state(VB_STATE_CONNECTED, intake_journal_problem() ? intake_journal_problem() : "");
			ws_news_free(ev);
			break;
		case WS_NEWS_CLOSED:
			if (c.state == VB_STATE_CONNECTED)
			{
				gaps_connection_lost(time_from_unix_us(ev->at_us), ev->cause == WS_CAUSE_IDLE,
									 ev->quiet_since_us ? time_from_unix_us(ev->quiet_since_us) : 0);
				topics_dropped(time_from_unix_us(ev->at_us), ev->data);
			}
			connection_failed(ev, NULL);
			ws_news_free(ev);
			break;
	}
}

void
connection_take_news(void)
{
	for (WsNews *ev = ws_take(); ev;)
	{
		WsNews	   *next = ev->next;

		on_news(ev);
		ev = next;
	}
}

void
connection_init(void)
{
	memset(&c, 0, sizeof(c));
	c.state = VB_STATE_DISABLED;
	load_config();
	set_state(VB_STATE_DISABLED, c.cred ? NULL : disabled_reason());
}

void
connection_standby(void)
{
	if (c.state != VB_STATE_STANDBY)
	{
		drop_connection();
		set_state(VB_STATE_STANDBY, NULL);
	}
}

void
connection_promoted(void)
{
	if (c.state == VB_STATE_STANDBY)
	{
		elog(LOG, "voipbin: the server was promoted, connecting");
		c.state = VB_STATE_DISABLED;
		c.next_attempt = 0;
	}
}

void
connection_step(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (pg_atomic_exchange_u32(&voipbin_shared->reconnect_requested, 0))
	{
		drop_connection();
		c.next_attempt = 0;
		c.failures = 0;
		connection_failure_run_end(c.cred);	/* what fails after this is news */
		if (c.cred)
			set_state(VB_STATE_BACKOFF, NULL);
	}

	if (c.cred == NULL)
	{
		if (c.state != VB_STATE_DISABLED)
		{
			drop_connection();
			set_state(VB_STATE_DISABLED, disabled_reason());
		}
	}
	else if (c.conn == 0 && now >= c.next_attempt)
		start_connection();
	else if (c.state == VB_STATE_CONNECTING && now >= c.connect_deadline)
	{
		const char *stage = ws_attempt_stage();

		ws_disconnect();
		connection_failed(NULL, psprintf("the connection was not established within %d s%s%s%s",
										 HANDSHAKE_GIVE_UP_MS / 1000, stage ? " (still " : "",
										 stage ? stage : "", stage ? ")" : ""));
	}
}

void
connection_reloaded(void)
{
	if (!load_config())
		return;
	elog(LOG, "voipbin: credential, URL or CA changed, reconnecting");
	drop_connection();
	gaps_config_changed();
	c.next_attempt = 0;
	c.failures = 0;
	connection_failure_run_end(c.cred);
	set_state(c.cred ? VB_STATE_BACKOFF : VB_STATE_DISABLED,
			  c.cred ? "" : disabled_reason());
}

TimestampTz
connection_due(void)
{
	TimestampTz due = DT_NOEND;

	if (c.cred && c.conn == 0)
		due = c.next_attempt;
	if (c.state == VB_STATE_CONNECTING)
		due = Min(due, c.connect_deadline);
	return due;
}

VoipbinState
connection_state(void)
{
	return c.state;
}

bool
connection_take_fresh(void)
{
	bool		fresh = c.fresh;

	c.fresh = false;
	return fresh;
}
