/*
 * http_client.c — libcurl set up one way for every REST client (see the
 * header).  Runs on any thread: no PostgreSQL, and libcurl's callbacks here
 * only copy bytes or call OpenSSL.
 */
#ifdef POSTGRES_H
#error "http_client.c runs off the main thread too and must not use the PostgreSQL API"
#endif

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/http/http_client.h"
#include "net/no_postgres.h"

#if LIBCURL_VERSION_NUM < 0x075400
#error "voipbin needs libcurl 7.84 or later"
#endif

#define HTTP_FIRST_CAP 16384

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_ok = false;

static void
init_curl(void)
{
	init_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

bool
http_init(void)
{
	pthread_once(&init_once, init_curl);
	return init_ok;
}

void
http_wipe(char *s)
{
	if (s)
		OPENSSL_cleanse(s, strlen(s));
}

void
http_wipe_free(char *s)
{
	if (s)
	{
		http_wipe(s);
		free(s);
	}
}

void
http_redact(char *text, const char *secret)
{
	size_t		slen = secret ? strlen(secret) : 0;
	char	   *hit;

	/* as redact_secret() does: a short "secret" would mask ordinary words */
	if (text == NULL || slen < 4)
		return;
	/* from the start again each time: a '*' in the secret can rebuild it */
	while ((hit = strstr(text, secret)) != NULL)
	{
		memmove(hit + 3, hit + slen, strlen(hit + slen) + 1);
		memcpy(hit, "***", 3);
	}
}

/* ---- libcurl's callbacks ---- */

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpCall   *c = userdata;
	size_t		n = size * nmemb;

	if (n > c->max - c->len)
	{
		c->too_large = true;
		return 0;				/* libcurl aborts with CURLE_WRITE_ERROR */
	}
	if (c->len + n + 1 > c->cap)
	{
		size_t		cap = c->cap ? c->cap * 2 : HTTP_FIRST_CAP;
		char	   *grown;

		while (cap < c->len + n + 1)
			cap *= 2;
		if (c->wipe)
		{
			/* realloc could leave a copy of a secret behind */
			grown = malloc(cap);
			if (grown && c->body)
			{
				memcpy(grown, c->body, c->len);
				OPENSSL_cleanse(c->body, c->cap);
				free(c->body);
			}
		}
		else
			grown = realloc(c->body, cap);
		if (grown == NULL)
		{
			c->no_memory = true;
			return 0;
		}
		c->body = grown;
		c->cap = cap;
	}
	memcpy(c->body + c->len, ptr, n);
	c->len += n;
	c->body[c->len] = '\0';
	return n;
}

/* value of a "name: value" header line (without CRLF and outer blanks), or NULL */
static const char *
header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
	size_t		nlen = strlen(name);
	const char *v;
	const char *end = line + len;

	if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return NULL;
	v = line + nlen + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*vlen = (size_t) (end - v);
	return v;
}

/*
 * Retry-After as libcurl (7.88) reads it for CURLINFO_RETRY_AFTER: a decimal
 * number of seconds, else an HTTP date less now, else 0; never below 0 here.
 */
static long
retry_after_seconds(const char *v, size_t vlen)
{
	char		buf[64];
	long long	s = 0;
	char	   *end;

	if (vlen >= sizeof(buf))
		return 0;
	memcpy(buf, v, vlen);
	buf[vlen] = '\0';
	if (buf[0] != '-')
	{
		errno = 0;
		s = strtoll(buf, &end, 10);
		if (errno == ERANGE || end == buf)
			s = 0;
	}
	if (s == 0)
	{
		time_t		date = curl_getdate(buf, NULL);

		if (date != (time_t) -1)
			s = (long long) (date - time(NULL));
	}
	if (s < 0)
		return 0;
	return s > INT32_MAX ? INT32_MAX : (long) s;
}

static size_t
on_header(char *line, size_t size, size_t nitems, void *userdata)
{
	HttpCall   *c = userdata;
	size_t		n = size * nitems;
	const char *v;
	size_t		vlen;

	if (n >= 5 && strncmp(line, "HTTP/", 5) == 0)
	{
		/* a new answer (after a 1xx): only the final one's headers count */
		c->has_retry_after = false;
		c->retry_after_s = 0;
		free(c->request_id);
		c->request_id = NULL;
	}
	else if ((v = header_value(line, n, "Retry-After", &vlen)) != NULL)
	{
		c->has_retry_after = true;
		c->retry_after_s = retry_after_seconds(v, vlen);
	}
	else if ((v = header_value(line, n, "X-Request-Id", &vlen)) != NULL)
	{
		char	   *id = malloc(vlen + 1);

		if (id)
		{
			memcpy(id, v, vlen);
			id[vlen] = '\0';
			free(c->request_id);
			c->request_id = id;
		}
	}
	return n;
}

/*
 * CURLOPT_CAINFO would replace the system's CA bundle; this adds ca_file to
 * the store libcurl has already filled from it.  Certificates are verified
 * either way.
 */
static CURLcode
on_ssl_ctx(CURL *curl, void *ssl_ctx, void *userptr)
{
	HttpCall   *c = userptr;

	if (SSL_CTX_load_verify_locations((SSL_CTX *) ssl_ctx, c->ca_file, NULL) != 1)
	{
		ERR_clear_error();
		c->ca_failed = true;
		return CURLE_SSL_CACERT_BADFILE;
	}
	return CURLE_OK;
}

/* ---- setting a handle up ---- */

static struct curl_slist *
header_add(struct curl_slist *list, const char *h, bool *ok)
{
	struct curl_slist *n = curl_slist_append(list, h);

	if (n == NULL)
	{
		*ok = false;
		return list;
	}
	return n;
}

#define SET(opt, val) (ok = ok && curl_easy_setopt(c->easy, (opt), (val)) == CURLE_OK)

HttpSetupError
http_call_setup(HttpCall *c, const HttpRequest *req, const char **why)
{
	const char *path = req->path ? req->path : "";
	size_t		n = strlen(req->base_url) + strlen(path) + 1;
	char	   *full;
	bool		ok = true;

	memset(c, 0, sizeof(*c));
	c->max = req->max_response;
	c->wipe = req->wipe_response;
	if (!http_init())
	{
		*why = "libcurl could not be initialised";
		return HTTP_SETUP_REFUSED;
	}
	c->easy = curl_easy_init();
	c->url = curl_url();
	full = malloc(n);
	if (req->ca_file)
		c->ca_file = strdup(req->ca_file);
	c->headers = header_add(c->headers, "Accept: application/json", &ok);
	if (req->body || req->json_always)
		c->headers = header_add(c->headers, "Content-Type: application/json", &ok);
	/* no "100 Continue" round trip before a body */
	if (req->body)
		c->headers = header_add(c->headers, "Expect:", &ok);
	if (c->easy == NULL || c->url == NULL || full == NULL || !ok ||
		(req->ca_file && c->ca_file == NULL))
	{
		free(full);
		*why = "out of memory";
		return HTTP_SETUP_NO_MEMORY;
	}
	snprintf(full, n, "%s%s", req->base_url, path);
	ok = curl_url_set(c->url, CURLUPART_URL, full, 0) == CURLUE_OK;
	free(full);
	if (!ok)
	{
		*why = "libcurl does not accept the URL";
		return HTTP_SETUP_BAD_URL;
	}

	if (req->credential && req->cred_kind == HTTP_CRED_ACCESSKEY)
	{
		/* an access key works only as ?accesskey= (docs/voipbin.md, "Credentials") */
		size_t		qn = strlen("accesskey=") + strlen(req->credential) + 1;
		char	   *q = malloc(qn);

		if (q == NULL)
		{
			*why = "out of memory";
			return HTTP_SETUP_NO_MEMORY;
		}
		snprintf(q, qn, "accesskey=%s", req->credential);
		ok = curl_url_set(c->url, CURLUPART_QUERY, q,
						  CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK;
		http_wipe_free(q);
		if (!ok)
		{
			*why = "libcurl could not add the access key to the URL";
			return HTTP_SETUP_REFUSED;
		}
	}
	else if (req->credential && req->cred_kind == HTTP_CRED_BEARER)
	{
		SET(CURLOPT_HTTPAUTH, (long) CURLAUTH_BEARER);
		SET(CURLOPT_XOAUTH2_BEARER, req->credential);
	}

	SET(CURLOPT_CURLU, c->url);
	if (req->method)
		SET(CURLOPT_CUSTOMREQUEST, req->method);
	else
		SET(CURLOPT_HTTPGET, 1L);
	if (req->body)
	{
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
		SET(CURLOPT_COPYPOSTFIELDS, req->body);
	}
	SET(CURLOPT_HTTPHEADER, c->headers);
	if (req->user_agent)
		SET(CURLOPT_USERAGENT, req->user_agent);
	/* libcurl's own timeouts would otherwise use SIGALRM (PostgreSQL's) */
	SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SET(CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	/* a redirect would carry the access key elsewhere: the caller reports it */
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
	{
		SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
		SET(CURLOPT_SSL_CTX_DATA, c);
	}
	if (req->connect_timeout_ms > 0)
		SET(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	SET(CURLOPT_TIMEOUT_MS, req->timeout_ms);
	if (req->max_response > 0)
		SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) req->max_response);
	SET(CURLOPT_WRITEFUNCTION, on_data);
	SET(CURLOPT_WRITEDATA, c);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, c);
	SET(CURLOPT_ERRORBUFFER, c->errbuf);
	if (!ok)
	{
		*why = "libcurl refused the request's options";
		return HTTP_SETUP_REFUSED;
	}
	return HTTP_SETUP_OK;
}

#undef SET

void
http_call_release(HttpCall *c)
{
	if (c->easy)
		curl_easy_cleanup(c->easy);
	c->easy = NULL;
	if (c->url)
	{
		/* its query may hold the access key */
		curl_url_cleanup(c->url);
		c->url = NULL;
	}
	curl_slist_free_all(c->headers);
	c->headers = NULL;
	free(c->ca_file);
	c->ca_file = NULL;
}

void
http_call_cleanup(HttpCall *c)
{
	http_call_release(c);
	if (c->body)
	{
		if (c->wipe)
			OPENSSL_cleanse(c->body, c->cap);
		free(c->body);
	}
	c->body = NULL;
	c->len = c->cap = 0;
	free(c->request_id);
	c->request_id = NULL;
}

char *
http_call_take_body(HttpCall *c, size_t *len)
{
	char	   *b = c->body;

	*len = b ? c->len : 0;
	if (b == NULL)
		b = strdup("");
	c->body = NULL;
	c->len = c->cap = 0;
	return b;
}
