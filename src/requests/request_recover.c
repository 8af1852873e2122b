/*
 * request_recover.c — the rows a stopped worker left 'sending' (request_recover.h).
 *
 * The worker commits 'sending' before a request leaves, so such a row may
 * have reached VoIPBIN or not, and no one can tell which: sent again only
 * when a repeat cannot do it twice (request_rules.h), else unknown for good.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "requests/request_recover.h"
#include "requests/request_outcome.h"
#include "requests/request_rules.h"

#define STOPPED_WHILE_SENDING "the worker stopped while sending it"

int
request_recover(const char *schema)
{
	int			rc;
	int			unknown = 0;
	SPITupleTable *rows;
	uint64		n;

	rc = SPI_execute(psprintf("SELECT id, method, path FROM %s.voipbin_requests "
							  "WHERE state = 'sending' ORDER BY id FOR UPDATE", schema), false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: reading the requests left sending: %s", SPI_result_code_string(rc));
	rows = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull));
		char	   *method = SPI_getvalue(rows->vals[i], rows->tupdesc, 2);
		char	   *path = SPI_getvalue(rows->vals[i], rows->tupdesc, 3);

		/* the rules' own reading of "sent, and no answer came" */
		if (request_verdict(request_kind(method, path), method, path, ATTEMPT_NO_ANSWER,
							0, NULL, false) == VERDICT_RETRY)
		{
			Oid			types[1] = {INT8OID};
			Datum		values[1] = {Int64GetDatum(id)};

			rc = SPI_execute_with_args(psprintf("UPDATE %s.voipbin_requests SET state = 'queued', "
												"next_attempt_at = now() WHERE id = $1", schema),
									   1, types, values, NULL, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "voipbin: queueing request " INT64_FORMAT " again: %s",
					 id, SPI_result_code_string(rc));
		}
		else
		{
			request_outcome_finish(schema, id, VERDICT_UNKNOWN, 0, STOPPED_WHILE_SENDING);
			unknown++;
		}
	}
	if (n > 0)
		ereport(LOG,
				(errmsg("voipbin: %llu requests were left sending by the worker before: %d queued again, %d unknown",
						(unsigned long long) n, (int) n - unknown, unknown)));
	return unknown;
}
