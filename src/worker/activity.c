/*
 * activity.c — what pg_stat_activity says the worker is doing, as
 * PostgreSQL's worker_spi does: STATE_RUNNING and what it is at ("storing
 * 2000 events", "pruning old events"), or STATE_IDLE and "idle" while it
 * waits; after it, in parentheses, the connection's state and its topics.
 *
 * The ingest path reports once per batch: the text is formatted into a
 * static buffer, and pgstat_report_activity() is called only when the text
 * or the state differs from what it shows.
 */
#include "voipbin.h"

#include "pgstat.h"

#include "worker/activity.h"

#define ACTIVITY_MAX 128

static char doing[64] = "idle";
static BackendState doing_state = STATE_IDLE;
static char context[64] = "disabled, 0 topics";
static char shown[ACTIVITY_MAX];
static BackendState shown_state = STATE_UNDEFINED;

static void
show(void)
{
	char		text[ACTIVITY_MAX];

	snprintf(text, sizeof(text), "%s (%s)", doing, context);
	if (doing_state == shown_state && strcmp(text, shown) == 0)
		return;
	pgstat_report_activity(doing_state, text);
	strlcpy(shown, text, sizeof(shown));
	shown_state = doing_state;
}

void
activity_running(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(doing, sizeof(doing), fmt, ap);
	va_end(ap);
	doing_state = STATE_RUNNING;
	show();
}

void
activity_idle(void)
{
	strlcpy(doing, "idle", sizeof(doing));
	doing_state = STATE_IDLE;
	show();
}

void
activity_context(VoipbinState state, int topics)
{
	snprintf(context, sizeof(context), "%s, %d %s",
			 voipbin_state_name(state), topics, topics == 1 ? "topic" : "topics");
	show();
}
