/*
 * endpoint.h — voipbin.api_url taken apart, and the credential loaded, cleaned and redacted.
 */
#ifndef VOIPBIN_BASE_ENDPOINT_H
#define VOIPBIN_BASE_ENDPOINT_H

#include "postgres.h"

typedef enum CredentialKind
{
	CRED_NONE,
	CRED_ACCESSKEY,
	CRED_JWT
} CredentialKind;

typedef struct Endpoint
{
	bool		tls;
	char	   *host;
	int			port;
	char	   *base_path;		/* "/v1.0", no trailing slash */
} Endpoint;

extern bool endpoint_parse(const char *api_url, Endpoint *ep, const char **error);
extern char *credential_load(CredentialKind *kind, char **error);
extern char *credential_clean(const char *text, size_t len, bool first_line,
							  const char *source, char **error);
extern bool endpoint_is_loopback(const char *host);
extern const char *endpoint_host_nonpublic(const char *host);
extern char *redact_secret(const char *text, const char *secret);

#endif
