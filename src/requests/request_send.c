/*
 * request_send.c — the requests' lane (request_send.h).
 *
 * A request that must not be repeated goes on a fresh connection, closed
 * after: libcurl resends a request by itself when a reused connection turns
 * out to have died, which would do it twice.  A transcription's start may
 * take VoIPBIN a minute (it waits for the speech service), so its attempt
 * waits longer than others.
 */
#include "voipbin.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "requests/request_send.h"
#include "base/endpoint.h"
#include "base/loop_http.h"
#include "base/settings.h"
#include "net/http/http_client.h"

#define REQUEST_USER_AGENT		"voipbin-postgres/1.2 (requests)"
#define REQUEST_TIMEOUT_MS		20000
#define TRANSCRIBE_TIMEOUT_MS	65000
#define RECONFIGURE_EVERY_MS	60000

static LhLane *lane = NULL;
static bool configured = false;
static bool stale = true;
static TimestampTz configured_at = 0;
static char *last_problem = NULL;	/* logged once; TopMemoryContext */
static bool in_use = false;		/* transfers since the lane was last idle */

static LhLane *
request_lane(void)
{
	if (lane == NULL)
		lane = lh_lane_create(REQUEST_USER_AGENT, &voipbin_request_rate, REQUEST_MAX_RUNNING,
							  LH_429_RESULT);
	return lane;
}

/* Says once why requests are not sent; NULL: they are sent (again). */
static void
note_problem(const char *why)
{
	if (why != NULL && last_problem != NULL && strcmp(last_problem, why) == 0)
		return;
	if (why != NULL)
		ereport(LOG,
				(errmsg("voipbin: queued requests are not sent: %s", why),
				 errhint("They stay queued until the worker has a credential and a valid voipbin.api_url (then reload).")));
	else if (last_problem != NULL)
		ereport(LOG, (errmsg("voipbin: queued requests are sent again")));
	if (last_problem)
		pfree(last_problem);
	last_problem = why ? MemoryContextStrdup(TopMemoryContext, why) : NULL;
}

static void
configure(void)
{
	CredentialKind kind;
	char	   *cred_error = NULL;
	char	   *cred = credential_load(&kind, &cred_error);
	const char *error = NULL;
	Endpoint	ep;

	configured = false;
	if (cred == NULL)
	{
		note_problem(cred_error ? cred_error : "there is no credential (voipbin.token_file or voipbin.token)");
		return;
	}
	if (!endpoint_parse(voipbin_api_url ? voipbin_api_url : "", &ep, &error) ||
		!lh_configure(request_lane(), voipbin_api_url, cred, kind, voipbin_ca_file, &error))
	{
		http_wipe(cred);
		note_problem(error);
		return;
	}
	http_wipe(cred);
	configured = true;
	note_problem(NULL);
}

bool
request_send_ready(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (stale || now >= TimestampTzPlusMilliseconds(configured_at, RECONFIGURE_EVERY_MS))
	{
		/* never while a request is in flight: lh_configure() drops them */
		if (lh_outstanding(request_lane()) == 0)
		{
			stale = false;
			configured_at = now;
			configure();
		}
		else if (stale)
			return false;		/* after a reload, nothing more to the old target: it drains */
	}
	return configured;
}

void
request_send_reloaded(void)
{
	stale = true;
}

int
request_send_capacity(long ahead_ms)
{
	return configured ? lh_capacity(request_lane(), ahead_ms) : 0;
}

void
request_send_submit(RequestRow *row)
{
	LhSend		s = {0};

	s.method = row->method;
	s.path = row->path;
	/* a GET has no body; '{}' is what voipbin_request() gives it by default */
	if (row->body && strcmp(row->method, "GET") != 0)
	{
		s.body = row->body;
		s.body_len = strlen(row->body);
	}
	s.timeout_ms = row->kind == REQ_TRANSCRIBE_START ? TRANSCRIBE_TIMEOUT_MS : REQUEST_TIMEOUT_MS;
	s.fresh_connection = row->kind != REQ_SAFE;
	s.tag = row;
	lh_submit(request_lane(), &s);
	in_use = true;
}

long
request_send_step(void)
{
	long		timeout = lh_step(request_lane());

	/* idle again: the connections kept for reuse go (unless gap repair's lane uses them) */
	if (in_use && lh_outstanding(request_lane()) == 0)
	{
		in_use = false;
		lh_close_idle();
	}
	return timeout;
}

LhResult *
request_send_take(void)
{
	return lh_take(request_lane());
}

long
request_send_next_ms(void)
{
	if (lh_outstanding(request_lane()) >= REQUEST_MAX_RUNNING)
		return -1;
	return lh_next_start_ms(request_lane());
}
