/* fuzz-sources: src/net/webhook/webhook_request.c -lcrypto */
/*
 * fuzz_webhook.c — the webhook receiver's decisions on a request: its head
 * (path, method, framing headers) and its body's signature.
 *
 * Input: NUL-separated fields method, path, Content-Length,
 * Transfer-Encoding, X-VoIPBIN-Signature, secret, then the body (the rest,
 * NULs and all).  A missing field is an absent header.  The first byte
 * sets how many Content-Length and Transfer-Encoding headers there were.
 *
 * Besides no crash, leak or UB: a body signed with the secret is accepted
 * and the same signature with one bit flipped is not.
 */
#include "net/webhook/webhook_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define NFIELDS 6

static char *
field(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nul;
	char	   *s;

	if (*p >= end)
		return NULL;
	nul = memchr(*p, '\0', end - *p);
	if (nul == NULL)
		nul = end;
	s = malloc(nul - *p + 1);
	memcpy(s, *p, nul - *p);
	s[nul - *p] = '\0';
	*p = nul < end ? nul + 1 : end;
	return s;
}

static void
sign(const char *secret, size_t secret_len, const char *body, size_t len, char *out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;

	HMAC(EVP_sha256(), secret, (int) secret_len, (const unsigned char *) body, len, mac, &mac_len);
	strcpy(out, WEBHOOK_SIGNATURE_PREFIX);
	for (unsigned int i = 0; i < mac_len; i++)
		sprintf(out + strlen(WEBHOOK_SIGNATURE_PREFIX) + 2 * i, "%02x", mac[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	const uint8_t *end = data + size;
	char	   *f[NFIELDS] = {0};
	WebhookHead head;
	const char *reason;
	unsigned char digest[WEBHOOK_DIGEST_LEN];
	char	   *body;
	size_t		body_len;
	int			status;

	if (size == 0)
		return 0;
	memset(&head, 0, sizeof(head));
	head.n_content_length = data[0] & 3;
	head.n_transfer_encoding = (data[0] >> 2) & 3;
	p++;
	for (int i = 0; i < NFIELDS; i++)
		f[i] = field(&p, end);
	/* the body in an allocation of its own, exactly sized, for ASAN */
	body_len = end - p;
	body = malloc(body_len ? body_len : 1);
	memcpy(body, p, body_len);

	head.method = f[0];
	head.path = f[1];
	head.content_length = f[2];
	head.transfer_encoding = f[3];
	if (head.content_length && head.n_content_length == 0)
		head.n_content_length = 1;
	if (head.transfer_encoding && head.n_transfer_encoding == 0)
		head.n_transfer_encoding = 1;
	status = webhook_check_head(&head, "/voipbin/events", 16 * 1024 * 1024, &reason);
	if (status != 0 && reason == NULL)
		abort();
	if (status == 0 && (head.path == NULL || strcmp(head.path, "/voipbin/events") != 0))
		abort();

	(void) webhook_parse_signature(f[4], digest);
	status = webhook_check_body(f[4], f[5], f[5] ? strlen(f[5]) : 0, body, body_len, &reason);
	if (status != 0 && reason == NULL)
		abort();

	if (f[5] && f[5][0])
	{
		char		good[sizeof(WEBHOOK_SIGNATURE_PREFIX) + 2 * EVP_MAX_MD_SIZE];
		size_t		n = strlen(f[5]);

		sign(f[5], n, body, body_len, good);
		if (webhook_check_body(good, f[5], n, body, body_len, &reason) != 0)
		{
			fprintf(stderr, "a correctly signed body was refused: %s\n", reason);
			abort();
		}
		good[strlen(WEBHOOK_SIGNATURE_PREFIX) + (data[0] >> 4) % (2 * WEBHOOK_DIGEST_LEN)] ^= 1;
		if (webhook_check_body(good, f[5], n, body, body_len, &reason) == 0)
		{
			fprintf(stderr, "a wrong signature was accepted\n");
			abort();
		}
	}

	for (int i = 0; i < NFIELDS; i++)
		free(f[i]);
	free(body);
	return 0;
}
