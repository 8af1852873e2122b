/*
 * store.h — what the worker's loop needs from store.c and subscriptions.c.
 */
#ifndef VOIPBIN_STORE_H
#define VOIPBIN_STORE_H

#include "ws_client.h"

typedef enum StoreResult
{
	STORE_DONE,
	STORE_NOT_READY,
	STORE_FAILED
} StoreResult;

extern StoreResult store_frames(WsEvent **frames, int n);
extern void store_prune(void);
extern const char *store_extension_schema(void);
extern void store_begin_work(void);
extern void store_end_work(void);

/* subscriptions.c: the topics live on the current connection */
extern void subs_reset(void);
extern void subs_sync(void);
extern TimestampTz subs_next_deadline(void);
extern bool subs_promote_due(TimestampTz now);
extern void subs_connection_dropped(TimestampTz closed_at, const char *why);
extern int	subs_live_count(void);

#endif
