/*
 * guard.c — the worker's error guard: one database step whose ERROR is
 * logged and survived, so that a failing step never stops the worker.
 */
#include "voipbin.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "base/guard.h"

/*
 * Runs one database step of the worker's loop; an error is logged as a
 * WARNING ("voipbin: <what> failed: …"), its transaction aborted, and the
 * loop goes on.  False when that happened.
 */
bool
voipbin_guarded(void (*step) (void *arg), void *arg, const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		step(arg);
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
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return ok;
}
