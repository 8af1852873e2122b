/*
 * subscriptions.h — the topics live on the current connection: sent, proven, dropped or rejected.
 */
#ifndef VOIPBIN_WORKER_SUBSCRIPTIONS_H
#define VOIPBIN_WORKER_SUBSCRIPTIONS_H

#include "postgres.h"
#include "datatype/timestamp.h"

extern void subs_reset(void);
extern void subs_sync(void);
extern TimestampTz subs_next_deadline(void);
extern bool subs_promote_due(TimestampTz now);
extern void subs_connection_dropped(TimestampTz closed_at, const char *why);
extern int	subs_live_count(void);

#endif
