/*
 * activity.h — what pg_stat_activity says the worker is doing, as
 * "storing 2000 events (connected, 3 topics)" or "idle (backoff, 0 topics)".
 */
#ifndef VOIPBIN_WORKER_ACTIVITY_H
#define VOIPBIN_WORKER_ACTIVITY_H

#include "postgres.h"

#include "base/status.h"

/* The worker is at work: fmt says on what ("storing 2000 events"). */
extern void activity_running(const char *fmt,...) pg_attribute_printf(1, 2);

/* The worker waits for work. */
extern void activity_idle(void);

/* What the parenthesis says: the connection's state and the topics live on it. */
extern void activity_context(VoipbinState state, int topics);

#endif
