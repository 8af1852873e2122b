/*
 * prune.h — retention: events and dead letters past voipbin.event_retention deleted in small batches.
 */
#ifndef VOIPBIN_MAINTENANCE_PRUNE_H
#define VOIPBIN_MAINTENANCE_PRUNE_H

#include "postgres.h"

/*
 * Deletes events and dead letters past voipbin.event_retention, a batch at a
 * time, each in its own transaction; errors propagate.  Returns true when it
 * stopped with rows still due (the pass is bounded in time): call again soon.
 */
extern bool prune_step(void);

#endif
