/*
 * request_rules.h — what a queued request is, and what an answer to it
 * means: the rules that keep the outbox from doing anything twice.
 *
 * VoIPBIN has no idempotency key, and some of its answers leave open whether
 * it acted (docs/requests.md, "What VoIPBIN's answers mean").  So every
 * request is classified before it is sent, and every outcome of an attempt
 * is read through that class: done, failed, try again (only when repeating
 * cannot do the thing twice), or unknown (never sent again).
 *
 * Pure: no PostgreSQL, no I/O (tested in test/c, fuzzed in test/fuzz).
 */
#ifndef VOIPBIN_REQUEST_RULES_H
#define VOIPBIN_REQUEST_RULES_H

#include <stdbool.h>
#include <stddef.h>

/* How a request may be repeated. */
typedef enum RequestKind
{
	REQ_UNSAFE,					/* a repeat may act twice: POST /calls, /messages, talk, unknown paths */
	REQ_SAFE,					/* a repeat is harmless: GET, hangup, the stops, hold/mute/moh/silence */
	REQ_TRANSCRIBE_START		/* a create, but a repeat is refused with 409 TRANSCRIBE_ALREADY_PROGRESSING */
} RequestKind;

/* What one attempt came to. */
typedef enum AttemptTransport
{
	ATTEMPT_ANSWERED,			/* an HTTP status came back */
	ATTEMPT_NOT_SENT,			/* no request byte left: DNS, connect or TLS failed */
	ATTEMPT_NO_ANSWER			/* sent (maybe in part), then no answer: timeout, reset */
} AttemptTransport;

typedef enum RequestVerdict
{
	VERDICT_DONE,
	VERDICT_FAILED,				/* VoIPBIN said no: nothing happened */
	VERDICT_RETRY,				/* send again after a pause (if time is left) */
	VERDICT_UNKNOWN				/* it may have happened: never send again */
} RequestVerdict;

/* The class of method + path (path relative to voipbin.api_url, query allowed). */
extern RequestKind request_kind(const char *method, const char *path);

/*
 * Whether method and path may be queued at all: NULL when they may, else
 * why not (a static English sentence, for errmsg's detail).
 */
extern const char *request_path_problem(const char *path);
extern bool request_method_known(const char *method);

/*
 * The verdict on one attempt.  status is the HTTP status (ATTEMPT_ANSWERED
 * only); reason is VoIPBIN's error envelope's "reason" or NULL; enveloped
 * says whether the body was VoIPBIN's {"error": {...}} (a bare 5xx without it
 * came from a proxy in front).
 */
extern RequestVerdict request_verdict(RequestKind kind, const char *method, const char *path,
									  AttemptTransport transport, int status,
									  const char *reason, bool enveloped);

/*
 * How long to wait before attempt number attempts + 1 (attempts >= 1), in
 * ms: 1 s doubling to 60 s, or Retry-After when VoIPBIN gave one (capped at
 * 300 s).
 */
extern long request_backoff_ms(int attempts, long retry_after_s);

/*
 * The state a request ends in when voipbin.request_retry_timeout runs out
 * after an attempt judged VERDICT_RETRY: FAILED when that attempt provably
 * never reached VoIPBIN (not sent, or a 429), UNKNOWN otherwise.
 */
extern RequestVerdict request_give_up(AttemptTransport last_transport, int last_status);

#endif
