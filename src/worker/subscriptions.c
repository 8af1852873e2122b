/*
 * subscriptions.c — keeping the live connection's topics equal to the rows
 * of voipbin_subscriptions.
 *
 * VoIPBIN never acknowledges a subscription and drops the whole connection on
 * a bad topic, so each topic goes in a frame of its own (the culprit is then
 * known), and a topic counts as active once the connection has survived it
 * for two seconds.
 */
#include "voipbin.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker/subscriptions.h"
#include "base/db.h"
#include "net/ws/ws_client.h"

#define ACTIVE_AFTER_MS 2000

typedef struct LiveTopic
{
	char	   *topic;
	TimestampTz sent_at;
	bool		promoted;
} LiveTopic;

/*
 * What the worker learnt about a topic across connections.  A drop right after
 * topics were sent blames those not proven yet: one alone gets a strike (two
 * reject it); several become suspects, each then sent alone until it survives.
 */
typedef struct TopicRecord
{
	char	   *topic;
	int			strikes;
	bool		suspect;
	bool		proven;			/* a connection survived it: never to blame */
} TopicRecord;

#define REJECT_AFTER_STRIKES 2

static List *live = NIL;		/* of LiveTopic *, in TopMemoryContext */
static List *records = NIL;		/* of TopicRecord *, in TopMemoryContext */

static bool suspect_in_flight(void);

static TopicRecord *
record_for(const char *topic, bool create)
{
	ListCell   *lc;
	TopicRecord *r;
	MemoryContext old;

	foreach(lc, records)
		if (strcmp(((TopicRecord *) lfirst(lc))->topic, topic) == 0)
			return lfirst(lc);
	if (!create)
		return NULL;
	old = MemoryContextSwitchTo(TopMemoryContext);
	r = palloc0(sizeof(TopicRecord));
	r->topic = pstrdup(topic);
	records = lappend(records, r);
	MemoryContextSwitchTo(old);
	return r;
}

static void
mark_proven(const char *topic)
{
	TopicRecord *r = record_for(topic, true);

	r->proven = true;
	r->suspect = false;
	r->strikes = 0;
}

static void
send_hook(const char *type, const char *topic)
{
	StringInfoData msg;

	initStringInfo(&msg);
	appendStringInfo(&msg, "{\"type\":\"%s\",\"topics\":[", type);
	escape_json(&msg, topic);
	appendStringInfoString(&msg, "]}");
	ws_send_text(msg.data, msg.len);
	pfree(msg.data);
}

void
subs_reset(void)
{
	ListCell   *lc;

	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);

		pfree(t->topic);
		pfree(t);
	}
	list_free(live);
	live = NIL;
}

int
subs_live_count(void)
{
	return list_length(live);
}

static bool in_string_list(List *list, const char *s);

/*
 * Forgets what was learnt about topics no longer in the table (nor live), so
 * the records follow the table instead of every topic ever seen.  A rejected
 * row keeps its record: subscribed again, it gets one more try, not two.
 */
static void
forget_records(List *known)
{
	List	   *keep = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	foreach(lc, records)
	{
		TopicRecord *r = lfirst(lc);
		bool		is_live = false;
		ListCell   *lc2;

		foreach(lc2, live)
			if (strcmp(((LiveTopic *) lfirst(lc2))->topic, r->topic) == 0)
				is_live = true;
		if (is_live || in_string_list(known, r->topic))
			keep = lappend(keep, r);
		else
		{
			pfree(r->topic);
			pfree(r);
		}
	}
	list_free(records);
	records = keep;
	MemoryContextSwitchTo(old);
}

/* Topics that should be live: every row not rejected, oldest first. */
static List *
wanted_topics(MemoryContext cxt)
{
	List	   *wanted = NIL;
	List	   *known = NIL;
	const char *schema;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema)
	{
		char	   *sql = psprintf("SELECT topic, status = 'active', status = 'rejected'"
								   " FROM %s.voipbin_subscriptions ORDER BY created_at, topic",
								   schema);

		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "voipbin: reading voipbin_subscriptions failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *topic = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			bool		isnull;
			bool		rejected = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i],
															  SPI_tuptable->tupdesc, 3, &isnull));
			MemoryContext spi = MemoryContextSwitchTo(cxt); /* outlive SPI_finish */

			known = lappend(known, pstrdup(topic));
			if (!rejected)
				wanted = lappend(wanted, pstrdup(topic));
			MemoryContextSwitchTo(spi);
			if (rejected)
				continue;
			/* active on an earlier connection, maybe of an earlier worker */
			if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
				mark_proven(topic);
		}
	}
	db_end_work();
	MemoryContextSwitchTo(cxt);
	forget_records(known);
	return wanted;
}

static bool
in_string_list(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp((const char *) lfirst(lc), s) == 0)
			return true;
	return false;
}

/* Sends what is missing and takes back what was removed. */
void
subs_sync(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *wanted = wanted_topics(cxt);
	List	   *keep = NIL;
	ListCell   *lc;
	MemoryContext old;

	/* the live list outlives this loop iteration */
	old = MemoryContextSwitchTo(TopMemoryContext);
	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);

		if (in_string_list(wanted, t->topic))
			keep = lappend(keep, t);
		else
		{
			send_hook("unsubscribe", t->topic);
			elog(LOG, "voipbin: unsubscribed from \"%s\"", t->topic);
			pfree(t->topic);
			pfree(t);
		}
	}
	list_free(live);
	live = keep;
	MemoryContextSwitchTo(old);

	foreach(lc, wanted)
	{
		const char *topic = lfirst(lc);
		ListCell   *lc2;
		bool		present = false;
		TopicRecord *r = record_for(topic, false);

		foreach(lc2, live)
			if (strcmp(((LiveTopic *) lfirst(lc2))->topic, topic) == 0)
				present = true;
		if (r && r->strikes >= REJECT_AFTER_STRIKES)
		{
			/* subscribed again after its rejection: one more try */
			r->strikes = REJECT_AFTER_STRIKES - 1;
			r->suspect = true;
		}
		/* a suspect goes alone, so that a drop names it */
		if (!present && r && r->suspect && suspect_in_flight())
			continue;
		if (!present)
		{
			LiveTopic  *t;

			old = MemoryContextSwitchTo(TopMemoryContext);
			t = palloc0(sizeof(LiveTopic));
			t->topic = pstrdup(topic);
			t->sent_at = GetCurrentTimestamp();
			live = lappend(live, t);
			MemoryContextSwitchTo(old);
			send_hook("subscribe", topic);
			elog(LOG, "voipbin: subscribed to \"%s\"", topic);
		}
	}
}

static bool
suspect_in_flight(void)
{
	ListCell   *lc;

	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);
		TopicRecord *r = record_for(t->topic, false);

		if (!t->promoted && r && r->suspect)
			return true;
	}
	return false;
}

/*
 * The server dropped the connection at closed_at: topics sent in the two
 * seconds before are to blame.  Alone, the topic gets a strike (two reject
 * it); together, each becomes a suspect, sent alone from now on.
 */
void
subs_connection_dropped(TimestampTz closed_at, const char *why)
{
	List	   *in_flight = NIL;
	ListCell   *lc;

	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);

		TopicRecord *r = record_for(t->topic, false);

		if (!t->promoted && TimestampTzPlusMilliseconds(t->sent_at, ACTIVE_AFTER_MS) > closed_at &&
			!(r && r->proven))
			in_flight = lappend(in_flight, t->topic);
	}
	if (list_length(in_flight) > 1)
	{
		foreach(lc, in_flight)
			record_for(lfirst(lc), true)->suspect = true;
	}
	else if (list_length(in_flight) == 1)
	{
		const char *topic = linitial(in_flight);
		TopicRecord *r = record_for(topic, true);

		r->suspect = true;
		if (++r->strikes >= REJECT_AFTER_STRIKES)
		{
			char	   *error = psprintf("VoIPBIN dropped the connection right after this topic was sent, %d times in a row (%s)",
										 r->strikes, why ? why : "connection lost");
			const char *schema;

			ereport(LOG,
					(errmsg("voipbin: topic \"%s\" rejected: VoIPBIN dropped the connection right after it was sent, twice",
							topic)));
			db_begin_work();
			schema = db_extension_schema(NULL);
			if (schema)
			{
				Oid			argtypes[2] = {TEXTOID, TEXTOID};
				Datum		args[2] = {CStringGetTextDatum(topic), CStringGetTextDatum(error)};

				SPI_execute_with_args(psprintf("UPDATE %s.voipbin_subscriptions"
											   " SET status = 'rejected', last_error = $2"
											   " WHERE topic = $1", schema),
									  2, argtypes, args, NULL, false, 0);
			}
			db_end_work();
		}
	}
	list_free(in_flight);
}

/* When the next sent topic becomes active, or 0 when none waits. */
TimestampTz
subs_next_deadline(void)
{
	TimestampTz next = 0;
	ListCell   *lc;

	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);
		TimestampTz due = TimestampTzPlusMilliseconds(t->sent_at, ACTIVE_AFTER_MS);

		if (!t->promoted && (next == 0 || due < next))
			next = due;
	}
	return next;
}

/*
 * Marks active the topics the connection has survived for two seconds.
 * True when a suspect was cleared, so the next one may be sent.
 */
bool
subs_promote_due(TimestampTz now)
{
	List	   *due = NIL;
	ListCell   *lc;
	const char *schema;
	bool		suspect_cleared = false;

	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);

		if (!t->promoted && TimestampTzPlusMilliseconds(t->sent_at, ACTIVE_AFTER_MS) <= now)
			due = lappend(due, t);
	}
	if (due == NIL)
		return false;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema)
	{
		Datum	   *elems = palloc(sizeof(Datum) * list_length(due));
		int			i = 0;
		Oid			argtypes[1] = {TEXTARRAYOID};
		Datum		args[1];

		foreach(lc, due)
			elems[i++] = CStringGetTextDatum(((LiveTopic *) lfirst(lc))->topic);
		args[0] = PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
		SPI_execute_with_args(psprintf("UPDATE %s.voipbin_subscriptions"
									   " SET status = 'active', last_error = NULL"
									   " WHERE topic = ANY ($1) AND status = 'pending'", schema),
							  1, argtypes, args, NULL, false, 0);
	}
	db_end_work();

	foreach(lc, due)
	{
		LiveTopic  *t = lfirst(lc);
		TopicRecord *r = record_for(t->topic, false);

		t->promoted = true;
		/* it survived: cleared, and the next suspect may go */
		if (r && r->suspect)
			suspect_cleared = true;
		mark_proven(t->topic);
	}
	return suspect_cleared;
}
