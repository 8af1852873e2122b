/*
 * dedupe.c — the key that makes a repeated event a duplicate.
 *
 * jsonb's binary form is canonical (keys sorted and unique, one encoding per
 * value), so equal payloads have equal bytes: hashing them spares the
 * jsonb-to-text conversion that md5(data::text) would cost on every insert.
 * 128 bits, so that two distinct events never collide in practice.
 */
#include "voipbin.h"

#include "common/md5.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "ingest/dedupe.h"

void
dedupe_data_hash(const Jsonb *data, pg_uuid_t *hash)
{
	const char *errstr = NULL;

	if (!pg_md5_binary(VARDATA(data), VARSIZE(data) - VARHDRSZ, hash->data, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the MD5 of an event: %s", errstr)));
}

/* voipbin_data_hash(jsonb) RETURNS uuid: MD5 of the jsonb bytes, as a uuid for its 16-byte type. */
PG_FUNCTION_INFO_V1(voipbin_data_hash);
Datum
voipbin_data_hash(PG_FUNCTION_ARGS)
{
	Jsonb	   *data = PG_GETARG_JSONB_P(0);
	pg_uuid_t  *hash = palloc(sizeof(pg_uuid_t));

	dedupe_data_hash(data, hash);
	PG_RETURN_UUID_P(hash);
}
