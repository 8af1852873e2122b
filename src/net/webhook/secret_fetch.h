/*
 * secret_fetch.h — GET /customer on a thread of its own, for the webhook
 * secret.
 *
 * The worker's main thread must never wait on VoIPBIN, so the request runs
 * here with libcurl and the answer's raw bytes go back to the main thread,
 * which reads webhook_secret out of them with PostgreSQL's JSON parser.
 * One request at a time.  No PostgreSQL here.
 */
#ifndef VOIPBIN_SECRET_FETCH_H
#define VOIPBIN_SECRET_FETCH_H

#include <stdbool.h>
#include <stddef.h>

typedef struct SecretFetchResult
{
	long		http_status;	/* 0: no answer (see error) */
	char	   *body;			/* malloc'd, NUL-terminated; free with secret_fetch_free() */
	size_t		len;
	char		error[256];		/* the transport error; never holds the credential */
} SecretFetchResult;

/*
 * Starts GET url (e.g. https://api.voipbin.net/v1.0/customer) with the
 * access key as ?accesskey= or else the JWT as a Bearer token; ca_file (or
 * NULL) is trusted besides the system's CAs.  wake() is called from the
 * thread when the result is ready.  False when a request is still running.
 */
extern bool secret_fetch_start(const char *url, const char *accesskey, const char *bearer,
							   const char *ca_file, long timeout_ms, void (*wake) (void));

/* True, with *out filled, once the request has ended; the thread is joined. */
extern bool secret_fetch_result(SecretFetchResult *out);

extern bool secret_fetch_running(void);

/* Aborts a running request and joins its thread. */
extern void secret_fetch_stop(void);

/* Wipes and frees the body. */
extern void secret_fetch_free(SecretFetchResult *r);

#endif
