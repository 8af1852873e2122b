/*
 * rest.c — VoIPBIN's REST API from a backend, through libcurl.
 *
 * A call runs in the backend that made the SQL call.  The transfer is driven
 * by curl's multi interface in slices of REST_SLICE_MS with
 * CHECK_FOR_INTERRUPTS() between them, so a statement cancel or
 * statement_timeout ends it within one slice.  The handle is set up by
 * net/http/http_client.c, whose callbacks only copy bytes with malloc (or,
 * for TLS, call OpenSSL): elog and palloc may longjmp, and must never do so
 * from inside libcurl.
 *
 * Everything said about a call (messages, details, hints) is passed through
 * redact_secret(), and names the URL without its query string, which is where
 * an access key travels.
 */
#include "voipbin.h"

#include <pthread.h>
#include <signal.h>

#include <curl/curl.h>

#include "common/jsonapi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "base/rest.h"
#include "base/endpoint.h"
#include "base/settings.h"
#include "net/http/http_client.h"

#define REST_MAX_RESPONSE		(1024 * 1024)
#define REST_CONNECT_TIMEOUT_MS 5000
#define REST_SLICE_MS			25
#define REST_USER_AGENT			"voipbin-postgres/1.0"

/* One HTTP exchange, as far as it got. */
typedef struct RestAttempt
{
	CURLcode	code;			/* CURLE_OK: an HTTP answer arrived */
	long		status;
	char	   *body;			/* palloc'd, NUL-terminated */
	size_t		len;
	bool		too_large;
	const char *ca_file;
	bool		ca_failed;		/* ca_file could not be loaded */
	bool		connected;
	bool		tls_done;
	char	   *content_type;
	char	   *request_id;		/* the X-Request-Id header */
	bool		has_retry_after;
	long		retry_after_s;
	char		errbuf[CURL_ERROR_SIZE];
} RestAttempt;

static void
rest_init_once(void)
{
	if (!http_init())
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise libcurl")));
}

bool
rest_target_load(RestTarget *t, bool required)
{
	Endpoint	ep;
	const char *url_error;
	char	   *cred_error;
	size_t		len;

	memset(t, 0, sizeof(*t));
	if (!endpoint_parse(voipbin_api_url ? voipbin_api_url : "", &ep, &url_error))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("invalid voipbin.api_url: %s", url_error)));
	t->api_url = pstrdup(voipbin_api_url);
	len = strlen(t->api_url);
	while (len > 0 && t->api_url[len - 1] == '/')
		t->api_url[--len] = '\0';

	t->credential = credential_load(&t->kind, &cred_error);
	if (cred_error)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s", cred_error)));
	if (t->credential == NULL)
	{
		if (!required)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no VoIPBIN credential is configured"),
				 errhint("Put an access key (vb_…) or a JWT in the file named by voipbin.token_file, then SELECT pg_reload_conf().")));
	}
	return true;
}

/*
 * value percent-encoded for a URL's query (RFC 3986: all but the unreserved
 * characters), as CURLU_URLENCODE does for REST calls; palloc'd.  Here
 * rather than in endpoint.c, which the fuzz build compiles without libcurl.
 */
char *
rest_query_escape(const char *value)
{
	char	   *escaped = curl_easy_escape(NULL, value, (int) strlen(value));
	char	   *copy;

	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	copy = pstrdup(escaped);
	http_wipe(escaped);
	curl_free(escaped);
	return copy;
}

bool
rest_is_http_url(const char *url)
{
	CURLU	   *u;
	char	   *host = NULL;
	bool		ok;

	/* libcurl parses more schemes than VoIPBIN delivers to */
	if (pg_strncasecmp(url, "http://", 7) != 0 &&
		pg_strncasecmp(url, "https://", 8) != 0)
		return false;
	u = curl_url();
	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
		host != NULL && host[0] != '\0';
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/* The host of an http(s):// URL as libcurl reads it (palloc'd), or NULL. */
char *
rest_url_host(const char *url)
{
	CURLU	   *u;
	char	   *host = NULL;
	char	   *copy = NULL;

	if (!rest_is_http_url(url))
		return NULL;
	u = curl_url();
	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host != NULL)
		copy = pstrdup(host);
	curl_free(host);
	curl_url_cleanup(u);
	return copy;
}

/*
 * PostgreSQL's signal handlers belong to the backend's own thread; libcurl's
 * threaded resolver starts its thread inside curl_multi_perform() and
 * inherits this mask, so every signal keeps arriving where it is handled.
 * Signals that come meanwhile are delivered when the mask is restored.
 */
static CURLMcode
multi_perform_masked(CURLM *multi, int *running)
{
	sigset_t	all;
	sigset_t	old;
	CURLMcode	mc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	mc = curl_multi_perform(multi, running);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return mc;
}

/* What one attempt asks libcurl for: the call, its credential, its limits. */
static HttpRequest
request_for(const RestTarget *t, const char *method, const char *path,
			const char *payload, size_t payload_len, long timeout_ms, const char *ca_file)
{
	HttpRequest req = {0};

	req.base_url = t->api_url;
	req.path = path;
	req.method = method;
	req.body = payload;
	req.body_len = payload_len;
	req.json_always = true;
	req.credential = t->credential;
	req.cred_kind = t->kind == CRED_ACCESSKEY ? HTTP_CRED_ACCESSKEY : HTTP_CRED_BEARER;
	req.ca_file = ca_file;
	req.timeout_ms = timeout_ms;
	req.connect_timeout_ms = Min(timeout_ms, (long) REST_CONNECT_TIMEOUT_MS);
	req.max_response = REST_MAX_RESPONSE;
	req.user_agent = REST_USER_AGENT;
	return req;
}

/* An ERROR for a call that could not even be set up. */
static void
report_setup(const RestTarget *t, HttpSetupError setup, const char *why, bool have_multi)
{
	if (setup == HTTP_SETUP_NO_MEMORY || !have_multi)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory for a VoIPBIN REST call")));
	if (setup == HTTP_SETUP_BAD_URL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("libcurl does not accept voipbin.api_url \"%s\"",
						redact_secret(t->api_url, t->credential))));
	if (setup != HTTP_SETUP_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("%s", why)));
}

/*
 * Runs the transfer to its end in slices, so that a cancel or
 * statement_timeout (CHECK_FOR_INTERRUPTS) stops it at once.
 */
static void
run_transfer(CURLM *multi, HttpCall *c)
{
	if (curl_multi_add_handle(multi, c->easy) != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("libcurl could not start a transfer")));
	for (;;)
	{
		int			running = 0;
		CURLMcode	mc = multi_perform_masked(multi, &running);

		if (mc == CURLM_OK && running > 0)
		{
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			mc = curl_multi_poll(multi, NULL, 0, REST_SLICE_MS, NULL);
			pgstat_report_wait_end();
		}
		if (mc != CURLM_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("libcurl failed: %s", curl_multi_strerror(mc))));
		CHECK_FOR_INTERRUPTS();
		if (running == 0)
			break;
	}
}

/* The transfer's outcome, answer and headers into *a, in palloc'd memory. */
static void
collect_answer(CURLM *multi, HttpCall *c, RestAttempt *a)
{
	CURLMsg    *msg;
	int			left;
	curl_off_t	t_connect = 0;
	curl_off_t	t_tls = 0;

	a->code = CURLE_GOT_NOTHING;
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == c->easy)
			a->code = msg->data.result;

	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &a->status);
	curl_easy_getinfo(c->easy, CURLINFO_CONNECT_TIME_T, &t_connect);
	curl_easy_getinfo(c->easy, CURLINFO_APPCONNECT_TIME_T, &t_tls);
	a->connected = t_connect > 0;
	a->tls_done = t_tls > 0;
	a->too_large = c->too_large;
	a->ca_failed = c->ca_failed;
	memcpy(a->errbuf, c->errbuf, sizeof(a->errbuf));
	if (a->status > 0)
	{
		char	   *ct = NULL;

		if (curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
			a->content_type = pstrdup(ct);
		if (c->request_id)
			a->request_id = pstrdup(c->request_id);
		a->has_retry_after = c->has_retry_after;
		a->retry_after_s = c->retry_after_s;
	}
	a->body = palloc(c->len + 1);
	if (c->len > 0)
		memcpy(a->body, c->body, c->len);
	a->len = c->len;
	a->body[a->len] = '\0';
}

/*
 * One exchange, within timeout_ms; the outcome is left in *a, and libcurl's
 * resources are freed whatever happens.
 */
static void
rest_attempt(const RestTarget *t, const char *method, const char *path,
			 const char *payload, size_t payload_len, long timeout_ms,
			 RestAttempt *a)
{
	HttpRequest req;
	HttpCall   *c = palloc(sizeof(HttpCall));	/* not on the stack: PG_TRY */
	HttpSetupError setup;
	const char *why;
	CURLM	   *multi;

	memset(a, 0, sizeof(*a));
	a->ca_file = (voipbin_ca_file && voipbin_ca_file[0]) ? voipbin_ca_file : NULL;
	req = request_for(t, method, path, payload, payload_len, timeout_ms, a->ca_file);

	/* everything that must be freed exists before PG_TRY, and is not reassigned */
	setup = http_call_setup(c, &req, &why);
	multi = curl_multi_init();

	PG_TRY();
	{
		report_setup(t, setup, why, multi != NULL);
		run_transfer(multi, c);
		if (c->no_memory)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory for VoIPBIN's answer to %s %s", method,
							redact_secret(t->api_url, t->credential))));
		collect_answer(multi, c, a);
	}
	PG_FINALLY();
	{
		if (multi && c->easy)
			curl_multi_remove_handle(multi, c->easy);
		http_call_cleanup(c);
		if (multi)
			curl_multi_cleanup(multi);
	}
	PG_END_TRY();
	pfree(c);
}

/* Sleeps ms on the latch: a cancel or statement_timeout ends it at once. */
static void
rest_sleep(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The answer's JSON in the server encoding, or NULL with *why when it is
 * none.  Checked before jsonb_in, which would raise its own error, so that an
 * error answer that is not JSON (a proxy's HTML page) still reports its status.
 */
Jsonb *
rest_text_to_jsonb(const char *data, size_t len, char **why)
{
	char	   *s;
	JsonLexContext *lex;
	JsonParseErrorType err;

	if (!pg_verify_mbstr(PG_UTF8, data, (int) len, true))
	{
		*why = "it is not valid UTF-8";
		return NULL;
	}
	s = pg_any_to_server(data, (int) len, PG_UTF8);
	/* with escapes decoded, so that \u0000 fails here and not in jsonb_in */
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, s, strlen(s), GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(s, strlen(s), GetDatabaseEncoding(), true);
#endif
	err = pg_parse_json(lex, &nullSemAction);
	if (err != JSON_SUCCESS)
	{
		*why = json_errdetail(err, lex);
		return NULL;
	}
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
}

static Jsonb *
body_to_jsonb(const RestAttempt *a, char **why)
{
	return rest_text_to_jsonb(a->body, a->len, why);
}

char *
rest_string_field(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) && v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	return NULL;
}

char *
rest_error_detail(const char *body, size_t len, bool with_request_id,
				  const char *header_request_id)
{
	char	   *reason = NULL;
	char	   *message = NULL;
	char	   *request_id = NULL;
	char	   *why;
	Jsonb	   *env = len > 0 ? rest_text_to_jsonb(body, len, &why) : NULL;
	StringInfoData detail;

	/* VoIPBIN's envelope: {"error": {"reason", "message", "request_id", …}} */
	if (env && JB_ROOT_IS_OBJECT(env))
	{
		JsonbValue	e;

		if (getKeyJsonValueFromContainer(&env->root, "error", 5, &e) &&
			e.type == jbvBinary && JsonContainerIsObject(e.val.binary.data))
		{
			reason = rest_string_field(e.val.binary.data, "reason");
			message = rest_string_field(e.val.binary.data, "message");
			request_id = rest_string_field(e.val.binary.data, "request_id");
		}
	}
	if (request_id == NULL && header_request_id && header_request_id[0])
		request_id = pstrdup(header_request_id);

	initStringInfo(&detail);
	if (reason)
		appendStringInfo(&detail, "reason: %s", reason);
	if (message)
		appendStringInfo(&detail, "%smessage: %s", detail.len ? ", " : "", message);
	if (request_id && with_request_id)
		appendStringInfo(&detail, "%srequest_id: %s", detail.len ? ", " : "", request_id);
	return detail.len ? detail.data : NULL;
}

/* An ERROR for an HTTP answer that is no success (docs/functions.md, "REST errors"). */
static void
report_status(const RestTarget *t, const char *method, const char *url,
			  const RestAttempt *a, bool retried)
{
	char	   *detail = rest_error_detail(a->body, a->len, true, a->request_id);
	int			code;
	char	   *msg;
	char	   *hint = NULL;

	if (detail == NULL)
		detail = "VoIPBIN sent no error details.";

	if (a->status == 400)
	{
		code = ERRCODE_INVALID_PARAMETER_VALUE;
		msg = psprintf("VoIPBIN rejected %s %s as invalid (HTTP 400)", method, url);
	}
	else if (a->status == 401)
	{
		code = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		msg = psprintf("VoIPBIN did not accept the credential for %s %s (HTTP 401)", method, url);
		hint = "Check the access key or JWT in voipbin.token_file (or voipbin.token); a JWT expires after 7 days.";
	}
	else if (a->status == 403)
	{
		code = ERRCODE_INSUFFICIENT_PRIVILEGE;
		msg = psprintf("VoIPBIN denied %s %s (HTTP 403)", method, url);
		hint = "This needs an admin-level token or access key: an access key (vb_…) always qualifies, an agent's JWT needs the CustomerAdmin permission.";
	}
	else if (a->status == 404)
	{
		code = ERRCODE_UNDEFINED_OBJECT;
		msg = psprintf("VoIPBIN has no %s %s (HTTP 404)", method, url);
		/* no such route, or (a reason naming the resource) no such id */
		if (strstr(detail, "ROUTE_NOT_FOUND") != NULL || strstr(detail, "reason") == NULL)
			hint = "Check voipbin.api_url and the path: VoIPBIN's API is https://api.voipbin.net/v1.0.";
		else
			hint = "VoIPBIN knows no such resource of this customer: check the id.";
	}
	else if (a->status == 409)
	{
		code = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		msg = psprintf("VoIPBIN refused %s %s in the resource's present state (HTTP 409)", method, url);
	}
	else if (a->status == 429)
	{
		code = ERRCODE_CONFIGURATION_LIMIT_EXCEEDED;
		msg = psprintf("VoIPBIN's rate limit refused %s %s (HTTP 429)", method, url);
		if (retried)
			hint = psprintf("Waited the Retry-After of %ld s once; try again later.", a->retry_after_s);
		else if (a->has_retry_after)
			hint = psprintf("Its Retry-After of %ld s does not fit in voipbin.http_timeout (%d ms); try again later.",
							a->retry_after_s, voipbin_http_timeout_ms);
		else
			hint = "Try again later.";
	}
	else if (a->status >= 500)
	{
		code = ERRCODE_SYSTEM_ERROR;
		msg = psprintf("VoIPBIN failed on %s %s (HTTP %ld)", method, url, a->status);
	}
	else
	{
		code = ERRCODE_SYSTEM_ERROR;
		msg = psprintf("VoIPBIN answered %s %s with HTTP %ld", method, url, a->status);
	}

	ereport(ERROR,
			(errcode(code),
			 errmsg("%s", redact_secret(msg, t->credential)),
			 errdetail("%s", redact_secret(detail, t->credential)),
			 hint ? errhint("%s", hint) : 0));
}

/* An ERROR for an exchange that got no (complete) HTTP answer. */
static void
report_transport(const RestTarget *t, const char *method, const char *url,
				 const RestAttempt *a, long timeout_ms)
{
	const char *what;
	const char *hint = NULL;
	const char *said = a->errbuf[0] ? a->errbuf : curl_easy_strerror(a->code);

	if (a->too_large || a->code == CURLE_FILESIZE_EXCEEDED)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("VoIPBIN's answer to %s %s is larger than %d bytes",
						method, redact_secret(url, t->credential), REST_MAX_RESPONSE)));

	switch (a->code)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			what = "DNS lookup failed";
			break;
		case CURLE_COULDNT_CONNECT:
			what = "could not connect";
			break;
		case CURLE_OPERATION_TIMEDOUT:
			what = psprintf("timed out after %ld ms %s", timeout_ms,
							!a->connected ? "connecting" :
							(pg_strncasecmp(url, "https:", 6) == 0 && !a->tls_done) ?
							"in the TLS handshake" : "waiting for the answer");
			hint = "voipbin.http_timeout limits the whole call.";
			break;
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_INVALIDCERTSTATUS:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_ENGINE_INITFAILED:
		case CURLE_SSL_CLIENTCERT:
			if (a->ca_failed)
			{
				what = psprintf("TLS setup failed: could not load voipbin.ca_file \"%s\"", a->ca_file);
				hint = "voipbin.ca_file must be a PEM file the server's OS user can read.";
			}
			else
			{
				what = "TLS failed";
				hint = "The server's certificate must be valid for its name and chain to a CA of the system store or of voipbin.ca_file.";
			}
			break;
		default:
			what = "the connection failed";
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("no answer from VoIPBIN for %s %s: %s",
					method, redact_secret(url, t->credential), what),
			 errdetail("libcurl: %s", redact_secret(said, t->credential)),
			 hint ? errhint("%s", hint) : 0));
}

Jsonb *
rest_call(const RestTarget *t, const char *method, const char *path, Jsonb *body)
{
	char	   *url = psprintf("%s%s", t->api_url, path);
	char	   *payload = NULL;
	size_t		payload_len = 0;
	TimestampTz deadline;
	RestAttempt a;
	bool		retried = false;
	long		timeout_ms;
	Jsonb	   *result;
	char	   *why;

	rest_init_once();
	if (body)
	{
		char	   *s = JsonbToCString(NULL, &body->root, VARSIZE(body));

		/* VoIPBIN reads UTF-8, whatever the database's encoding */
		payload = pg_server_to_any(s, strlen(s), PG_UTF8);
		payload_len = strlen(payload);
	}

	/* voipbin.http_timeout bounds the whole call, a 429's wait included */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), voipbin_http_timeout_ms);
	for (;;)
	{
		timeout_ms = Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline), 1);
		rest_attempt(t, method, path, payload, payload_len, timeout_ms, &a);
		if (a.code == CURLE_OK && a.status == 429 && !retried && a.has_retry_after &&
			a.retry_after_s * 1000 <
			TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline))
		{
			pfree(a.body);
			rest_sleep(a.retry_after_s * 1000);
			retried = true;
			continue;
		}
		break;
	}

	if (a.code != CURLE_OK)
		report_transport(t, method, url, &a, timeout_ms);
	if (a.status < 200 || a.status > 299)
		report_status(t, method, url, &a, retried);
	if (a.len == 0)
		return NULL;
	result = body_to_jsonb(&a, &why);
	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("VoIPBIN answered %s %s with something that is not JSON",
						method, redact_secret(url, t->credential)),
				 errdetail("HTTP %ld, Content-Type %s, %zu bytes: %s",
						   a.status, a.content_type ? a.content_type : "(none)", a.len,
						   redact_secret(why, t->credential))));
	pfree(a.body);
	return result;
}
