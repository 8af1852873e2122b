/*
 * request_retention.c — deleting old finished requests (request_retention.h),
 * a batch per transaction so that a large backlog never holds locks long.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "requests/request_retention.h"
#include "base/settings.h"

#define RETENTION_BATCH 1000

bool
request_retention_step(const char *schema)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];
	int			rc;

	if (voipbin_request_retention_s <= 0)
		return false;
	values[0] = Int32GetDatum(voipbin_request_retention_s);
	values[1] = Int32GetDatum(RETENTION_BATCH);
	rc = SPI_execute_with_args(psprintf("DELETE FROM %s.voipbin_requests WHERE id IN ("
										"SELECT id FROM %s.voipbin_requests "
										"WHERE finished_at < now() - make_interval(secs => $1) "
										"LIMIT $2 FOR UPDATE SKIP LOCKED)", schema, schema),
							   2, types, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "voipbin: deleting old requests: %s", SPI_result_code_string(rc));
	return SPI_processed >= RETENTION_BATCH;
}
