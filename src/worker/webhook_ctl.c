/*
 * webhook.c — the worker's side of the webhook receiver.
 *
 * The receiver (net/webhook_receiver.c) runs on threads of its own; this file,
 * on the worker's main thread, starts, stops and moves it as the settings
 * say, keeps voipbin_status() current, and looks after the HMAC key: the
 * voipbin.webhook_secret setting, or else the customer's webhook_secret that
 * GET /customer returns, fetched off this thread (net/secret_fetch.c) with the
 * worker's credential, and fetched again after a request fails to verify (the
 * secret may have been rotated), at most once a minute: the receiver holds
 * that request (on its own thread, up to 5 s) until the fetch has ended and
 * checks it again against the key then in hand, so the first request signed
 * with a rotated secret is stored, not refused.  Likewise while the receiver
 * has no key yet and its first fetch is due or under way (it has just
 * started): a request waits for that fetch (up to 5 s) rather than getting
 * 503 a moment before the key arrives; 503 is for "no key could be had".  A
 * receiver that stops forgets a fetched key and fetches it when it starts.
 *
 * Verified bodies do not pass here: the receiver appends them to the journal,
 * which hands them to the worker's store loop like WebSocket frames.
 */
#include "voipbin.h"

#include "mb/pg_wchar.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker/webhook_ctl.h"
#include "base/backoff.h"
#include "base/endpoint.h"
#include "base/settings.h"
#include "base/status.h"
#include "net/http/http_client.h"
#include "net/webhook/secret_fetch.h"
#include "net/webhook/webhook_receiver.h"

/* While no secret is known, retry a failed fetch after 1 s, 2 s, … up to a minute. */
#define FETCH_RETRY_MIN_MS 1000
#define FETCH_RETRY_MAX_MS 60000

typedef struct WebhookWorker
{
	int			wake_fd;
	bool		standby;		/* a hot standby does not take webhooks */
	bool		listening;
	int			port;			/* what the receiver was started with */
	char	   *addresses;
	char		listen_state[VB_ERROR_LEN];

	/* the key */
	bool		from_setting;
	bool		known;			/* fetched (or set) and handed to the receiver */
	char		note[VB_ERROR_LEN];	/* why there is no key, for the status */
	char	   *cred;			/* the credential GET /customer is made with */
	CredentialKind cred_kind;
	char	   *api_url;
	char	   *ca_file;
	TimestampTz fetch_due;		/* 0: none due */
	int			fetch_failures;

	uint64		received;
	uint64		refused;
} WebhookWorker;

static WebhookWorker wh;

static void
publish_state(void)
{
	char		state[VB_ERROR_LEN];

	if (!wh.listening)
		strlcpy(state, wh.listen_state, sizeof(state));
	else if (wh.note[0])
		snprintf(state, sizeof(state), "%s; %s", wh.listen_state, wh.note);
	else
		strlcpy(state, wh.listen_state, sizeof(state));
	SpinLockAcquire(&voipbin_shared->mutex);
	strlcpy(voipbin_shared->webhook_state, state, VB_ERROR_LEN);
	SpinLockRelease(&voipbin_shared->mutex);
}

static char *
keep_string(char *old, const char *s)
{
	if (old)
		pfree(old);
	return MemoryContextStrdup(TopMemoryContext, s ? s : "");
}

static void
forget_credential(void)
{
	if (wh.cred)
	{
		http_wipe(wh.cred);
		pfree(wh.cred);
	}
	wh.cred = NULL;
}

/*
 * A fetch of the key is due now; while no key is in hand, a request that
 * arrives meanwhile waits for it.
 */
static void
want_key(TimestampTz now)
{
	if (!secret_fetch_running())
		wh.fetch_due = now;
	if (!wh.known)
	{
		webhook_receiver_set_key_pending(true);
		strlcpy(wh.note, "no secret yet: fetching the customer's webhook_secret", sizeof(wh.note));
	}
}

/* The receiver stopped: a key from GET /customer is fetched afresh when it starts again. */
static void
forget_fetched_key(void)
{
	if (wh.from_setting || !wh.known)
		return;
	secret_fetch_stop();
	webhook_receiver_set_secret(NULL, 0);
	webhook_receiver_set_refetch(false, true);
	webhook_receiver_refetch_done();
	wh.known = false;
	wh.fetch_due = 0;
	wh.fetch_failures = 0;
}

/* Starts, stops or moves the listening sockets. */
static void
configure_listener(void)
{
	const char *addresses = voipbin_webhook_listen_addresses ? voipbin_webhook_listen_addresses : "";

	/*
	 * A standby's journal would be stored only if it is promoted: a 200 there
	 * could be a lost event, so VoIPBIN gets no answer and goes elsewhere or
	 * retries.
	 */
	wh.standby = RecoveryInProgress();
	if (voipbin_webhook_port == 0 || wh.standby)
	{
		if (wh.listening)
		{
			webhook_receiver_stop();
			ereport(LOG, (errmsg("voipbin: webhook receiver stopped")));
			forget_fetched_key();
		}
		wh.listening = false;
		wh.port = 0;
		strlcpy(wh.listen_state,
				voipbin_webhook_port == 0 ? "off" : "not listening: this server is a standby (it starts on promotion)",
				sizeof(wh.listen_state));
		return;
	}
	if (wh.listening && wh.port == voipbin_webhook_port && wh.addresses &&
		strcmp(wh.addresses, addresses) == 0)
		return;

	/* a receiver that starts without its key fetches it, and requests wait for it */
	if (!wh.listening && !wh.known && !wh.from_setting && wh.cred)
		want_key(GetCurrentTimestamp());
	wh.port = voipbin_webhook_port;
	wh.addresses = keep_string(wh.addresses, addresses);
	wh.listening = webhook_receiver_start(addresses, voipbin_webhook_port, wh.listen_state,
										  sizeof(wh.listen_state)) > 0;
	if (wh.listening)
		ereport(LOG, (errmsg("voipbin: webhook receiver %s, path \"%s\"",
							 wh.listen_state, voipbin_webhook_path)));
	else
		ereport(WARNING,
				(errmsg("voipbin: webhook receiver not started: %s", wh.listen_state),
				 errhint("Change voipbin.webhook_port or voipbin.webhook_listen_addresses and reload.")));
}

/* Takes the key from the setting, or arranges to fetch it. */
static void
configure_secret(void)
{
	CredentialKind kind;
	char	   *error = NULL;
	char	   *cred;
	bool		changed;

	if (voipbin_webhook_secret && voipbin_webhook_secret[0])
	{
		size_t		len = strlen(voipbin_webhook_secret);

		secret_fetch_stop();
		forget_credential();
		webhook_receiver_set_refetch(false, true);
		webhook_receiver_set_key_pending(false);
		if (len >= WEBHOOK_SECRET_MAX)
		{
			webhook_receiver_set_secret(NULL, 0);
			wh.known = false;
			snprintf(wh.note, sizeof(wh.note),
					 "voipbin.webhook_secret is longer than %d bytes: every request is refused",
					 WEBHOOK_SECRET_MAX - 1);
		}
		else
		{
			webhook_receiver_set_secret(voipbin_webhook_secret, len);
			wh.known = true;
			wh.note[0] = '\0';
		}
		wh.from_setting = true;
		wh.fetch_due = 0;
		return;
	}

	cred = credential_load(&kind, &error);
	changed = wh.from_setting || !wh.cred || !cred || strcmp(cred, wh.cred) != 0 ||
		strcmp(voipbin_api_url ? voipbin_api_url : "", wh.api_url ? wh.api_url : "") != 0 ||
		strcmp(voipbin_ca_file ? voipbin_ca_file : "", wh.ca_file ? wh.ca_file : "") != 0;
	if (!changed)
	{
		http_wipe(cred);
		return;
	}
	if (wh.from_setting)
	{
		webhook_receiver_set_secret(NULL, 0);
		wh.known = false;
	}
	wh.from_setting = false;
	secret_fetch_stop();
	forget_credential();
	/* another credential: the rate limit of its refetches starts afresh */
	webhook_receiver_set_refetch(wh.known, true);
	wh.api_url = keep_string(wh.api_url, voipbin_api_url);
	wh.ca_file = keep_string(wh.ca_file, voipbin_ca_file);
	wh.fetch_failures = 0;
	if (cred == NULL)
	{
		webhook_receiver_set_secret(NULL, 0);
		webhook_receiver_set_refetch(false, true);
		webhook_receiver_set_key_pending(false);
		wh.known = false;
		wh.fetch_due = 0;
		snprintf(wh.note, sizeof(wh.note),
				 "no secret: voipbin.webhook_secret is empty and %s, so the customer's webhook_secret cannot be fetched",
				 error ? error : "no credential is set");
		return;
	}
	wh.cred = MemoryContextStrdup(TopMemoryContext, cred);
	wh.cred_kind = kind;
	http_wipe(cred);
	/* a new credential may be another customer's: ask now, keep the old key meanwhile */
	want_key(GetCurrentTimestamp());
}

static void
configure(void)
{
	webhook_receiver_set_path(voipbin_webhook_path);
	webhook_receiver_set_max_body((uint64_t) voipbin_max_frame_size);
	configure_secret();
	configure_listener();
	publish_state();
}

int
webhook_worker_start(void)
{
	char		errbuf[256];

	memset(&wh, 0, sizeof(wh));
	strlcpy(wh.listen_state, "off", sizeof(wh.listen_state));
	/* from this thread, before any other thread could use libcurl */
	if (!http_init())
		ereport(FATAL, (errmsg("voipbin: could not initialise libcurl")));
	wh.wake_fd = webhook_receiver_init(errbuf, sizeof(errbuf));
	if (wh.wake_fd < 0)
		ereport(FATAL, (errmsg("voipbin: webhook receiver: %s", errbuf)));
	configure();
	return wh.wake_fd;
}

void
webhook_worker_reload(void)
{
	configure();
}

void
webhook_worker_stop(void)
{
	webhook_receiver_stop();
	secret_fetch_stop();
	webhook_receiver_set_secret(NULL, 0);
	forget_credential();
	wh.listening = false;
}

/* The webhook_secret out of GET /customer's answer, or NULL with *why. */
static char *
secret_from_answer(const SecretFetchResult *r, const char **why)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *volatile secret = NULL;

	if (r->http_status != 200)
	{
		*why = r->http_status == 0 ? psprintf("GET /customer failed: %s", r->error) :
			psprintf("GET /customer answered HTTP %ld", r->http_status);
		return NULL;
	}
	if (r->body == NULL || memchr(r->body, '\0', r->len) != NULL ||
		!pg_verify_mbstr(PG_UTF8, r->body, (int) r->len, true))
	{
		*why = "GET /customer answered no JSON text";
		return NULL;
	}
	PG_TRY();
	{
		char	   *text = pg_any_to_server(r->body, (int) r->len, PG_UTF8);
		Jsonb	   *c = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
		JsonbValue	v;

		if (!JB_ROOT_IS_OBJECT(c) || JB_ROOT_IS_SCALAR(c))
			*why = "GET /customer answered no JSON object";
		else if (!getKeyJsonValueFromContainer(&c->root, "webhook_secret",
											   strlen("webhook_secret"), &v) ||
				 v.type != jbvString || v.val.string.len == 0)
			*why = "the customer has no webhook_secret (VoIPBIN then signs nothing)";
		else
			secret = pnstrdup(v.val.string.val, v.val.string.len);
		if (text != r->body)
			http_wipe(text);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		*why = "GET /customer answered invalid JSON";
	}
	PG_END_TRY();
	return secret;
}

static void
take_fetch_result(TimestampTz now)
{
	SecretFetchResult r;
	const char *why = NULL;
	char	   *secret;

	if (!secret_fetch_result(&r))
		return;
	secret = secret_from_answer(&r, &why);
	secret_fetch_free(&r);
	if (secret && strlen(secret) >= WEBHOOK_SECRET_MAX)
	{
		http_wipe(secret);
		secret = NULL;
		why = "the customer's webhook_secret is too long";
	}
	if (secret)
	{
		webhook_receiver_set_secret(secret, strlen(secret));
		http_wipe(secret);
		if (!wh.known)
			ereport(LOG, (errmsg("voipbin: webhook receiver has the customer's webhook_secret")));
		wh.known = true;
		webhook_receiver_set_refetch(true, false);
		/* after the key: the requests waiting for it are checked against it */
		webhook_receiver_refetch_done();
		wh.fetch_failures = 0;
		wh.note[0] = '\0';
		return;
	}
	/* the waiting requests are checked against the key in hand (if any): 401 */
	webhook_receiver_refetch_done();
	wh.fetch_failures++;
	if (wh.known)
	{
		/* the key in hand may still be right: keep it, ask again after a later failure */
		ereport(LOG, (errmsg("voipbin: could not refresh the webhook secret: %s",
							 redact_secret(why, wh.cred))));
		return;
	}
	snprintf(wh.note, sizeof(wh.note), "no secret yet: %s", redact_secret(why, wh.cred));
	ereport(LOG, (errmsg("voipbin: webhook receiver answers 503 until it has a secret: %s",
						 redact_secret(why, wh.cred))));
	wh.fetch_due = TimestampTzPlusMilliseconds(now, backoff_delay_ms(FETCH_RETRY_MIN_MS, FETCH_RETRY_MAX_MS,
																	 wh.fetch_failures, 0));
}

static void
start_fetch(TimestampTz now)
{
	char	   *url = psprintf("%s/customer", wh.api_url);
	size_t		len = strlen(url);

	/* voipbin.api_url ends with /v1.0, maybe with a slash */
	if (len > strlen("//customer") && strcmp(url + len - strlen("//customer"), "//customer") == 0)
		memmove(url + len - strlen("/customer") - 1, url + len - strlen("/customer"),
				strlen("/customer") + 1);
	/* after a failed fetch no request waited; now they wait for this one */
	if (!wh.known)
		webhook_receiver_set_key_pending(true);
	if (secret_fetch_start(url,
						   wh.cred_kind == CRED_ACCESSKEY ? wh.cred : NULL,
						   wh.cred_kind == CRED_JWT ? wh.cred : NULL,
						   wh.ca_file[0] ? wh.ca_file : NULL,
						   voipbin_http_timeout_ms, webhook_receiver_wake))
		wh.fetch_due = 0;
	else
		webhook_receiver_refetch_done();
}

long
webhook_worker_step(void)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		received;
	uint64		refused;
	long		timeout = -1;

	webhook_receiver_ack_wakeup();
	if (RecoveryInProgress() != wh.standby)
		configure_listener();

	webhook_receiver_counts(&received, &refused);
	if (received != wh.received || refused != wh.refused)
	{
		pg_atomic_write_u64(&voipbin_shared->webhook_received, received);
		pg_atomic_write_u64(&voipbin_shared->webhook_refused, refused);
		wh.received = received;
		wh.refused = refused;
	}

	take_fetch_result(now);
	/* a request failed to verify and claimed a refetch (the receiver rate-limits them) */
	if (webhook_receiver_take_refetch())
	{
		if (!wh.known || wh.from_setting || !wh.cred)
			webhook_receiver_refetch_done();
		else if (wh.fetch_due == 0 && !secret_fetch_running())
		{
			ereport(LOG, (errmsg("voipbin: a webhook request did not verify: fetching the customer's webhook_secret again")));
			wh.fetch_due = now;
		}
		/* else the fetch due or running answers it */
	}
	if (wh.listening && !wh.from_setting && wh.cred && wh.fetch_due != 0 &&
		!secret_fetch_running())
	{
		if (now >= wh.fetch_due)
			start_fetch(now);
		else
			timeout = (long) ((wh.fetch_due - now + 999) / 1000);
	}
	publish_state();
	return timeout;
}
