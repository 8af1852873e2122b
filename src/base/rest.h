/*
 * rest.h — the one client of VoIPBIN's REST API (rest.c), used by the SQL
 * functions of customer.c in the calling backend.
 */
#ifndef VOIPBIN_REST_H
#define VOIPBIN_REST_H

#include "voipbin.h"

#include "utils/jsonb.h"

#include "base/endpoint.h"

/* Where a call goes and who makes it, read from the settings at call time. */
typedef struct RestTarget
{
	char	   *api_url;		/* voipbin.api_url without trailing '/' */
	char	   *credential;		/* never in a message: see rest_redact() */
	CredentialKind kind;
} RestTarget;

/*
 * Fills *t from voipbin.api_url and the credential.  Without a credential:
 * false when !required, an ERROR otherwise.  A bad URL or an unreadable
 * token file is always an ERROR.
 */
extern bool rest_target_load(RestTarget *t, bool required);

/*
 * One REST call: method on api_url + path, body (may be NULL) as JSON.
 * Returns the answer's JSON (NULL for an empty 2xx body); any other outcome
 * is an ERROR with the SQLSTATE docs/functions.md lists under "REST errors".
 */
extern Jsonb *rest_call(const RestTarget *t, const char *method,
						const char *path, Jsonb *body);

/* value percent-encoded for a URL's query, as REST calls encode the access key. */
extern char *rest_query_escape(const char *value);

/*
 * What VoIPBIN's error envelope in an answer's body says ({"error":
 * {"reason", "message", "request_id"}}), as "reason: …, message: …,
 * request_id: …" (without request_id unless with_request_id; it falls back
 * to header_request_id).  NULL when nothing is named.  The worker words a refused WebSocket handshake
 * with it, as the REST functions do their errors.
 */
extern char *rest_error_detail(const char *body, size_t len, bool with_request_id,
							   const char *header_request_id);

/*
 * An answer's body (UTF-8) as jsonb in the server encoding, or NULL with
 * *why when it is not JSON.  Checked before jsonb_in, so that an answer that
 * is not JSON (a proxy's HTML page) is no ERROR; jsonb_in may still raise
 * on JSON it cannot hold (a number out of range).
 */
extern Jsonb *rest_text_to_jsonb(const char *data, size_t len, char **why);

/* The string value of key in a JSON object (palloc'd), or NULL when absent or not a string. */
extern char *rest_string_field(JsonbContainer *obj, const char *key);

/* True for an absolute http:// or https:// URL with a host (no request). */
extern bool rest_is_http_url(const char *url);

/* The host of such a URL as libcurl reads it (an IPv6 one in brackets), or NULL. */
extern char *rest_url_host(const char *url);

#endif
