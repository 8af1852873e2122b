/*
 * customer_cache.h — the own customer id kept in voipbin_customer_cache per
 * voipbin.api_url, nothing of the credential with it (sql/customer_cache.c).
 */
#ifndef VOIPBIN_SQL_CUSTOMER_CACHE_H
#define VOIPBIN_SQL_CUSTOMER_CACHE_H

#include "postgres.h"
#include "datatype/timestamp.h"

#define CUSTOMER_ID_LEN 36

/* The id learnt for api_url (lower-case text) and when; false when none. */
extern bool customer_cache_get(const char *api_url, char *id_out, TimestampTz *learnt_at);

/* Keeps id as the one learnt for api_url (a write only when it changed). */
extern void customer_cache_put(const char *api_url, const char *id);

#endif
