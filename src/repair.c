/*
 * repair.c — after an outage, what VoIPBIN sent meanwhile comes back over REST.
 *
 * (The REST walk itself follows; for now every gap is only recorded.)
 */
#include "voipbin.h"
#include "repair.h"

#include "access/xact.h"
#include "utils/memutils.h"

/* Runs one database step of the repair; an error is logged and the loop goes on. */
static long
guarded_step(long (*fn) (void), const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile long timeout = -1;

	PG_TRY();
	{
		timeout = fn();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING, (errmsg("voipbin: %s failed: %s", what, edata->message)));
		FreeErrorData(edata);
		timeout = 1000;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return timeout;
}

void
repair_start(int64 gap_id, TimestampTz started_at)
{
}

long
repair_step(void)
{
	return guarded_step(gaps_step, "recording a gap");
}

int
repair_wait_fd(void)
{
	return -1;
}
