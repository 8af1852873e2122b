/*
 * endpoint.c — where VoIPBIN is (voipbin.api_url) and who we are to it
 * (voipbin.token / voipbin.token_file), shared by the worker and REST calls.
 */
#include "voipbin.h"

#include <ctype.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "lib/stringinfo.h"
#include "storage/fd.h"

#include "base/endpoint.h"
#include "base/settings.h"

/* Longer than any real base URL; the WebSocket URL adds the credential to it. */
#define API_URL_MAX 2048

/*
 * Whether host names this machine without any lookup: "localhost", 127/8,
 * ::1 (also as ::ffff:127.x).  Spellings a resolver might still take for
 * loopback (127.1, 0x7f.0.0.1) are not recognised, which only refuses more.
 */
bool
endpoint_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (pg_strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
			(IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

/* What an IPv4 address (host byte order) is when it is not public; NULL when it is. */
static const char *
ipv4_nonpublic(uint32 a)
{
	if (a == 0)
		return "the unspecified address";
	if ((a >> 24) == 0)
		return "an address of \"this network\" (0.0.0.0/8)";
	if ((a >> 24) == 127)
		return "a loopback address";
	if ((a >> 24) == 10 || (a >> 20) == (172 << 4 | 1) || (a >> 16) == (192 << 8 | 168))
		return "a private address (RFC 1918)";
	if ((a >> 16) == (169 << 8 | 254))
		return "a link-local address";
	if ((a >> 22) == (100 << 2 | 1))
		return "a shared address of carrier-grade NAT (100.64.0.0/10)";
	if ((a >> 8) == (192 << 16 | 0 << 8 | 0))
		return "a reserved address (192.0.0.0/24)";
	if ((a >> 8) == (192u << 16 | 0 << 8 | 2) || (a >> 8) == (198u << 16 | 51 << 8 | 100) ||
		(a >> 8) == (203u << 16 | 0 << 8 | 113))
		return "a documentation address";
	if ((a >> 17) == (198u << 7 | 18 >> 1))
		return "a benchmarking address (198.18.0.0/15)";
	if ((a >> 28) == 0xe)
		return "a multicast address";
	if ((a >> 28) == 0xf)
		return "a reserved or broadcast address (240.0.0.0/4)";
	return NULL;
}

/* Names public DNS does not answer, or answers only for this network. */
static const char *const local_suffixes[] = {
	".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan",
	".test", ".invalid", ".example"
};

/*
 * Why a webhook's host (a name, an IPv4 address in any form inet_aton takes,
 * or an IPv6 address, bracketed or not, with or without a zone) is no public
 * address, or NULL when nothing says so: "a loopback address", "a private
 * address (RFC 1918)", ….  Pure and without any lookup: a public name may
 * still resolve to a private address, which only VoIPBIN sees.
 */
const char *
endpoint_host_nonpublic(const char *host)
{
	char		buf[256];
	size_t		len = strlen(host);
	struct in_addr a4;
	struct in6_addr a6;
	char	   *pct;

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
	{
		host++;
		len -= 2;
	}
	if (len == 0)
		return "an empty host";
	if (len >= sizeof(buf))
		return NULL;			/* longer than any DNS name: not ours to judge */
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (len > 1 && buf[len - 1] == '.')
		buf[--len] = '\0';		/* "localhost." is localhost */
	if ((pct = strchr(buf, '%')) != NULL)
		*pct = '\0';			/* fe80::1%eth0 */

	if (strchr(buf, ':') != NULL)
	{
		if (inet_pton(AF_INET6, buf, &a6) != 1)
			return NULL;
		if (IN6_IS_ADDR_UNSPECIFIED(&a6))
			return "the unspecified address";
		if (IN6_IS_ADDR_LOOPBACK(&a6))
			return "a loopback address";
		if (IN6_IS_ADDR_V4MAPPED(&a6) ||
			/* 64:ff9b::/96, NAT64: the IPv4 address is what is reached */
			(a6.s6_addr[0] == 0 && a6.s6_addr[1] == 0x64 && a6.s6_addr[2] == 0xff &&
			 a6.s6_addr[3] == 0x9b && memcmp(a6.s6_addr + 4, "\0\0\0\0\0\0\0\0", 8) == 0))
			return ipv4_nonpublic((uint32) a6.s6_addr[12] << 24 | (uint32) a6.s6_addr[13] << 16 |
								  (uint32) a6.s6_addr[14] << 8 | a6.s6_addr[15]);
		if ((a6.s6_addr[0] & 0xfe) == 0xfc)
			return "a private address (unique local, fc00::/7)";
		if (a6.s6_addr[0] == 0xfe && (a6.s6_addr[1] & 0xc0) == 0x80)
			return "a link-local address";
		if (a6.s6_addr[0] == 0xfe && (a6.s6_addr[1] & 0xc0) == 0xc0)
			return "a site-local address (fec0::/10)";
		if (a6.s6_addr[0] == 0xff)
			return "a multicast address";
		if (a6.s6_addr[0] == 0x20 && a6.s6_addr[1] == 0x01 &&
			a6.s6_addr[2] == 0x0d && a6.s6_addr[3] == 0xb8)
			return "a documentation address";
		if (memcmp(a6.s6_addr, "\0\0\0\0\0\0\0\0\0\0\0\0", 12) == 0)
			return "a deprecated IPv4-compatible address (::/96)";
		if (a6.s6_addr[0] == 0x01 && memcmp(a6.s6_addr + 1, "\0\0\0\0\0\0\0", 7) == 0)
			return "a discard address (100::/64)";
		return NULL;
	}
	/* 127.1, 0x7f000001 and 2130706433 are all 127.0.0.1 to a resolver */
	if (strspn(buf, "0123456789abcdefxABCDEFX.") == len && inet_aton(buf, &a4) != 0)
		return ipv4_nonpublic(ntohl(a4.s_addr));
	if (pg_strcasecmp(buf, "localhost") == 0)
		return "this machine (localhost)";
	for (size_t i = 0; i < lengthof(local_suffixes); i++)
	{
		size_t		slen = strlen(local_suffixes[i]);

		if (len > slen && pg_strcasecmp(buf + len - slen, local_suffixes[i]) == 0)
			return strcmp(local_suffixes[i], ".localhost") == 0 ? "a name under localhost" :
				"a name public DNS does not resolve";
	}
	if (strchr(buf, '.') == NULL)
		return "a name without a dot, which public DNS does not resolve";
	return NULL;
}

/*
 * Splits "http(s)://host[:port][/path]"; false with *error on anything else.
 * Everything in it ends up in a request line or a Host header, so only
 * printable ASCII is taken; and plain http:// only to this machine, since
 * the credential travels with every request.
 */
bool
endpoint_parse(const char *api_url, Endpoint *ep, const char **error)
{
	const char *p = api_url;
	const char *host_end;
	const char *path;
	size_t		path_len;

	memset(ep, 0, sizeof(*ep));
	if (strlen(api_url) > API_URL_MAX)
	{
		*error = "voipbin.api_url is longer than 2048 bytes";
		return false;
	}
	for (const char *c = api_url; *c; c++)
		if ((unsigned char) *c <= 0x20 || (unsigned char) *c >= 0x7f)
		{
			*error = "voipbin.api_url has a blank, a control character or a non-ASCII byte; percent-encode it";
			return false;
		}
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
	for (const char *c = ep->host; *c; c++)
		if (!(isalnum((unsigned char) *c) || *c == '.' || *c == '-' || *c == '_' ||
			  (*c == ':' && *p == '[')))
		{
			*error = "voipbin.api_url has a host that is neither a name nor an IP address";
			return false;
		}
	if (!ep->tls && !endpoint_is_loopback(ep->host))
	{
		*error = "voipbin.api_url uses http:// to a host that is not this machine: the credential would cross the network in clear; use https:// (http:// is accepted for a loopback address only)";
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
 * The longest credential taken.  VoIPBIN's access keys are ~40 bytes and its
 * JWTs well under 2 kB; a longer first line is a wrong file, not a credential.
 */
#define CREDENTIAL_MAX 8192

/* what an editor may leave around a credential: blanks, CR, LF */
static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/*
 * The credential in text (a setting's value, or a file's beginning and then
 * only its first line) without a UTF-8 BOM and without the blanks, CR and LF
 * an editor leaves around it.  A fresh palloc'd copy, never a pointer into text (the caller
 * frees what it gets).  NULL when there is none; NULL with *error when it
 * cannot be one: a NUL, a control character or non-ASCII byte inside it, or
 * too long.  The error names where, never what: it may be close to a secret.
 */
char *
credential_clean(const char *text, size_t len, bool first_line, const char *source,
				 char **error)
{
	const char *start = text;
	const char *end;
	const char *nl;
	size_t		n;

	*error = NULL;
	if (len >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0)
		start += 3;
	nl = first_line ? memchr(start, '\n', len - (start - text)) : NULL;
	end = nl ? nl : text + len;
	while (start < end && is_blank(*start))
		start++;
	while (end > start && is_blank(end[-1]))
		end--;
	n = end - start;
	if (n == 0)
		return NULL;
	if (n > CREDENTIAL_MAX)
	{
		*error = psprintf("%s: the credential is longer than %d bytes", source, CREDENTIAL_MAX);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) start[i];

		/* access keys and JWTs are printable ASCII without blanks */
		if (c <= 0x20 || c >= 0x7f)
		{
			*error = psprintf("%s: the credential has %s at byte %zu; it must be one line of printable ASCII",
							  source,
							  c == 0 ? "a NUL" : c < 0x20 || c == 0x7f ? "a control character" :
							  c == 0x20 ? "a blank" : "a non-ASCII byte",
							  i + 1);
			return NULL;
		}
	}
	return pnstrdup(start, n);
}

/*
 * The beginning of voipbin.token_file, enough for its first line; NULL with
 * *error when it cannot be read.  A FIFO or device is refused before any
 * read, so the worker never blocks on one; the path is no secret.
 */
static char *
token_file_read(const char *path, size_t *len, char **error)
{
	int			fd;
	struct stat st;
	char	   *buf;
	size_t		cap = CREDENTIAL_MAX + 64;	/* room for a BOM, blanks, CRLF */
	size_t		got = 0;

	*error = NULL;
	fd = OpenTransientFile(path, O_RDONLY | O_NONBLOCK | PG_BINARY);
	if (fd < 0)
	{
		*error = psprintf("could not open voipbin.token_file \"%s\": %m", path);
		return NULL;
	}
	if (fstat(fd, &st) != 0)
	{
		*error = psprintf("could not stat voipbin.token_file \"%s\": %m", path);
		CloseTransientFile(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode))
	{
		*error = psprintf("voipbin.token_file \"%s\" is %s, not a regular file", path,
						  S_ISDIR(st.st_mode) ? "a directory" : "a device, FIFO or socket");
		CloseTransientFile(fd);
		return NULL;
	}
	buf = palloc(cap + 1);
	while (got < cap)
	{
		ssize_t		r = read(fd, buf + got, cap - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
		{
			*error = psprintf("could not read voipbin.token_file \"%s\": %m", path);
			explicit_bzero(buf, cap);
			pfree(buf);
			CloseTransientFile(fd);
			return NULL;
		}
		if (r == 0)
			break;
		got += r;
		if (memchr(buf, '\n', got))
			break;
	}
	CloseTransientFile(fd);
	buf[got] = '\0';
	*len = got;
	return buf;
}

/*
 * The credential in force: the first line of voipbin.token_file when that is
 * set, else voipbin.token.  NULL with kind CRED_NONE when there is none;
 * NULL with *error when the file cannot be read or holds no credential.
 */
char *
credential_load(CredentialKind *kind, char **error)
{
	char	   *cred;

	*kind = CRED_NONE;
	*error = NULL;
	if (voipbin_token_file && voipbin_token_file[0])
	{
		size_t		len;
		char	   *text = token_file_read(voipbin_token_file, &len, error);
		char	   *source;

		if (text == NULL)
			return NULL;
		source = psprintf("voipbin.token_file \"%s\"", voipbin_token_file);
		cred = credential_clean(text, len, true, source, error);
		explicit_bzero(text, len);
		pfree(text);
		if (cred == NULL && *error == NULL)
			*error = psprintf("%s: its first line is empty", source);
		pfree(source);
	}
	else
		cred = credential_clean(voipbin_token ? voipbin_token : "",
								voipbin_token ? strlen(voipbin_token) : 0,
								false, "voipbin.token", error);
	if (cred == NULL)
		return NULL;
	*kind = strncmp(cred, "vb_", 3) == 0 ? CRED_ACCESSKEY : CRED_JWT;
	return cred;
}

/*
 * A copy of text with every occurrence of secret replaced by "***".  A secret
 * holding '*' can be rebuilt from a mask and the text around it ("..." +
 * "***" for "...*"), so the pass repeats until the secret is gone; each pass
 * shortens the text (a secret is longer than its mask), so this ends.
 */
char *
redact_secret(const char *text, const char *secret)
{
	StringInfoData out;
	size_t		slen;
	char	   *cur;

	if (text == NULL)
		return NULL;
	cur = pstrdup(text);
	if (secret == NULL || (slen = strlen(secret)) < 4)
		return cur;
	while (strstr(cur, secret) != NULL)
	{
		const char *p;
		const char *hit;

		initStringInfo(&out);
		for (p = cur; (hit = strstr(p, secret)) != NULL; p = hit + slen)
		{
			appendBinaryStringInfo(&out, p, hit - p);
			appendStringInfoString(&out, "***");
		}
		appendStringInfoString(&out, p);
		pfree(cur);
		cur = out.data;
	}
	return cur;
}
