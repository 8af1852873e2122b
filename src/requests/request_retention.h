/*
 * request_retention.h — finished requests deleted after voipbin.request_retention.
 */
#ifndef VOIPBIN_REQUEST_RETENTION_H
#define VOIPBIN_REQUEST_RETENTION_H

#include "postgres.h"

/*
 * Deletes one batch of rows finished longer ago than
 * voipbin.request_retention (0: none), in the caller's transaction; true
 * when more may be due.
 */
extern bool request_retention_step(const char *schema);

#endif
