/*
 * webhook.h — the worker's hooks for the webhook receiver (webhook.c).
 */
#ifndef VOIPBIN_WEBHOOK_H
#define VOIPBIN_WEBHOOK_H

/* At worker start: the eventfd to add to the WaitEventSet. */
extern int	webhook_worker_start(void);

/* After ProcessConfigFile(): start, stop or move the receiver, take a new secret. */
extern void webhook_worker_reload(void);

/*
 * Each loop iteration: counters to voipbin_status(), the secret fetch,
 * verified bodies to the database.  Returns ms until it needs to run again,
 * or -1.
 */
extern long webhook_worker_step(void);

/* At worker exit. */
extern void webhook_worker_stop(void);

#endif
