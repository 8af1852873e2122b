/*
 * repair_job.c — the repair under way: its state, shared by repair.c (which
 * drives it) and repair_walk.c (which reads VoIPBIN's answers into it), and
 * the notes that make its outcome partial.
 */
#include "voipbin.h"

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "repair/repair_job.h"

MemoryContext repair_cxt = NULL;
MemoryContext attempt_cxt = NULL;
Job			repair_job;

void
repair_note(const char *fmt,...)
{
	MemoryContext old = MemoryContextSwitchTo(repair_cxt);
	va_list		ap;

	if (repair_job.notes.len > 0)
		appendStringInfoString(&repair_job.notes, "; ");
	for (;;)
	{
		int			needed;

		va_start(ap, fmt);
		needed = appendStringInfoVA(&repair_job.notes, fmt, ap);
		va_end(ap);
		if (needed == 0)
			break;
		enlargeStringInfo(&repair_job.notes, needed);
	}
	MemoryContextSwitchTo(old);
}

void
repair_set_fatal(const char *why)
{
	if (repair_job.fatal == NULL)
		repair_job.fatal = MemoryContextStrdup(attempt_cxt, why);
}
