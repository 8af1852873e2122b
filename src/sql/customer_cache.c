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

/* The owner of the extension, InvalidOid when it is not installed. */
static Oid
extension_owner(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'voipbin'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return InvalidOid;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? InvalidOid : DatumGetObjectId(d);
}

/*
 * One read (id == NULL: the row into *id_out and *learnt_at) or write (id
 * when it differs from the row) as the owner; false when nothing was found or
 * nothing could be done.
 */
static bool
cache_io(const char *api_url, const char *id, char *id_out, TimestampTz *learnt_at)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool found = false;
	const char *volatile to_write = id;

	if (id && (XactReadOnly || RecoveryInProgress()))
		return false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		const char *schema;
		Oid			ext_owner;
		Oid			save_user;
		int			save_sec;

		SPI_connect();
		schema = db_extension_schema(NULL);
		ext_owner = extension_owner();
		if (schema && OidIsValid(ext_owner))
		{
			char	   *table = psprintf("%s.voipbin_customer_cache", schema);
			Oid			types[2] = {TEXTOID, TEXTOID};
			Datum		values[2];
			int			rc;

			GetUserIdAndSecContext(&save_user, &save_sec);
			SetUserIdAndSecContext(ext_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
								   SECURITY_RESTRICTED_OPERATION);
			values[0] = CStringGetTextDatum(api_url);
			rc = SPI_execute_with_args(psprintf("SELECT c.customer_id::text, c.learnt_at FROM %s c "
												"WHERE c.api_url = $1", table),
									   1, types, values, NULL, true, 1);
			if (rc == SPI_OK_SELECT && SPI_processed == 1)
			{
				bool		isnull;
				char	   *got = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

				found = got != NULL && strlen(got) == CUSTOMER_ID_LEN;
				if (found && id_out)
					strlcpy(id_out, got, CUSTOMER_ID_LEN + 1);
				if (found && learnt_at)
					*learnt_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																   SPI_tuptable->tupdesc, 2, &isnull));
				if (to_write && found && strcmp(got, to_write) == 0)
					to_write = NULL;	/* already known: no write */
			}
			if (to_write)
			{
				values[1] = CStringGetTextDatum(to_write);
				rc = SPI_execute_with_args(psprintf("INSERT INTO %s AS c (api_url, customer_id, learnt_at) "
													"VALUES ($1, $2::uuid, pg_catalog.now()) "
													"ON CONFLICT (api_url) DO UPDATE "
													"SET customer_id = EXCLUDED.customer_id, learnt_at = EXCLUDED.learnt_at",
													table),
										   2, types, values, NULL, false, 0);
				found = rc == SPI_OK_INSERT;
			}
			SetUserIdAndSecContext(save_user, save_sec);
		}
		SPI_finish();
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		/* a database still at 1.0 or 1.1 has no table: nothing to say */
		if (edata->sqlerrcode != ERRCODE_UNDEFINED_TABLE)
			ereport(DEBUG1,
					(errmsg("voipbin: could not %s voipbin_customer_cache: %s",
							id ? "write" : "read", edata->message)));
		found = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return found;
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
