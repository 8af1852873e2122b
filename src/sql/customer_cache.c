/*
 * customer_cache.c — the own customer id as last learnt from GET /customer,
 * kept in voipbin_customer_cache (1.2) across sessions and restarts, one row
 * per voipbin.api_url, so that voipbin_subscribe() works while VoIPBIN cannot
 * be reached (sql/customer.c decides when it is used).
 *
 * Nothing of the credential is kept, not even a hash of it: the row names
 * the URL, the id and when it was learnt.  So the row cannot tell a changed
 * credential; every successful GET /customer (voipbin_customer(),
 * voipbin_set_webhook(), a subscription's check) writes the id it saw, and
 * a new api_url has no row until VoIPBIN answers there once.
 *
 * Best effort: the table is read and written as the extension's owner (the
 * REST functions run as their caller, who may have no right to it), in a
 * subtransaction, and a failure (a read-only transaction, a standby, a
 * database still at 1.1) only means that nothing is kept.
 */
#include "voipbin.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "base/db.h"
#include "sql/customer_cache.h"

/*
 * One read (id == NULL: the row into *id_out and *learnt_at) or write (id
 * when it differs from the row) as the owner; false when nothing was found or
 * nothing could be done.
 */
typedef struct CacheIo
{
	const char *api_url;
	const char *to_write;		/* the id to write, NULL: a read, or already known */
	char	   *id_out;
	TimestampTz *learnt_at;
	bool		found;
} CacheIo;

static void
cache_io_step(void *arg)
{
	CacheIo    *io = arg;
	Oid			ext;
	Oid			ext_owner = InvalidOid;
	const char *schema;
	Oid			save_user;
	int			save_sec;

	SPI_connect();
	schema = db_extension_schema(&ext);
	if (schema && db_extension_row(ext, NULL, &ext_owner) && OidIsValid(ext_owner))
	{
		char	   *table = psprintf("%s.voipbin_customer_cache", schema);
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2];
		int			rc;

		GetUserIdAndSecContext(&save_user, &save_sec);
		SetUserIdAndSecContext(ext_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		values[0] = CStringGetTextDatum(io->api_url);
		rc = SPI_execute_with_args(psprintf("SELECT c.customer_id::text, c.learnt_at FROM %s c "
											"WHERE c.api_url = $1", table),
								   1, types, values, NULL, true, 1);
		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			char	   *got = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			io->found = got != NULL && strlen(got) == CUSTOMER_ID_LEN;
			if (io->found && io->id_out)
				strlcpy(io->id_out, got, CUSTOMER_ID_LEN + 1);
			if (io->found && io->learnt_at)
				*io->learnt_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																   SPI_tuptable->tupdesc, 2, &isnull));
			if (io->to_write && io->found && strcmp(got, io->to_write) == 0)
				io->to_write = NULL;	/* already known: no write */
		}
		if (io->to_write)
		{
			values[1] = CStringGetTextDatum(io->to_write);
			rc = SPI_execute_with_args(psprintf("INSERT INTO %s AS c (api_url, customer_id, learnt_at) "
												"VALUES ($1, $2::uuid, pg_catalog.now()) "
												"ON CONFLICT (api_url) DO UPDATE "
												"SET customer_id = EXCLUDED.customer_id, learnt_at = EXCLUDED.learnt_at",
												table),
									   2, types, values, NULL, false, 0);
			io->found = rc == SPI_OK_INSERT;
		}
		SetUserIdAndSecContext(save_user, save_sec);
	}
	SPI_finish();
}

static bool
cache_io(const char *api_url, const char *id, char *id_out, TimestampTz *learnt_at)
{
	CacheIo		io = {api_url, id, id_out, learnt_at, false};
	ErrorData  *failure;

	if (id && (XactReadOnly || RecoveryInProgress()))
		return false;
	failure = db_try(cache_io_step, &io);
	if (failure == NULL)
		return io.found;
	if (failure->sqlerrcode == ERRCODE_QUERY_CANCELED)
		ReThrowError(failure);
	/* a database still at 1.0 or 1.1 has no table: nothing to say */
	if (failure->sqlerrcode != ERRCODE_UNDEFINED_TABLE)
		ereport(DEBUG1,
				(errmsg("voipbin: could not %s voipbin_customer_cache: %s",
						id ? "write" : "read", failure->message)));
	return false;
}

bool
customer_cache_get(const char *api_url, char *id_out, TimestampTz *learnt_at)
{
	return cache_io(api_url, NULL, id_out, learnt_at);
}

void
customer_cache_put(const char *api_url, const char *id)
{
	(void) cache_io(api_url, id, NULL, NULL);
}
