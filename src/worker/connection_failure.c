/*
 * connection_failure.c — how a failed attempt to connect is worded and
 * logged.  A refused handshake is said in the words of the REST functions
 * (base/rest.c); a Retry-After is honoured; the same failure again and again
 * (an outage of hours) costs the log a line per ten minutes.
 *
 * Wording is pure but for answer_detail(), which parses VoIPBIN's answer;
 * the log's rate limiting keeps the run of failures here.
 */
#include "voipbin.h"

#include "pgtime.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker/connection_failure.h"
#include "base/endpoint.h"
#include "base/rest.h"

/* the same failure again is logged at LOG this often, with its count */
#define FAILURE_LOG_EVERY_MS (10 * 60 * 1000)
/* a Retry-After longer than this is not waited for in full */
#define RETRY_AFTER_MAX_S 3600

/*
 * The run of failures with the same cause (their message without what
 * changes on each, such as a request id): how many, since when, and how
 * many had been counted when it was last logged at LOG.
 */
static struct
{
	char	   *key;
	int			repeats;
	int			logged_repeats;
	TimestampTz since;
	TimestampTz logged_at;
} run;

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
 * A refused handshake in the words of the REST functions (base/rest.c):
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

FailedAttempt
connection_failure_words(int http_status, const WsHttpAnswer *answer, const char *why,
						 int backoff_ms, int unauthorized_ms)
{
	FailedAttempt f = {0};
	long		retry_after = -1;

	if (http_status > 0)
	{
		describe_http_refusal(http_status, answer, &f.message, &f.key);
		if (http_status == 429 && answer)
			retry_after = retry_after_seconds(answer->retry_after);
	}
	else
		f.message = f.key = pstrdup(why);

	f.unauthorized = http_status == 401;
	if (f.unauthorized)
	{
		f.delay_ms = unauthorized_ms;
		f.message = psprintf("%s; waiting for a reload or %d s", f.message, f.delay_ms / 1000);
		f.line = f.message;
	}
	else
	{
		f.delay_ms = backoff_ms;
		if (retry_after >= 0)
		{
			/* VoIPBIN said when: not sooner than that */
			f.message = psprintf("%s; Retry-After: %ld s", f.message, retry_after);
			f.delay_ms = Max(f.delay_ms, (int) (retry_after * 1000));
		}
		f.line = psprintf("reconnect in %.1f s because %s", f.delay_ms / 1000.0, f.message);
	}
	return f;
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

void
connection_failure_run_end(const char *secret)
{
	if (run.key && run.repeats > run.logged_repeats)
		ereport(LOG, (errmsg("voipbin: %s (failed %d times since %s)",
							 redact_secret(run.key, secret), run.repeats,
							 clock_time(run.since))));
	if (run.key)
		pfree(run.key);
	run.key = NULL;
	run.repeats = run.logged_repeats = 0;
}

/*
 * At LOG when its cause (key) differs from the one before, and every
 * FAILURE_LOG_EVERY_MS of the same with a count; each one at DEBUG1.
 */
void
connection_failure_log(const char *key, const char *line, const char *secret)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *safe = redact_secret(line, secret);

	if (run.key && strcmp(run.key, key) == 0)
	{
		run.repeats++;
		if (now - run.logged_at >= (TimestampTz) FAILURE_LOG_EVERY_MS * 1000)
		{
			ereport(LOG, (errmsg("voipbin: %s (failed %d times since %s)", safe,
								 run.repeats, clock_time(run.since))));
			run.logged_at = now;
			run.logged_repeats = run.repeats;
		}
		else
			ereport(DEBUG1, (errmsg("voipbin: %s", safe)));
		return;
	}
	connection_failure_run_end(secret);
	run.key = MemoryContextStrdup(TopMemoryContext, key);
	run.repeats = run.logged_repeats = 1;
	run.since = run.logged_at = now;
	ereport(LOG, (errmsg("voipbin: %s", safe)));
}
