/*
 * secret_fetch.c — one libcurl GET on a thread that never touches PostgreSQL.
 */
#ifdef POSTGRES_H
#error "secret_fetch.c runs off the main thread and must not use the PostgreSQL API"
#endif

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/webhook/secret_fetch.h"

/* GET /customer is a few kB; anything much larger is not VoIPBIN. */
#define MAX_ANSWER (1024 * 1024)

typedef struct Job
{
	char	   *url;
	char	   *accesskey;
	char	   *bearer;
	char	   *ca_file;
	long		timeout_ms;
	void		(*wake) (void);
	SecretFetchResult result;
	size_t		cap;
	bool		too_large;
} Job;

static pthread_t thread;
static bool started;			/* a thread exists and is not joined */
static int	finished;			/* atomic: the thread is done */
static int	abort_flag;			/* atomic */
static Job *job;

static void
wipe_free(char *s)
{
	if (s)
	{
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Job		   *j = userdata;
	size_t		n = size * nmemb;

	if (n > MAX_ANSWER - j->result.len)
	{
		j->too_large = true;
		return 0;
	}
	if (j->result.len + n + 1 > j->cap)
	{
		size_t		cap = j->cap ? j->cap * 2 : 8192;
		char	   *b;

		while (cap < j->result.len + n + 1)
			cap *= 2;
		if ((b = malloc(cap)) == NULL)
			return 0;
		if (j->result.body)
		{
			memcpy(b, j->result.body, j->result.len);
			OPENSSL_cleanse(j->result.body, j->cap);
			free(j->result.body);
		}
		j->result.body = b;
		j->cap = cap;
	}
	memcpy(j->result.body + j->result.len, ptr, n);
	j->result.len += n;
	j->result.body[j->result.len] = '\0';
	return n;
}

static int
on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	return __atomic_load_n(&abort_flag, __ATOMIC_RELAXED) ? 1 : 0;
}

/* Adds voipbin.ca_file to the CAs libcurl already trusts, as rest.c does. */
static CURLcode
on_ssl_ctx(CURL *curl, void *ssl_ctx, void *userptr)
{
	Job		   *j = userptr;

	if (SSL_CTX_load_verify_locations((SSL_CTX *) ssl_ctx, j->ca_file, NULL) != 1)
	{
		ERR_clear_error();
		return CURLE_SSL_CACERT_BADFILE;
	}
	return CURLE_OK;
}

static void *
run(void *arg)
{
	Job		   *j = arg;
	CURL	   *easy = curl_easy_init();
	CURLU	   *url = curl_url();
	CURLcode	rc = CURLE_OUT_OF_MEMORY;
	struct curl_slist *headers = NULL;

	if (easy && url && curl_url_set(url, CURLUPART_URL, j->url, 0) == CURLUE_OK)
	{
		if (j->accesskey)
		{
			/* an access key works only as ?accesskey= (docs/voipbin.md, "Credentials") */
			size_t		n = strlen("accesskey=") + strlen(j->accesskey) + 1;
			char	   *q = malloc(n);

			if (q)
			{
				snprintf(q, n, "accesskey=%s", j->accesskey);
				curl_url_set(url, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE);
				OPENSSL_cleanse(q, n);
				free(q);
			}
		}
		else if (j->bearer)
		{
			curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BEARER);
			curl_easy_setopt(easy, CURLOPT_XOAUTH2_BEARER, j->bearer);
		}
		headers = curl_slist_append(headers, "Accept: application/json");
		curl_easy_setopt(easy, CURLOPT_CURLU, url);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(easy, CURLOPT_USERAGENT, "voipbin-postgres");
		curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
		/* a redirect would carry the access key elsewhere */
		curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
		if (j->ca_file)
		{
			curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
			curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, j);
		}
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, j->timeout_ms);
		curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, j);
		curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress);
		rc = curl_easy_perform(easy);
		if (rc == CURLE_OK)
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &j->result.http_status);
	}
	if (rc != CURLE_OK)
	{
		/* curl_easy_strerror names the failure, never the URL (which holds the key) */
		snprintf(j->result.error, sizeof(j->result.error), "%s",
				 j->too_large ? "the answer is larger than 1 MB" : curl_easy_strerror(rc));
		j->result.http_status = 0;
	}
	curl_slist_free_all(headers);
	if (url)
		curl_url_cleanup(url);
	if (easy)
		curl_easy_cleanup(easy);
	__atomic_store_n(&finished, 1, __ATOMIC_RELEASE);
	if (j->wake)
		j->wake();
	return NULL;
}

static void
job_free(Job *j)
{
	if (j == NULL)
		return;
	wipe_free(j->url);
	wipe_free(j->accesskey);
	wipe_free(j->bearer);
	free(j->ca_file);
	secret_fetch_free(&j->result);
	free(j);
}

bool
secret_fetch_running(void)
{
	return started && !__atomic_load_n(&finished, __ATOMIC_ACQUIRE);
}

bool
secret_fetch_start(const char *url, const char *accesskey, const char *bearer,
				   const char *ca_file, long timeout_ms, void (*wake) (void))
{
	sigset_t	all;
	sigset_t	old;
	Job		   *j;
	int			rc;

	if (secret_fetch_running())
		return false;
	if (started)
	{
		/* a result nobody took */
		pthread_join(thread, NULL);
		started = false;
		job_free(job);
		job = NULL;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return false;
	j->url = strdup(url);
	j->accesskey = accesskey ? strdup(accesskey) : NULL;
	j->bearer = bearer ? strdup(bearer) : NULL;
	j->ca_file = ca_file ? strdup(ca_file) : NULL;
	j->timeout_ms = timeout_ms;
	j->wake = wake;
	if (j->url == NULL || (accesskey && !j->accesskey) || (bearer && !j->bearer) ||
		(ca_file && !j->ca_file))
	{
		job_free(j);
		return false;
	}
	__atomic_store_n(&finished, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&abort_flag, 0, __ATOMIC_RELAXED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&thread, NULL, run, j);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		job_free(j);
		return false;
	}
	job = j;
	started = true;
	return true;
}

bool
secret_fetch_result(SecretFetchResult *out)
{
	if (!started || !__atomic_load_n(&finished, __ATOMIC_ACQUIRE))
		return false;
	pthread_join(thread, NULL);
	started = false;
	*out = job->result;
	memset(&job->result, 0, sizeof(job->result));
	job_free(job);
	job = NULL;
	return true;
}

void
secret_fetch_stop(void)
{
	if (!started)
		return;
	__atomic_store_n(&abort_flag, 1, __ATOMIC_RELAXED);
	pthread_join(thread, NULL);
	started = false;
	job_free(job);
	job = NULL;
}

void
secret_fetch_free(SecretFetchResult *r)
{
	if (r->body)
	{
		OPENSSL_cleanse(r->body, r->len);
		free(r->body);
	}
	r->body = NULL;
	r->len = 0;
}
