/*
 * topic.c — checking and normalising subscription topics before anything
 * reaches VoIPBIN, whose server drops the whole connection on one bad topic.
 *
 * topic_normalize() is pure: it takes a string and gives back the topic to
 * store, or an error and a hint.
 */
#include "voipbin.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "sql/topic.h"

#define UUID_TEXT_LEN 36

/* A canonical 8-4-4-4-12 hex UUID, any case; written lower-case into out. */
static bool
parse_uuid_text(const char *s, size_t len, char *out)
{
	bool		nonzero = false;

	if (len != UUID_TEXT_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return false;
			out[i] = c;
			continue;
		}
		if (c >= 'A' && c <= 'F')
			c = c - 'A' + 'a';
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		if (c != '0')
			nonzero = true;
		out[i] = c;
	}
	out[len] = '\0';
	return nonzero;
}

static bool
is_resource_name(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			  (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

/* 'call', 'transcript': short for customer_id:<own customer id>:<resource>: */
bool
topic_is_bare_resource(const char *topic)
{
	return is_resource_name(topic) &&
		strcmp(topic, "customer_id") != 0 && strcmp(topic, "agent_id") != 0;
}

/*
 * Returns the normalised topic (palloc'd), or NULL with *error and *hint set.
 * own_customer_id, when known, expands a bare resource name and must match a
 * customer_id scope; without it a bare resource name is an error.
 */
char *
topic_normalize(const char *topic, const char *own_customer_id,
				const char **error, const char **hint)
{
	StringInfoData out;
	const char *colon;
	const char *rest;
	size_t		scope_len;
	size_t		id_len;
	char		uuid[UUID_TEXT_LEN + 1];
	size_t		len = strlen(topic);

	*error = NULL;
	*hint = "A topic is <scope>:<scope_id>[:<resource>[:…]], scope customer_id or agent_id, e.g. customer_id:<your customer id>:call:";

	if (len == 0)
	{
		*error = "topic is empty";
		return NULL;
	}
	for (const char *p = topic; *p; p++)
		if ((unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f || *p == '"' || *p == '\\')
		{
			*error = "topic contains a space, a quote, a backslash or a non-ASCII character";
			return NULL;
		}

	/* a bare resource name: this customer's events of that resource */
	if (topic_is_bare_resource(topic))
	{
		if (own_customer_id == NULL)
		{
			*error = "the customer id is not known, so a bare resource name cannot be expanded";
			*hint = "Use the full form customer_id:<your customer id>:<resource>: or set voipbin.token so voipbin_customer() works.";
			return NULL;
		}
		initStringInfo(&out);
		appendStringInfo(&out, "customer_id:%s:", own_customer_id);
		for (const char *p = topic; *p; p++)
			appendStringInfoChar(&out, (*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p);
		appendStringInfoChar(&out, ':');
		return out.data;
	}

	colon = strchr(topic, ':');
	if (colon == NULL)
	{
		*error = "topic has no scope";
		return NULL;
	}
	scope_len = colon - topic;
	if (!((scope_len == 11 && strncmp(topic, "customer_id", 11) == 0) ||
		  (scope_len == 8 && strncmp(topic, "agent_id", 8) == 0)))
	{
		*error = "topic scope must be customer_id or agent_id";
		return NULL;
	}

	rest = strchr(colon + 1, ':');
	id_len = rest ? (size_t) (rest - colon - 1) : strlen(colon + 1);
	if (!parse_uuid_text(colon + 1, id_len, uuid))
	{
		*error = "topic scope id must be a non-nil UUID";
		return NULL;
	}
	if (own_customer_id && scope_len == 11 && strcmp(uuid, own_customer_id) != 0)
	{
		*error = "topic names another customer";
		*hint = "VoIPBIN drops the whole connection on a topic for another customer; use your own customer id (see voipbin_customer()).";
		return NULL;
	}

	initStringInfo(&out);
	appendBinaryStringInfo(&out, topic, scope_len + 1);
	appendStringInfoString(&out, uuid);
	if (rest)
	{
		size_t		rest_len = strlen(rest);

		/* the public docs' ":*" is no wildcard: the server matches plain prefixes */
		if (rest_len > 0 && rest[rest_len - 1] == '*')
			rest_len--;
		if (memchr(rest, '*', rest_len) != NULL)
		{
			*error = "topic contains \"*\", which VoIPBIN does not treat as a wildcard";
			*hint = "Topics are plain prefixes: customer_id:<id>:call: receives every call event.";
			return NULL;
		}
		appendBinaryStringInfo(&out, rest, rest_len);
	}
	return out.data;
}

/* The topic argument of a SQL function, which may not be NULL. */
char *
topic_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic must not be NULL")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/* topic_normalize()'s result as SQL's, or its error as SQLSTATE 22023. */
Datum
topic_result(const char *topic, const char *result, const char *error, const char *hint)
{
	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid topic \"%s\": %s", topic, error),
				 errhint("%s", hint)));
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/* voipbin_normalize_topic(topic text, own_customer_id uuid DEFAULT NULL) RETURNS text */
PG_FUNCTION_INFO_V1(voipbin_normalize_topic);
Datum
voipbin_normalize_topic(PG_FUNCTION_ARGS)
{
	char	   *topic = topic_arg(fcinfo);
	char	   *own = NULL;
	const char *error;
	const char *hint;
	char	   *result;

	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
		own = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(1)));
	result = topic_normalize(topic, own, &error, &hint);
	return topic_result(topic, result, error, hint);
}
