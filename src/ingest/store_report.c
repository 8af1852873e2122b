/*
 * store_report.c — a dead letter made by a trigger or a handler, told.
 *
 * A handler that raises turns its event into a dead letter; without a word
 * the user would see only a counter move.  So the failure is logged as a
 * WARNING naming the handler (or trigger function) and the error, and put in
 * voipbin_status().last_error.  A handler that fails for every event must
 * not write a line per event: the first failure of a kind (the same function
 * and SQLSTATE) is logged at once, the next ones of that kind are counted
 * and logged as one line a minute ("49 more events failed the same way in
 * the last minute"); a kind not seen for a minute is forgotten, so its next
 * failure is a fresh first line.  last_error says the latest failure until
 * an event of its type is stored again (the handler works again, or failed
 * for that one event only).
 */
#include "voipbin.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "ingest/store_report.h"
#include "base/status.h"

/* kinds followed at once; past them, the oldest is summed up and forgotten */
#define KINDS 8

typedef struct Kind
{
	bool		used;
	char		culprit[NAMEDATALEN * 4];	/* "" when the context named none */
	int			sqlerrcode;
	TimestampTz logged_at;		/* its last line */
	int			pending;		/* failures since then, not logged yet */
	char		last[VB_ERROR_LEN];	/* the latest one's message */
} Kind;

static Kind kinds[KINDS];

/* what this file put into last_error, and for which event type */
static char shown[VB_ERROR_LEN];
static char shown_type[NAMEDATALEN * 4];

/* The text between prefix and stop in line (up to its end), or NULL. */
static char *
between(const char *line, size_t len, const char *prefix, const char *stop)
{
	size_t		plen = strlen(prefix);
	const char *end;

	if (len < plen || strncmp(line, prefix, plen) != 0)
		return NULL;
	end = stop ? strstr(line + plen, stop) : NULL;
	if (end == NULL || end > line + len)
		end = line + len;
	return pnstrdup(line + plen, end - (line + plen));
}

/* The function a context line is in: "PL/pgSQL function f(x) line 3 at RAISE", 'SQL function "f" …'. */
static char *
function_of(const char *line, size_t len)
{
	char	   *f;

	if ((f = between(line, len, "PL/pgSQL function ", " line ")) != NULL)
		return f;
	if ((f = between(line, len, "SQL function \"", "\"")) != NULL)
		return f;
	if (len > 3 && strncmp(line, "PL/", 3) == 0)
	{
		const char *q = memchr(line, '"', len);

		if (q && strncmp(q - strlen("function "), "function ", strlen("function ")) == 0)
			return between(q, len - (q - line), "\"", "\"");
	}
	return NULL;
}

/*
 * voipbin_run_handlers() calls each handler by EXECUTE 'SELECT <name>(ROW(…',
 * so the line before its own names the handler, schema and all; a trigger
 * of the user's is the outermost function of the context.
 */
char *
store_report_culprit(const char *context)
{
	const char *line = context;
	char	   *outer = NULL;
	char	   *handler = NULL;
	char	   *prev_stmt = NULL;

	if (context == NULL || context[0] == '\0')
		return NULL;
	while (*line)
	{
		const char *nl = strchr(line, '\n');
		size_t		len = nl ? (size_t) (nl - line) : strlen(line);
		char	   *f = function_of(line, len);
		char	   *stmt = between(line, len, "SQL statement \"SELECT ", "(ROW(");

		if (f != NULL && strstr(f, "voipbin_run_handlers(") != NULL)
		{
			if (prev_stmt != NULL && handler == NULL)
				handler = psprintf("handler %s", prev_stmt);
			else if (handler == NULL)
				handler = pstrdup("voipbin_run_handlers()");	/* its own error: it names the handler */
		}
		else if (f != NULL)
			outer = f;
		prev_stmt = stmt;
		line = nl ? nl + 1 : line + len;
	}
	if (handler)
		return handler;
	return outer ? psprintf("trigger function %s", outer) : NULL;
}

static void
show(const char *event_type, const char *text)
{
	strlcpy(shown, text, sizeof(shown));
	strlcpy(shown_type, event_type ? event_type : "", sizeof(shown_type));
	voipbin_set_error(shown);
}

/* A kind's count, logged; it starts counting afresh. */
static void
log_pending(Kind *k, TimestampTz now)
{
	if (k->pending > 0)
		ereport(WARNING,
				(errmsg_plural("voipbin: %d more event failed the same way in the last minute and is a dead letter: %s%s%s (SQLSTATE %s)",
							   "voipbin: %d more events failed the same way in the last minute and are dead letters: %s%s%s (SQLSTATE %s)",
							   k->pending,
							   k->pending, k->culprit, k->culprit[0] ? ": " : "", k->last,
							   unpack_sql_state(k->sqlerrcode))));
	k->pending = 0;
	k->logged_at = now;
}

TimestampTz
store_report_flush(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;

	for (int i = 0; i < KINDS; i++)
	{
		Kind	   *k = &kinds[i];
		TimestampTz due;

		if (!k->used)
			continue;
		due = TimestampTzPlusMilliseconds(k->logged_at, STORE_REPORT_EVERY_MS);
		if (now >= due)
		{
			if (k->pending == 0)
			{
				k->used = false;	/* quiet for a minute: the next one is a first line */
				continue;
			}
			log_pending(k, now);
			due = TimestampTzPlusMilliseconds(now, STORE_REPORT_EVERY_MS);
		}
		if (next == 0 || due < next)
			next = due;
	}
	return next;
}

void
store_report_dead_letter(const char *event_type, const char *message, int sqlerrcode,
						 const char *context)
{
	char	   *culprit = store_report_culprit(context);
	const char *c = culprit ? culprit : "";
	TimestampTz now = GetCurrentTimestamp();
	Kind	   *k = NULL;
	Kind	   *oldest = NULL;

	store_report_flush();
	show(event_type, psprintf("an event of type %s became a dead letter: %s failed: %s (SQLSTATE %s)",
							  event_type ? event_type : "?", culprit ? culprit : "storing it",
							  message, unpack_sql_state(sqlerrcode)));
	for (int i = 0; i < KINDS; i++)
	{
		if (kinds[i].used && kinds[i].sqlerrcode == sqlerrcode &&
			strncmp(kinds[i].culprit, c, sizeof(kinds[i].culprit) - 1) == 0)
			k = &kinds[i];
		else if (!kinds[i].used && oldest == NULL)
			oldest = &kinds[i];
	}
	if (k != NULL)
	{
		k->pending++;
		strlcpy(k->last, message, sizeof(k->last));
		return;
	}
	if (oldest == NULL)
	{
		/* as many kinds at once as followed: the one quiet longest is summed up now */
		oldest = &kinds[0];
		for (int i = 1; i < KINDS; i++)
			if (kinds[i].logged_at < oldest->logged_at)
				oldest = &kinds[i];
		log_pending(oldest, now);
	}
	k = oldest;
	memset(k, 0, sizeof(*k));
	k->used = true;
	strlcpy(k->culprit, c, sizeof(k->culprit));
	k->sqlerrcode = sqlerrcode;
	k->logged_at = now;
	ereport(WARNING,
			(errmsg("voipbin: an event of type %s became a dead letter: %s failed: %s (SQLSTATE %s)",
					event_type ? event_type : "?", culprit ? culprit : "storing it", message,
					unpack_sql_state(sqlerrcode)),
			 errhint("More failures like it are logged as one count a minute. "
					 "Once the cause is fixed, SELECT voipbin_retry_dead_letters() stores the dead letters.")));
}

void
store_report_stored(const char *event_type)
{
	if (shown[0] == '\0' || strcmp(shown_type, event_type) != 0)
		return;
	SpinLockAcquire(&voipbin_shared->mutex);
	if (strcmp(voipbin_shared->last_error, shown) == 0)
		voipbin_shared->last_error[0] = '\0';
	SpinLockRelease(&voipbin_shared->mutex);
	shown[0] = '\0';
}
