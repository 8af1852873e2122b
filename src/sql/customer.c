/*
 * customer.c — SQL functions on the VoIPBIN customer the credential belongs
 * to: voipbin_customer(), voipbin_set_webhook(), voipbin_clear_webhook(), and
 * voipbin_resolve_topic(), which voipbin_subscribe() uses to expand and check
 * topics with the customer's own id.
 *
 * PUT /customer writes all seven of its fields and blanks each one it is not
 * sent (docs/voipbin.md, "PUT /customer overwrites every field"), so a webhook change is a
 * read-modify-write: GET the customer, PUT back every field, changing only the
 * webhook's two.
 */
#include "voipbin.h"

#include "access/xact.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "base/db.h"
#include "base/rest.h"
#include "sql/customer_cache.h"
#include "sql/topic.h"
#include "sql/vocabulary.h"

#define UUID_TEXT_LEN 36

/* The fields PUT /customer writes, in its documented order. */
static const char *const put_fields[] = {
	"name", "detail", "email", "phone_number", "address",
	"webhook_method", "webhook_uri"
};

static const char *const webhook_methods[] = {"POST", "PUT", "GET", "DELETE"};

/*
 * The own customer id, remembered for the (voipbin.api_url, credential) pair
 * whose SHA-256 is own_key, so that subscribing costs no REST call after the
 * first, and a new credential or URL is asked again.  Per backend: the id of
 * a credential never changes, and one GET per backend is cheap.  The id is
 * also kept across sessions, per api_url only (sql/customer_cache.c), for
 * when VoIPBIN cannot be asked.
 */
static bool own_valid = false;
static uint8 own_key[PG_SHA256_DIGEST_LENGTH];
static char own_id[UUID_TEXT_LEN + 1];

static void
target_key(const RestTarget *t, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	/* the '\0' after the URL keeps ("ab", "c") apart from ("a", "bc") */
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) t->api_url, strlen(t->api_url) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) t->credential, strlen(t->credential)) < 0 ||
		pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "could not compute a SHA-256 hash: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

/* GET /customer as a jsonb object; remembers its id as the own id. */
static Jsonb *
customer_fetch(const RestTarget *t)
{
	Jsonb	   *c = rest_call(t, "GET", "/customer", NULL);
	JsonbValue	id;

	if (c == NULL || !JB_ROOT_IS_OBJECT(c))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("VoIPBIN answered GET /customer with no JSON object")));
	if (getKeyJsonValueFromContainer(&c->root, "id", 2, &id) && id.type == jbvString)
	{
		/* topic_normalize checks the id and lower-cases it, as topics need */
		char	   *as_topic = psprintf("customer_id:%.*s",
										id.val.string.len, id.val.string.val);
		const char *error;
		const char *hint;
		char	   *canon = topic_normalize(as_topic, NULL, &error, &hint);

		if (canon && strlen(canon) == strlen("customer_id:") + UUID_TEXT_LEN)
		{
			target_key(t, own_key);
			strlcpy(own_id, canon + strlen("customer_id:"), sizeof(own_id));
			own_valid = true;
			customer_cache_put(t->api_url, own_id);
		}
	}
	return c;
}

/* The own id this backend learnt for this URL and credential, or NULL: no request. */
static const char *
own_id_known(const RestTarget *t)
{
	uint8		key[PG_SHA256_DIGEST_LENGTH];

	target_key(t, key);
	if (own_valid && memcmp(key, own_key, sizeof(key)) == 0)
		return own_id;
	return NULL;
}

/*
 * An error that means VoIPBIN cannot be asked now (no answer, a 5xx, its rate
 * limit, an answer that is no JSON), rather than that it refused the
 * credential or the URL is wrong.
 */
static bool
is_outage(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_CONNECTION_FAILURE ||
		sqlerrcode == ERRCODE_SYSTEM_ERROR ||
		sqlerrcode == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED ||
		sqlerrcode == ERRCODE_PROTOCOL_VIOLATION;
}

/*
 * The own id from GET /customer.  When VoIPBIN cannot be asked, NULL with
 * *failure set to the error (in a subtransaction, so the session goes on);
 * any other error is raised.
 */
static void
own_id_fetch_step(void *arg)
{
	(void) customer_fetch((const RestTarget *) arg);
	if (!own_valid)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("VoIPBIN's customer has no valid \"id\"")));
}

static const char *
own_id_fetch(const RestTarget *t, ErrorData **failure)
{
	own_valid = false;
	*failure = db_try(own_id_fetch_step, (void *) t);
	if (*failure && !is_outage((*failure)->sqlerrcode))
		ReThrowError(*failure);
	return *failure ? NULL : own_id;
}

/* The customer as shown to SQL: webhook_secret signs webhooks, so it is masked. */
static Jsonb *
mask_secret(Jsonb *c)
{
	JsonbValue	v;

	if (!getKeyJsonValueFromContainer(&c->root, "webhook_secret",
									  strlen("webhook_secret"), &v))
		return c;
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(c),
											  DirectFunctionCall1(jsonb_in,
																  CStringGetDatum("{\"webhook_secret\": \"***\"}"))));
}

static void
string_value(JsonbValue *v, const char *s)
{
	v->type = jbvString;
	v->val.string.val = (char *) s;
	v->val.string.len = strlen(s);
}

/* The PUT body: every field of current, the webhook's two replaced. */
static Jsonb *
put_body(Jsonb *current, const char *uri, const char *method)
{
	JsonbParseState *state = NULL;
	JsonbValue *obj;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < lengthof(put_fields); i++)
	{
		const char *f = put_fields[i];
		JsonbValue	k;
		JsonbValue	v;

		string_value(&k, f);
		if (strcmp(f, "webhook_uri") == 0)
			string_value(&v, uri);
		else if (strcmp(f, "webhook_method") == 0)
			string_value(&v, method);
		else if (!getKeyJsonValueFromContainer(&current->root, f, strlen(f), &v) ||
				 v.type == jbvNull)
			string_value(&v, "");	/* GET leaves empty fields out */
		else if (v.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("VoIPBIN's customer field \"%s\" is not a string", f),
					 errdetail("Sending it back could blank it, so the webhook was not changed.")));
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	obj = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(obj);
}

/*
 * A WARNING when the webhook's host is no public address: VoIPBIN delivers
 * only to public ones.  The host only, never the whole URI, whose query may
 * hold a token of the user's own proxy.
 */
static void
warn_nonpublic_host(const char *uri)
{
	char	   *host = rest_url_host(uri);
	const char *why = host ? endpoint_host_nonpublic(host) : NULL;

	if (why)
		ereport(WARNING,
				(errmsg("the webhook's host \"%s\" is %s", host, why),
				 errdetail("VoIPBIN delivers webhooks only to public addresses, so nothing will arrive there; the webhook is set anyway."),
				 errhint("Set the public https:// URL of a proxy in front of the receiver (docs/webhooks.md).")));
}

static Jsonb *
set_webhook(const char *uri, const char *method_arg)
{
	const char *method = NULL;
	RestTarget	t;
	Jsonb	   *current;
	Jsonb	   *updated;

	/* both arguments are checked before anything is sent */
	if (uri[0] != '\0' && !rest_is_http_url(uri))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook uri \"%s\"", uri),
				 errhint("Use an absolute http:// or https:// URL, or '' to remove the webhook.")));
	for (int i = 0; i < lengthof(webhook_methods); i++)
		if (pg_strcasecmp(method_arg, webhook_methods[i]) == 0)
			method = webhook_methods[i];
	if (method == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook method \"%s\"", method_arg),
				 errhint("Use POST, PUT, GET or DELETE.")));

	if (uri[0] != '\0')
		warn_nonpublic_host(uri);

	rest_target_load(&t, true);
	current = customer_fetch(&t);
	updated = rest_call(&t, "PUT", "/customer", put_body(current, uri, method));
	if (updated == NULL || !JB_ROOT_IS_OBJECT(updated))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("VoIPBIN answered PUT /customer with no JSON object"),
				 errdetail("The update may have been applied; voipbin_customer() shows the customer as it is.")));
	return mask_secret(updated);
}

/* voipbin_customer() RETURNS jsonb */
PG_FUNCTION_INFO_V1(voipbin_customer);
Datum
voipbin_customer(PG_FUNCTION_ARGS)
{
	RestTarget	t;

	rest_target_load(&t, true);
	PG_RETURN_JSONB_P(mask_secret(customer_fetch(&t)));
}

/* voipbin_set_webhook(uri text, method text DEFAULT 'POST') RETURNS jsonb */
PG_FUNCTION_INFO_V1(voipbin_set_webhook);
Datum
voipbin_set_webhook(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("uri and method must not be NULL"),
				 errhint("voipbin_clear_webhook() removes the webhook.")));
	PG_RETURN_JSONB_P(set_webhook(text_to_cstring(PG_GETARG_TEXT_PP(0)),
								  text_to_cstring(PG_GETARG_TEXT_PP(1))));
}

/* voipbin_clear_webhook() RETURNS jsonb */
PG_FUNCTION_INFO_V1(voipbin_clear_webhook);
Datum
voipbin_clear_webhook(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(set_webhook("", "POST"));
}

/* A bare name's id when VoIPBIN cannot be asked: the kept one, or the REST error with a hint. */
static const char *
own_id_for_bare(const RestTarget *t, const char *topic, ErrorData *failure)
{
	static char kept[CUSTOMER_ID_LEN + 1];
	TimestampTz learnt_at;

	if (customer_cache_get(t->api_url, kept, &learnt_at))
	{
		ereport(NOTICE,
				(errmsg("VoIPBIN cannot be asked for the customer id (%s); \"%s\" is expanded with the one learnt at %s",
						failure->message, topic, timestamptz_to_str(learnt_at))));
		return kept;
	}
	failure->hint = psprintf("%s%sThe customer id was never learnt from %s; until VoIPBIN answers once, use the full form customer_id:<your customer id>:%s:.",
							 failure->hint ? failure->hint : "", failure->hint ? " " : "",
							 t->api_url, topic);
	ReThrowError(failure);
	return NULL;				/* not reached */
}

/*
 * A customer_id topic checked against the own id: this backend's, else the
 * kept one (no request), else GET /customer; when none is known and VoIPBIN
 * cannot be asked, the check is skipped with a WARNING.  A topic that differs
 * from a kept id is asked about again before it is refused: the credential
 * may belong to another customer since.
 */
static char *
check_owner_of(const RestTarget *t, const char *topic, const char *normalized,
			   const char **error, const char **hint)
{
	const char *own = own_id_known(t);
	char		kept[CUSTOMER_ID_LEN + 1];
	TimestampTz learnt_at;
	ErrorData  *failure = NULL;
	char	   *result;

	if (own == NULL && customer_cache_get(t->api_url, kept, &learnt_at))
	{
		result = topic_normalize(normalized, kept, error, hint);
		if (result)
			return result;
		own = own_id_fetch(t, &failure);
		if (own == NULL)
		{
			*hint = psprintf("VoIPBIN drops the whole connection on a topic for another customer. The own customer id %s was learnt at %s, and VoIPBIN cannot be asked again now (%s).",
							 kept, timestamptz_to_str(learnt_at), failure->message);
			return NULL;
		}
	}
	else if (own == NULL)
	{
		own = own_id_fetch(t, &failure);
		if (own == NULL)
		{
			ereport(WARNING,
					(errmsg("topic \"%s\" is stored without checking that it names your own customer", topic),
					 errdetail("VoIPBIN cannot be asked for the customer id: %s", failure->message),
					 errhint("VoIPBIN drops the whole connection on a topic for another customer; voipbin_customer() shows your customer id once VoIPBIN answers.")));
			return pstrdup(normalized);
		}
	}
	return topic_normalize(normalized, own, error, hint);
}

/*
 * voipbin_resolve_topic(topic text, check_owner boolean DEFAULT true) RETURNS text
 *
 * The topic as voipbin_subscribe() stores it.  A bare resource name becomes
 * customer_id:<own id>:<resource>:, the id from this backend's GET /customer,
 * else a new one, else (VoIPBIN cannot be asked) the kept one.  With
 * check_owner: a customer_id topic must name the own customer (VoIPBIN drops
 * the whole connection, every topic with it, on one naming another),
 * checked without a request when the id is known (check_owner_of); an
 * agent_id topic is refused while the credential is an access key, which has
 * no agent; and a resource VoIPBIN publishes nothing for gets a WARNING.
 * Without a credential nothing can be asked, and a full topic is taken as it
 * is (the worker cannot connect anyway).  voipbin_unsubscribe() passes
 * check_owner false, so that any stored topic can be removed.
 */
PG_FUNCTION_INFO_V1(voipbin_resolve_topic);
Datum
voipbin_resolve_topic(PG_FUNCTION_ARGS)
{
	char	   *topic;
	bool		check_owner = PG_NARGS() < 2 || PG_ARGISNULL(1) || PG_GETARG_BOOL(1);
	RestTarget	t;
	const char *error;
	const char *hint;
	char	   *result;

	topic = topic_arg(fcinfo);
	if (topic_is_bare_resource(topic))
	{
		const char *own;
		ErrorData  *failure = NULL;

		if (!rest_target_load(&t, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid topic \"%s\": no credential is configured, so the own customer id is not known", topic),
					 errhint("Use the full form customer_id:<your customer id>:%s:, or put a credential in voipbin.token_file.", topic)));
		own = own_id_known(&t);
		if (own == NULL)
			own = own_id_fetch(&t, &failure);
		if (own == NULL)
			own = own_id_for_bare(&t, topic, failure);
		result = topic_normalize(topic, own, &error, &hint);
	}
	else
	{
		result = topic_normalize(topic, NULL, &error, &hint);
		if (result && check_owner && rest_target_load(&t, false))
		{
			if (strncmp(result, "agent_id:", 9) == 0 && t.kind == CRED_ACCESSKEY)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid topic \"%s\": the credential is an access key, which has no agent", topic),
						 errdetail("VoIPBIN drops the whole connection, every topic with it, on an agent_id topic from an access key."),
						 errhint("Use a customer_id topic (customer_id:<your customer id>:…), or put that agent's JWT in voipbin.token_file.")));
			if (strncmp(result, "customer_id:", 12) == 0)
				result = check_owner_of(&t, topic, result, &error, &hint);
		}
	}
	if (result && check_owner)
		(void) vocabulary_check_topic(result);
	return topic_result(topic, result, error, hint);
}
