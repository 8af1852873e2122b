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

#include "store.h"

#define ACTIVE_AFTER_MS 2000

typedef struct LiveTopic
{
	char	   *topic;
	TimestampTz sent_at;
	bool		promoted;
} LiveTopic;

static List *live = NIL;		/* of LiveTopic *, in TopMemoryContext */

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

/* Topics that should be live: every row not rejected, oldest first. */
static List *
wanted_topics(MemoryContext cxt)
{
	List	   *wanted = NIL;
	const char *schema;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	schema = store_extension_schema();
	if (schema)
	{
		char	   *sql = psprintf("SELECT topic FROM %s.voipbin_subscriptions"
								   " WHERE status <> 'rejected' ORDER BY created_at, topic",
								   schema);

		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "voipbin: reading voipbin_subscriptions failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *topic = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

			wanted = lappend(wanted, MemoryContextStrdup(cxt, topic));
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
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

		foreach(lc2, live)
			if (strcmp(((LiveTopic *) lfirst(lc2))->topic, topic) == 0)
				present = true;
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

/* Marks active the topics the connection has survived for two seconds. */
void
subs_promote_due(TimestampTz now)
{
	List	   *due = NIL;
	ListCell   *lc;
	const char *schema;

	foreach(lc, live)
	{
		LiveTopic  *t = lfirst(lc);

		if (!t->promoted && TimestampTzPlusMilliseconds(t->sent_at, ACTIVE_AFTER_MS) <= now)
			due = lappend(due, t);
	}
	if (due == NIL)
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	schema = store_extension_schema();
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
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();

	foreach(lc, due)
		((LiveTopic *) lfirst(lc))->promoted = true;
}
