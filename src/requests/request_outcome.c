/*
 * request_outcome.c — an attempt's answer read through request_rules.c and
 * written on its row (request_outcome.h).
 *
 * What a row keeps of the last attempt: status (the HTTP status, NULL
 * without an answer), response (the answer when it is JSON, else NULL),
 * error (VoIPBIN's reason and message; the start of an answer that is not
 * JSON; or why no answer came: never the credential, which the engine
 * redacts, nor a URL's query, which libcurl's messages do not name) and
 * request_id (X-Request-Id, for VoIPBIN's support).
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "requests/request_outcome.h"
#include "base/db.h"
#include "base/rest.h"
#include "base/settings.h"
#include "base/status.h"

#define NOT_JSON_KEPT 200		/* bytes of an answer that is not JSON kept in error */
#define NOTIFY_CHANNEL "voipbin_requests"

/* What the answer's body says, as far as the verdict and the row need it. */
typedef struct Answer
{
	const LhResult *r;
	Jsonb	   *json;			/* NULL: empty, or not JSON */
	bool		enveloped;		/* VoIPBIN's {"error": {...}} */
	char	   *reason;
	char	   *message;
} Answer;

/* Run in a subtransaction: jsonb_in can still refuse what the JSON parser passed (a huge number). */
static void
parse_answer(void *arg)
{
	Answer	   *a = arg;
	char	   *why;
	JsonbValue	e;

	a->json = rest_text_to_jsonb(a->r->body, a->r->len, &why);
	if (a->json == NULL || !JB_ROOT_IS_OBJECT(a->json))
		return;
	if (getKeyJsonValueFromContainer(&a->json->root, "error", 5, &e) &&
		e.type == jbvBinary && JsonContainerIsObject(e.val.binary.data))
	{
		a->enveloped = true;
		a->reason = rest_string_field(e.val.binary.data, "reason");
		a->message = rest_string_field(e.val.binary.data, "message");
	}
}

/* The start of an answer that is not JSON, as text any database can hold. */
static char *
not_json_text(const LhResult *r)
{
	int			n = (int) Min(r->len, (size_t) NOT_JSON_KEPT);
	int			valid = pg_encoding_verifymbstr(PG_UTF8, r->body, n);
	char	   *kept;

	/* the longest valid UTF-8 (a character cut at NOT_JSON_KEPT is dropped); ASCII unless UTF-8 is the database's */
	if (GetDatabaseEncoding() != PG_UTF8)
	{
		int			ascii = 0;

		while (ascii < valid && !IS_HIGHBIT_SET(r->body[ascii]))
			ascii++;
		valid = ascii;
	}
	if (valid == 0)
		return psprintf("HTTP %ld: an answer that is not JSON (%zu bytes, not text)", r->status, r->len);
	kept = pnstrdup(r->body, valid);
	return psprintf("HTTP %ld: an answer that is not JSON: %s%s", r->status, kept,
					r->len > (size_t) valid ? "..." : "");
}

/* The row's error for this attempt, or NULL. */
static char *
error_text(const Answer *a, RequestVerdict verdict)
{
	const LhResult *r = a->r;
	StringInfoData s;

	if (r->status == 0)
		return pstrdup(r->error[0] ? r->error : "no answer");
	if (r->len > 0 && a->json == NULL)
		return not_json_text(r);
	if (verdict == VERDICT_DONE)
		return NULL;
	initStringInfo(&s);
	appendStringInfo(&s, "HTTP %ld", r->status);
	if (a->reason)
		appendStringInfo(&s, ", reason: %s", a->reason);
	if (a->message)
		appendStringInfo(&s, ", message: %s", a->message);
	return s.data;
}

static const char *
state_of(RequestVerdict v)
{
	switch (v)
	{
		case VERDICT_DONE:
			return "done";
		case VERDICT_FAILED:
			return "failed";
		case VERDICT_UNKNOWN:
			return "unknown";
		case VERDICT_RETRY:
			break;
	}
	return "queued";
}

/* The notification of a finished request: {"id": …, "state": "…", "status": … or null}. */
static void
notify_finished(int64 id, RequestVerdict final, int status)
{
	char	   *payload;

	if (status > 0)
		payload = psprintf("{\"id\": " INT64_FORMAT ", \"state\": \"%s\", \"status\": %d}",
						   id, state_of(final), status);
	else
		payload = psprintf("{\"id\": " INT64_FORMAT ", \"state\": \"%s\", \"status\": null}",
						   id, state_of(final));
	Async_Notify(NOTIFY_CHANNEL, payload);
}

/*
 * One UPDATE of the row it claimed (still 'sending': a row a user changed
 * meanwhile is theirs).  next_attempt_at: queued again then; 0: finished.
 */
static void
write_row(const char *schema, int64 id, RequestVerdict v, int status, Jsonb *response,
		  const char *error, const char *request_id, TimestampTz next_attempt_at)
{
	Oid			types[7] = {INT8OID, TEXTOID, INT4OID, JSONBOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(state_of(v));
	values[2] = Int32GetDatum(status);
	nulls[2] = status > 0 ? ' ' : 'n';
	values[3] = response ? JsonbPGetDatum(response) : (Datum) 0;
	nulls[3] = response ? ' ' : 'n';
	values[4] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[4] = error ? ' ' : 'n';
	values[5] = request_id ? CStringGetTextDatum(request_id) : (Datum) 0;
	nulls[5] = request_id ? ' ' : 'n';
	values[6] = TimestampTzGetDatum(next_attempt_at);
	nulls[6] = next_attempt_at != 0 ? ' ' : 'n';
	rc = SPI_execute_with_args(psprintf("UPDATE %s.voipbin_requests "
										"SET state = $2, status = $3, response = $4, error = $5, "
										"request_id = coalesce($6, request_id), "
										"next_attempt_at = coalesce($7, next_attempt_at), "
										"finished_at = CASE WHEN $7 IS NULL THEN now() END "
										"WHERE id = $1 AND state = 'sending'", schema),
							   7, types, values, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "voipbin: recording the outcome of request " INT64_FORMAT ": %s",
			 id, SPI_result_code_string(rc));
	if (SPI_processed == 1 && v != VERDICT_RETRY)
		notify_finished(id, v, status);
}

void
request_outcome_finish(const char *schema, int64 id, RequestVerdict final, int status,
					   const char *error)
{
	write_row(schema, id, final, status, NULL, error, NULL, 0);
}

static AttemptTransport
transport_of(const LhResult *r)
{
	if (r->status > 0)
		return ATTEMPT_ANSWERED;
	return r->sent ? ATTEMPT_NO_ANSWER : ATTEMPT_NOT_SENT;
}

RequestVerdict
request_outcome_record(const char *schema, const RequestRow *row, const LhResult *r)
{
	Answer		a = {0};
	AttemptTransport transport = transport_of(r);
	RequestVerdict v;
	char	   *error;
	TimestampTz next = 0;
	ErrorData  *edata;

	a.r = r;
	if (r->status > 0 && r->body && r->len > 0 && (edata = db_try(parse_answer, &a)) != NULL)
	{
		/* JSON PostgreSQL cannot hold: kept as text, like any other */
		FreeErrorData(edata);
		a.json = NULL;
		a.enveloped = false;
		a.reason = a.message = NULL;
	}
	v = request_verdict(row->kind, row->method, row->path, transport, (int) r->status,
						a.reason, a.enveloped);
	error = error_text(&a, v);
	if (v == VERDICT_RETRY)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz deadline = TimestampTzPlusMilliseconds(row->created_at,
														   (int64) voipbin_request_retry_timeout_s * 1000);
		long		wait_ms = request_backoff_ms(row->attempts, r->has_retry_after ? r->retry_after_s : 0);

		if (now >= deadline)
		{
			v = request_give_up(transport, (int) r->status);
			error = psprintf("given up after %d attempts (voipbin.request_retry_timeout): %s",
							 row->attempts, error ? error : "no success");
		}
		else
			next = Min(TimestampTzPlusMilliseconds(now, wait_ms), deadline);
	}
	write_row(schema, row->id, v, (int) r->status, a.json, error, r->request_id, next);
	return v;
}

void
request_outcome_count(RequestVerdict final)
{
	if (final == VERDICT_DONE)
		pg_atomic_fetch_add_u64(&voipbin_shared->requests_done, 1);
	else if (final == VERDICT_FAILED)
		pg_atomic_fetch_add_u64(&voipbin_shared->requests_failed, 1);
	else if (final == VERDICT_UNKNOWN)
		pg_atomic_fetch_add_u64(&voipbin_shared->requests_unknown, 1);
}
