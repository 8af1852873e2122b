/*
 * request_recover.h — at the worker's start, the requests a stopped worker
 * left 'sending': it may or may not have sent them.
 */
#ifndef VOIPBIN_REQUEST_RECOVER_H
#define VOIPBIN_REQUEST_RECOVER_H

#include "postgres.h"

/*
 * In the caller's transaction, before anything is claimed: a request that
 * may be repeated goes back to the queue, any other one becomes unknown
 * (notified).  Returns how many became unknown.
 */
extern int	request_recover(const char *schema);

#endif
