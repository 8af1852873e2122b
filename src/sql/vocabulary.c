/*
 * vocabulary.c — the words VoIPBIN uses, in one place: the event types it
 * sends customers and the resources it publishes topics for
 * (docs/voipbin.md, "Topics and how they match" and "Event kinds and their
 * keys").  A topic whose resource is none of them, or a handler for an event
 * type that is none, gets a WARNING naming the nearest real word; it is
 * still taken, since VoIPBIN adds words now and then.
 *
 * The resources are not a list of their own: VoIPBIN names a topic's
 * resource by its event type's first word (call_hangup → call), so they are
 * the first words of the event types, plus the one older topic name that is
 * no event type's (webchat_session).
 */
#include "voipbin.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"
#include "utils/varlena.h"

#include "ingest/frame.h"
#include "sql/vocabulary.h"

/* The event types VoIPBIN sends customers (PublishWebhookEvent), by service. */
static const char *const voipbin_event_types[] = {
	/* call-manager */
	"call_created", "call_updated", "call_deleted", "call_dialing", "call_ringing",
	"call_progressing", "call_terminating", "call_canceling", "call_hangup",
	"groupcall_created", "groupcall_progressing", "groupcall_hangup", "groupcall_deleted",
	"recording_started", "recording_finished",
	/* transcribe-manager */
	"transcribe_created", "transcribe_progressing", "transcribe_done",
	"transcript_created",
	"transcribe_speech_started", "transcribe_speech_interim", "transcribe_speech_ended",
	/* flow-manager */
	"activeflow_created", "activeflow_updated", "activeflow_deleted",
	/* queue-manager */
	"queuecall_created", "queuecall_waiting", "queuecall_connecting", "queuecall_serviced",
	"queuecall_done", "queuecall_abandoned", "queuecall_deleted",
	/* conference-manager */
	"conference_created", "conference_updated", "conference_deleted",
	/* agent-manager */
	"agent_created", "agent_updated", "agent_deleted", "agent_status_updated",
	/* message-manager, email-manager */
	"message_created", "message_updated", "message_deleted",
	"email_created", "email_updated", "email_deleted",
	/* conversation-manager */
	"conversation_created", "conversation_updated", "conversation_message_created",
	"conversation_message_updated", "conversation_message_deleted",
	"account_created", "account_updated", "account_deleted",
	/* ai-manager */
	"ai_created", "ai_updated", "ai_deleted",
	"aicall_status_initializing", "aicall_status_progressing", "aicall_status_pausing",
	"aicall_status_resuming", "aicall_status_terminating", "aicall_status_terminated",
	"aimessage_created", "aimessage_intermediate",
	"summary_created", "summary_updated", "summary_deleted",
	"team_created", "team_updated", "team_deleted",
	/* campaign-manager, outdial-manager, number-manager */
	"campaign_created", "campaign_updated", "campaign_deleted", "campaign_status_run",
	"campaign_status_stopping", "campaign_status_stop",
	"campaigncall_created", "campaigncall_updated", "campaigncall_deleted",
	"outdial_created", "outdial_updated", "outdial_deleted",
	"number_created", "number_updated", "number_deleted",
	/* talk-manager, webchat-manager */
	"chat_created", "chat_updated", "chat_deleted",
	"chatmessage_created", "chatmessage_deleted", "chatmessage_reaction_updated",
	"chatparticipant_added", "chatparticipant_removed",
	"webchat_message_created", "webchat_session_ended",
};

/* Topic resources that are no event type's first word: the older topics of webchat_* */
static const char *const extra_resources[] = {"webchat_session"};

/* Longer words get no suggestion: the distance is quadratic in the length. */
#define NEAREST_MAX_LEN 64

/* An event type's first word, as VoIPBIN names its topics' resource (palloc'd). */
static char *
resource_of(const char *event_type)
{
	const char *us = strchr(event_type, '_');

	return us ? pnstrdup(event_type, us - event_type) : pstrdup(event_type);
}

List *
vocabulary_resources(void)
{
	List	   *out = NIL;

	for (size_t i = 0; i < lengthof(voipbin_event_types); i++)
	{
		char	   *r = resource_of(voipbin_event_types[i]);
		bool		seen = false;
		ListCell   *lc;

		foreach(lc, out)
			if (strcmp(lfirst(lc), r) == 0)
				seen = true;
		if (!seen)
			out = lappend(out, r);
	}
	for (size_t i = 0; i < lengthof(extra_resources); i++)
		out = lappend(out, pstrdup(extra_resources[i]));
	return out;
}

List *
vocabulary_event_types(void)
{
	List	   *out = NIL;
	List	   *inferred = frame_inferred_types();
	ListCell   *lc;

	for (size_t i = 0; i < lengthof(voipbin_event_types); i++)
		out = lappend(out, pstrdup(voipbin_event_types[i]));
	/* what the classifier names a bare object VoIPBIN sends under no type */
	foreach(lc, inferred)
	{
		bool		seen = false;
		ListCell   *lc2;

		foreach(lc2, out)
			if (strcmp(lfirst(lc2), lfirst(lc)) == 0)
				seen = true;
		if (!seen)
			out = lappend(out, lfirst(lc));
	}
	return out;
}

/*
 * The word of words nearest to word: fewest edits (PostgreSQL's Levenshtein
 * distance, on the lower-cased word), a word that begins the other counting
 * as one edit away ("queue" → "queuecall"); the first of equals.  NULL for a
 * word too long to compare.
 */
const char *
vocabulary_nearest(const char *word, List *words)
{
	const char *best = NULL;
	int			best_d = INT_MAX;
	size_t		len = strlen(word);
	char	   *lower;
	ListCell   *lc;

	if (len == 0 || len > NEAREST_MAX_LEN)
		return NULL;
	lower = pstrdup(word);
	for (char *p = lower; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p += 'a' - 'A';
	foreach(lc, words)
	{
		const char *w = lfirst(lc);
		size_t		wlen = strlen(w);
		int			d = varstr_levenshtein(lower, (int) len, w, (int) wlen, 1, 1, 1, true);

		if (d > 1 && (strncmp(w, lower, Min(len, wlen)) == 0))
			d = 1;
		if (d < best_d)
		{
			best_d = d;
			best = w;
		}
	}
	pfree(lower);
	return best;
}

static bool
in_list(const char *word, size_t len, bool prefix_ok, List *words)
{
	ListCell   *lc;

	foreach(lc, words)
	{
		const char *w = lfirst(lc);

		if (strncmp(w, word, len) == 0 && (prefix_ok || w[len] == '\0'))
			return true;
	}
	return false;
}

static char *
hint_for(const char *nearest, const char *what)
{
	if (nearest)
		return psprintf("Did you mean \"%s\"? It is %s anyway, since VoIPBIN adds new ones now and then; voipbin_vocabulary() lists the known ones.",
						nearest, what);
	return psprintf("It is %s anyway, since VoIPBIN adds new ones now and then; voipbin_vocabulary() lists the known ones.",
					what);
}

/*
 * A WARNING when a normalised topic's resource (its third part) is none
 * VoIPBIN publishes topics for.  A resource ended by ':' must be one exactly;
 * one that ends the topic is a prefix, and must begin one ("…:conf" matches
 * conference topics).  True when there was nothing to say.
 */
bool
vocabulary_check_topic(const char *topic)
{
	const char *p = strchr(topic, ':');
	const char *end;
	char	   *resource;
	List	   *resources;

	if (p == NULL || (p = strchr(p + 1, ':')) == NULL)
		return true;			/* scope and id only: every event */
	p++;
	end = strchrnul(p, ':');
	if (end == p)
		return true;			/* "customer_id:<id>:" */
	resources = vocabulary_resources();
	if (in_list(p, end - p, *end == '\0', resources))
		return true;
	resource = pnstrdup(p, end - p);
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("VoIPBIN publishes no topics for resource \"%s\"", resource),
			 errdetail("The topic \"%s\" will receive no events.", topic),
			 errhint("%s", hint_for(vocabulary_nearest(resource, resources), "stored"))));
	return false;
}

/* A WARNING when event_type is none VoIPBIN sends nor the classifier stores. */
bool
vocabulary_check_event_type(const char *event_type)
{
	List	   *types = vocabulary_event_types();

	if (in_list(event_type, strlen(event_type), false, types))
		return true;
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("VoIPBIN sends no event type \"%s\"", event_type),
			 errdetail("A handler for it runs for no event."),
			 errhint("%s", hint_for(vocabulary_nearest(event_type, types), "registered"))));
	return false;
}

/* voipbin_check_event_type(event_type text) RETURNS void: voipbin_on()'s warning */
PG_FUNCTION_INFO_V1(voipbin_check_event_type);
Datum
voipbin_check_event_type(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		(void) vocabulary_check_event_type(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* voipbin_vocabulary(OUT kind text, OUT word text) RETURNS SETOF record */
PG_FUNCTION_INFO_V1(voipbin_vocabulary);
Datum
voipbin_vocabulary(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const char *kinds[] = {"resource", "event_type"};
	List	   *lists[2];

	InitMaterializedSRF(fcinfo, 0);
	lists[0] = vocabulary_resources();
	lists[1] = vocabulary_event_types();
	for (int k = 0; k < 2; k++)
	{
		ListCell   *lc;

		foreach(lc, lists[k])
		{
			Datum		values[2];
			bool		nulls[2] = {false, false};

			values[0] = CStringGetTextDatum(kinds[k]);
			values[1] = CStringGetTextDatum(lfirst(lc));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}
