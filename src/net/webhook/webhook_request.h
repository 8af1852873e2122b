/*
 * webhook_request.h — what the webhook receiver answers, decided without a
 * socket.
 *
 * The HTTP library (webhook_receiver.c) parses the request; these functions
 * decide its fate from what was parsed: the path and method, the framing
 * headers, the body and its X-VoIPBIN-Signature.  They are pure (no I/O, no
 * globals, no PostgreSQL), so a test or a fuzzer can call them directly:
 * test/fuzz.sh's webhook target feeds arbitrary heads, signatures and bodies
 * to webhook_check_head() and webhook_check_body().
 */
#ifndef VOIPBIN_WEBHOOK_REQUEST_H
#define VOIPBIN_WEBHOOK_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEBHOOK_SIGNATURE_HEADER "X-VoIPBIN-Signature"
#define WEBHOOK_SIGNATURE_PREFIX "sha256="
#define WEBHOOK_DIGEST_LEN 32

/* What the request line and headers say, as the HTTP library parsed them. */
typedef struct WebhookHead
{
	const char *method;
	const char *path;			/* without the query string */
	const char *content_length; /* header value, or NULL */
	const char *transfer_encoding;	/* header value, or NULL */
	int			n_content_length;	/* how many such headers the request has */
	int			n_transfer_encoding;
} WebhookHead;

/*
 * 0 when the body may be read, else the status to answer at once (404 for
 * another path, 405 for another method, 400 for ambiguous framing, 413 for a
 * declared length over max_body).  *reason: why, for the answer's text.
 */
extern int	webhook_check_head(const WebhookHead *head, const char *want_path,
							   uint64_t max_body, const char **reason);

/*
 * Parses "sha256=<64 hex digits>" into digest; false when it is anything
 * else (the header is then "malformed").
 */
extern bool webhook_parse_signature(const char *header, unsigned char digest[WEBHOOK_DIGEST_LEN]);

/*
 * 0 when body carries a valid signature under secret, else the status to
 * answer: 503 when no secret is known (secret_len 0), 401 for a missing,
 * malformed or wrong signature.  The comparison takes constant time.
 */
extern int	webhook_check_body(const char *signature_header,
							   const char *secret, size_t secret_len,
							   const char *body, size_t len, const char **reason);

#endif
