/*
 * connection_failure.h — how a failed attempt to connect is worded, and how
 * often the same failure is logged.
 */
#ifndef VOIPBIN_WORKER_CONNECTION_FAILURE_H
#define VOIPBIN_WORKER_CONNECTION_FAILURE_H

#include "postgres.h"

#include "net/ws/ws_client.h"

/* A failed attempt in words, and when to try again. */
typedef struct FailedAttempt
{
	char	   *message;		/* for last_error: what failed, and the wait */
	char	   *key;			/* its cause: the message without what differs each time */
	char	   *line;			/* for the log: "reconnect in 1.2 s because ..." */
	int			delay_ms;		/* until the next attempt */
	bool		unauthorized;	/* the credential was refused: wait for a reload */
} FailedAttempt;

/*
 * Words a failed attempt: refused with an HTTP status (answer: VoIPBIN's
 * answer, or NULL), or failed for why.  backoff_ms: the delay the backoff
 * gives, unauthorized_ms: the one after a refused credential.
 */
extern FailedAttempt connection_failure_words(int http_status, const WsHttpAnswer *answer,
											  const char *why, int backoff_ms,
											  int unauthorized_ms);

/* Logs a failed attempt, the same cause again only now and then; secret is redacted. */
extern void connection_failure_log(const char *key, const char *line, const char *secret);

/* Ends a run of identical failures (it connected, or a new start): logs its count. */
extern void connection_failure_run_end(const char *secret);

#endif
