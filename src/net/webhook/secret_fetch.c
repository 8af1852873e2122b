/*
 * secret_fetch.c — one libcurl GET on a thread that never touches PostgreSQL,
 * set up by net/http/http_client.c as the other REST clients are.
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

#include "net/webhook/secret_fetch.h"
#include "net/http/http_client.h"
#include "net/no_postgres.h"

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
} Job;

static pthread_t thread;
static bool started;			/* a thread exists and is not joined */
static int	finished;			/* atomic: the thread is done */
static int	abort_flag;			/* atomic */
static Job *job;

static int
on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	return __atomic_load_n(&abort_flag, __ATOMIC_RELAXED) ? 1 : 0;
}

static void *
run(void *arg)
{
	Job		   *j = arg;
	HttpRequest req = {0};
	HttpCall	c;
	const char *why = NULL;
	CURLcode	rc = CURLE_OUT_OF_MEMORY;

	req.base_url = j->url;
	req.credential = j->accesskey ? j->accesskey : j->bearer;
	req.cred_kind = j->accesskey ? HTTP_CRED_ACCESSKEY :
		j->bearer ? HTTP_CRED_BEARER : HTTP_CRED_NONE;
	req.ca_file = j->ca_file;
	req.timeout_ms = j->timeout_ms;
	req.max_response = MAX_ANSWER;
	req.wipe_response = true;	/* it holds the webhook secret */
	req.user_agent = "voipbin-postgres";

	if (http_call_setup(&c, &req, &why) == HTTP_SETUP_OK)
	{
		why = NULL;
		if (curl_easy_setopt(c.easy, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
			curl_easy_setopt(c.easy, CURLOPT_XFERINFOFUNCTION, on_progress) == CURLE_OK)
			rc = curl_easy_perform(c.easy);
		if (rc == CURLE_OK)
			curl_easy_getinfo(c.easy, CURLINFO_RESPONSE_CODE, &j->result.http_status);
	}
	if (rc == CURLE_OK)
	{
		/* the answer as it came (NULL when empty); secret_fetch_free() wipes it */
		j->result.body = c.body;
		j->result.len = c.len;
		c.body = NULL;
	}
	else
	{
		/* never libcurl's error buffer, nor anything else naming the URL (which holds the key) */
		snprintf(j->result.error, sizeof(j->result.error), "%s",
				 why ? why :
				 c.too_large || rc == CURLE_FILESIZE_EXCEEDED ? "the answer is larger than 1 MB" :
				 curl_easy_strerror(rc));
		j->result.http_status = 0;
	}
	http_call_cleanup(&c);
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
	http_wipe_free(j->url);
	http_wipe_free(j->accesskey);
	http_wipe_free(j->bearer);
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
