/*
 * http_client.h — what the three REST clients share about libcurl: one
 * global initialisation, one way to set an easy handle up for VoIPBIN (URL,
 * credential, TLS, timeouts, headers), one response buffer, and the wiping of
 * secrets.  Each client keeps its own way of driving the transfer:
 * base/rest.c waits in a backend on its latch, repair/repair_http.c runs
 * paced on the worker's loop, net/webhook/secret_fetch.c on a thread.
 *
 * No PostgreSQL here (it runs on that thread too): nothing raises, every
 * failure is a result, and no text made here holds the credential.
 */
#ifndef VOIPBIN_HTTP_CLIENT_H
#define VOIPBIN_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

/* How the credential travels (docs/voipbin.md, "Credentials"). */
typedef enum HttpCredKind
{
	HTTP_CRED_NONE,
	HTTP_CRED_ACCESSKEY,		/* vb_…: only as ?accesskey= */
	HTTP_CRED_BEARER			/* a JWT: Authorization: Bearer */
} HttpCredKind;

/* One request, as http_call_setup() reads it (nothing is kept but copies). */
typedef struct HttpRequest
{
	const char *base_url;		/* voipbin.api_url, or a whole URL */
	const char *path;			/* appended: path and query, URL-encoded; or NULL */
	const char *method;			/* NULL: GET */
	const char *body;			/* or NULL; sent as JSON */
	size_t		body_len;
	bool		json_always;	/* Content-Type: application/json even without a body */
	const char *credential;		/* or NULL */
	HttpCredKind cred_kind;
	const char *ca_file;		/* trusted besides the system's CAs; or NULL */
	long		timeout_ms;		/* the whole transfer */
	long		connect_timeout_ms; /* 0: only timeout_ms */
	size_t		max_response;	/* a larger answer fails (too_large) */
	bool		wipe_response;	/* the answer is secret: wipe the buffer it leaves */
	const char *user_agent;
} HttpRequest;

/*
 * One transfer: its easy handle and what it keeps until the handle is done,
 * and the answer as libcurl's callbacks leave it.  The callbacks only copy
 * bytes (malloc, no PostgreSQL).
 */
typedef struct HttpCall
{
	CURL	   *easy;
	char	   *body;			/* malloc'd, NUL-terminated; NULL until bytes came */
	size_t		len;
	bool		too_large;		/* the answer passed max_response */
	bool		no_memory;		/* the answer did not fit in memory */
	bool		ca_failed;		/* ca_file could not be loaded */
	bool		has_retry_after;
	long		retry_after_s;	/* as libcurl reads it: seconds or an HTTP date; >= 0 */
	char	   *request_id;		/* the X-Request-Id header, malloc'd; or NULL */
	char		errbuf[CURL_ERROR_SIZE];	/* libcurl's own words (may name the host) */
	/* private */
	size_t		cap;
	size_t		max;
	bool		wipe;
	char	   *ca_file;
	CURLU	   *url;
	struct curl_slist *headers;
} HttpCall;

/* Why http_call_setup() failed. */
typedef enum HttpSetupError
{
	HTTP_SETUP_OK = 0,
	HTTP_SETUP_NO_MEMORY,
	HTTP_SETUP_BAD_URL,			/* libcurl does not accept base_url + path */
	HTTP_SETUP_REFUSED			/* libcurl refused an option or the credential */
} HttpSetupError;

/* curl_global_init(), once per process however many call it; false when it failed. */
extern bool http_init(void);

/*
 * Sets c (zeroed here) up for req: c->easy is then ready to perform or to
 * add to a multi handle.  On failure *why says what, without the credential;
 * c still needs http_call_cleanup().
 */
extern HttpSetupError http_call_setup(HttpCall *c, const HttpRequest *req, const char **why);

/* The easy handle and all it kept; the answer (body, request_id) stays. */
extern void http_call_release(HttpCall *c);

/* http_call_release(), and the answer freed (wiped when it was secret). */
extern void http_call_cleanup(HttpCall *c);

/* The body, taken out of c (the caller frees it); "" when none came. NULL: out of memory. */
extern char *http_call_take_body(HttpCall *c, size_t *len);

/* Zeroes s (up to its NUL) where the compiler cannot drop it; NULL is fine. */
extern void http_wipe(char *s);

/* http_wipe(s), then free(s). */
extern void http_wipe_free(char *s);

/* Every occurrence of secret in text (NUL-terminated, in place) becomes "***". */
extern void http_redact(char *text, const char *secret);

#endif
