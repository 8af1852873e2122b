/*
 * endpoint.c — where VoIPBIN is (voipbin.api_url) and who we are to it
 * (voipbin.token / voipbin.token_file), shared by the worker and REST calls.
 */
#include "voipbin.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "storage/fd.h"

/* Splits "http(s)://host[:port][/path]"; false with *error on anything else. */
bool
endpoint_parse(const char *api_url, Endpoint *ep, const char **error)
{
	const char *p = api_url;
	const char *host_end;
	const char *path;
	size_t		path_len;

	memset(ep, 0, sizeof(*ep));
	if (pg_strncasecmp(p, "https://", 8) == 0)
	{
		ep->tls = true;
		ep->port = 443;
		p += 8;
	}
	else if (pg_strncasecmp(p, "http://", 7) == 0)
	{
		ep->tls = false;
		ep->port = 80;
		p += 7;
	}
	else
	{
		*error = "voipbin.api_url must start with http:// or https://";
		return false;
	}

	path = strchr(p, '/');
	if (path == NULL)
		path = p + strlen(p);
	if (*p == '[')
	{
		host_end = memchr(p, ']', path - p);
		if (host_end == NULL)
		{
			*error = "voipbin.api_url has an unterminated IPv6 address";
			return false;
		}
		ep->host = pnstrdup(p + 1, host_end - p - 1);
		host_end++;
	}
	else
	{
		host_end = memchr(p, ':', path - p);
		if (host_end == NULL)
			host_end = path;
		ep->host = pnstrdup(p, host_end - p);
	}
	if (ep->host[0] == '\0')
	{
		*error = "voipbin.api_url has no host";
		return false;
	}
	if (host_end < path)
	{
		char	   *end;
		long		port;

		if (*host_end != ':')
		{
			*error = "voipbin.api_url has junk after the host";
			return false;
		}
		port = strtol(host_end + 1, &end, 10);
		if (end != path || port < 1 || port > 65535)
		{
			*error = "voipbin.api_url has an invalid port";
			return false;
		}
		ep->port = (int) port;
	}
	path_len = strlen(path);
	while (path_len > 0 && path[path_len - 1] == '/')
		path_len--;
	if (memchr(path, '?', path_len) || memchr(path, '#', path_len))
	{
		*error = "voipbin.api_url must not have a query or fragment";
		return false;
	}
	ep->base_path = pnstrdup(path, path_len);
	return true;
}

/*
 * The credential in force: the first line of voipbin.token_file when that is
 * set, else voipbin.token.  NULL with kind CRED_NONE when there is none;
 * NULL with *error when the file cannot be read (the path is no secret).
 */
char *
credential_load(CredentialKind *kind, char **error)
{
	char	   *cred;
	size_t		len;

	*kind = CRED_NONE;
	*error = NULL;
	if (voipbin_token_file && voipbin_token_file[0])
	{
		FILE	   *f = AllocateFile(voipbin_token_file, "r");
		char		line[8192];

		if (f == NULL)
		{
			*error = psprintf("could not open voipbin.token_file \"%s\": %m", voipbin_token_file);
			return NULL;
		}
		if (fgets(line, sizeof(line), f) == NULL)
			line[0] = '\0';
		FreeFile(f);
		cred = pstrdup(line);
		explicit_bzero(line, sizeof(line));
	}
	else
		cred = pstrdup(voipbin_token ? voipbin_token : "");

	/* trim the newline and any blanks a text editor left around it */
	len = strlen(cred);
	while (len > 0 && isspace((unsigned char) cred[len - 1]))
		cred[--len] = '\0';
	while (*cred && isspace((unsigned char) *cred))
		cred++, len--;
	if (len == 0)
		return NULL;
	*kind = strncmp(cred, "vb_", 3) == 0 ? CRED_ACCESSKEY : CRED_JWT;
	return cred;
}

/* A copy of text with every occurrence of secret replaced by "***". */
char *
redact_secret(const char *text, const char *secret)
{
	StringInfoData out;
	size_t		slen;
	const char *p;
	const char *hit;

	if (text == NULL)
		return NULL;
	if (secret == NULL || (slen = strlen(secret)) < 4)
		return pstrdup(text);
	initStringInfo(&out);
	for (p = text; (hit = strstr(p, secret)) != NULL; p = hit + slen)
	{
		appendBinaryStringInfo(&out, p, hit - p);
		appendStringInfoString(&out, "***");
	}
	appendStringInfoString(&out, p);
	return out.data;
}
