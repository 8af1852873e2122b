/*
 * dedupe.h — the dedupe key's data hash, for the dead letters' own (store.c).
 */
#ifndef VOIPBIN_INGEST_DEDUPE_H
#define VOIPBIN_INGEST_DEDUPE_H

#include "postgres.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

/* MD5 of data's jsonb bytes, as voipbin_data_hash() gives it. */
extern void dedupe_data_hash(const Jsonb *data, pg_uuid_t *hash);

#endif
