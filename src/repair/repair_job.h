/*
 * repair_job.h — what repair.c (a repair's lifecycle) and repair_walk.c (its
 * requests and what their answers become) share.  Main thread only.
 */
#ifndef VOIPBIN_REPAIR_JOB_H
#define VOIPBIN_REPAIR_JOB_H

#include "voipbin.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

/* VoIPBIN's clock and ours may differ, and a call's last event may precede the drop. */
#define REPAIR_MARGIN_S		30
/* GET /calls stops here whatever: a repair reaching further back is only partial. */
#define REPAIR_MAX_PAGES	50
/* Calls known locally, not settled: at most this many are read one by one. */
#define REPAIR_MAX_OPEN		1000
/* ... among those whose latest event arrived at most this long before the outage. */
#define REPAIR_OPEN_HORIZON "1 day"
#define REPAIR_MAX_ATTEMPTS 10
#define REPAIR_BACKOFF_MS	5000
#define REPAIR_BACKOFF_MAX_MS (5 * 60 * 1000)
/* How long a finished repair waits for the store to take what it journaled. */
#define REPAIR_DRAIN_MS		5000
#define NIL_UUID			"00000000-0000-0000-0000-000000000000"

typedef enum JobPhase
{
	JOB_IDLE,
	JOB_BEGIN,					/* an attempt is due at retry_at */
	JOB_RUNNING,
	JOB_DRAINING				/* every request answered: waiting for the store */
} JobPhase;

typedef struct Job
{
	JobPhase	phase;
	List	   *gap_ids;		/* int64s as pointers to palloc'd, newest last */
	TimestampTz since;			/* the walk reaches back to here */
	int64		first_event_id; /* voipbin_events ids above it were stored since */
	bool		have_first_id;
	int			attempt;
	TimestampTz retry_at;
	TimestampTz drain_until;
	int			pages;
	bool		list_done;
	List	   *walked;			/* call ids seen in the walk (char *) */
	List	   *open_calls;		/* call ids not settled locally (char *) */
	List	   *changed;		/* call ids whose details were asked for */
	List	   *topics;			/* the subscribed topics (char *): what to store */
	List	   *again;			/* requests to ask again when due (repair_walk.c) */
	StringInfoData notes;		/* what made it partial */
	int			deleted,
				gone,
				denied,
				lost;
	char	   *fatal;			/* why this attempt cannot finish */
	uint64		last_pos;		/* the journal's position past the last object */
} Job;

extern MemoryContext repair_cxt;	/* the job; reset for each job */
extern MemoryContext attempt_cxt;	/* one attempt's lists; reset each attempt */
extern Job	repair_job;

/* repair_walk.c */
extern void repair_note(const char *fmt,...) pg_attribute_printf(1, 2);
extern void repair_set_fatal(const char *why);

#endif
