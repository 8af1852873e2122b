/*
 * webhook_request.c — the receiver's decisions: path, method, framing,
 * signature.  Pure functions over what the HTTP library parsed.
 */
#ifdef POSTGRES_H
#error "webhook_request.c runs on the receiver's threads and must not use the PostgreSQL API"
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "net/webhook/webhook_request.h"
#include "net/no_postgres.h"

/* VoIPBIN's webhook_method is one of these (docs/voipbin.md, "Webhooks and their signature"); all carry the body. */
static const char *const methods[] = {"POST", "PUT", "GET", "DELETE"};

int
webhook_check_head(const WebhookHead *head, const char *want_path,
				   uint64_t max_body, const char **reason)
{
	bool		method_ok = false;

	*reason = NULL;
	if (head->path == NULL || want_path == NULL || strcmp(head->path, want_path) != 0)
	{
		*reason = "no such path";
		return 404;
	}
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (head->method && strcmp(head->method, methods[i]) == 0)
			method_ok = true;
	if (!method_ok)
	{
		*reason = "method not allowed";
		return 405;
	}

	/*
	 * Two framings at once is how requests are smuggled past a proxy: refuse
	 * it rather than pick one (RFC 9112 §6.3).  Only plain chunked is a
	 * transfer coding a sender of JSON has a use for.
	 */
	if (head->n_content_length > 1 || head->n_transfer_encoding > 1)
	{
		*reason = "repeated Content-Length or Transfer-Encoding";
		return 400;
	}
	if (head->transfer_encoding != NULL)
	{
		if (head->content_length != NULL)
		{
			*reason = "both Content-Length and Transfer-Encoding";
			return 400;
		}
		if (strcasecmp(head->transfer_encoding, "chunked") != 0)
		{
			*reason = "unsupported Transfer-Encoding";
			return 400;
		}
	}
	if (head->content_length != NULL)
	{
		const char *s = head->content_length;
		char	   *end;
		unsigned long long n;

		if (*s < '0' || *s > '9')
		{
			*reason = "invalid Content-Length";
			return 400;
		}
		errno = 0;
		n = strtoull(s, &end, 10);
		if (*end != '\0' || errno == ERANGE)
		{
			*reason = "invalid Content-Length";
			return 400;
		}
		if (n > max_body)
		{
			*reason = "body larger than voipbin.max_frame_size";
			return 413;
		}
	}
	return 0;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
webhook_parse_signature(const char *header, unsigned char digest[WEBHOOK_DIGEST_LEN])
{
	size_t		plen = strlen(WEBHOOK_SIGNATURE_PREFIX);

	if (header == NULL || strncmp(header, WEBHOOK_SIGNATURE_PREFIX, plen) != 0)
		return false;
	header += plen;
	if (strlen(header) != 2 * WEBHOOK_DIGEST_LEN)
		return false;
	for (int i = 0; i < WEBHOOK_DIGEST_LEN; i++)
	{
		int			hi = hex_value(header[2 * i]);
		int			lo = hex_value(header[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		digest[i] = (unsigned char) (hi << 4 | lo);
	}
	return true;
}

int
webhook_check_body(const char *signature_header, const char *secret, size_t secret_len,
				   const char *body, size_t len, const char **reason)
{
	unsigned char given[WEBHOOK_DIGEST_LEN];
	unsigned char want[EVP_MAX_MD_SIZE];
	unsigned int want_len = 0;
	int			status = 0;

	*reason = NULL;
	if (secret == NULL || secret_len == 0)
	{
		*reason = "no webhook secret known yet";
		return 503;
	}
	if (signature_header == NULL)
	{
		*reason = "no " WEBHOOK_SIGNATURE_HEADER " header";
		return 401;
	}
	if (!webhook_parse_signature(signature_header, given))
	{
		*reason = "malformed " WEBHOOK_SIGNATURE_HEADER " header";
		return 401;
	}
	/* the key is the secret string's own bytes, as VoIPBIN uses it (docs/voipbin.md, "Webhooks and their signature") */
	if (HMAC(EVP_sha256(), secret, (int) secret_len,
			 (const unsigned char *) (body ? body : ""), len, want, &want_len) == NULL ||
		want_len != WEBHOOK_DIGEST_LEN)
	{
		*reason = "could not compute the HMAC";
		status = 503;
	}
	else if (CRYPTO_memcmp(given, want, WEBHOOK_DIGEST_LEN) != 0)
	{
		*reason = "wrong signature";
		status = 401;
	}
	OPENSSL_cleanse(want, sizeof(want));
	return status;
}
