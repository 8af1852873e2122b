/*
 * db.c — what every database step of the worker shares: the transaction
 * bracket, SPI plans kept across transactions, the installed extension's
 * schema, and looking a function up.
 */
#include "voipbin.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "base/db.h"

void
db_begin_work(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "voipbin: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
db_end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

SPIPlanPtr
db_keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "voipbin: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

void
db_free_plans(SPIPlanPtr **plans, int n)
{
	for (int i = 0; i < n; i++)
		if (*plans[i])
		{
			SPI_freeplan(*plans[i]);
			*plans[i] = NULL;
		}
}

/*
 * The oid of the voipbin extension in this database, InvalidOid when it is
 * not installed, read from pg_extension itself with the catalog snapshot,
 * never from a cache.  The worker is woken at the commit of CREATE and DROP
 * EXTENSION (src/sql/status.c), and the committing backend sends its cache
 * invalidations only after that: a cache (PostgreSQL 18's get_extension_oid
 * reads the EXTENSIONNAME syscache) could then still name a dropped
 * extension, and the worker would read its tables instead of unsubscribing.
 * The catalog snapshot, taken after the commit became visible, cannot.
 */
Oid
db_extension_oid(void)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			ext = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("voipbin"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		ext = ((Form_pg_extension) GETSTRUCT(tuple))->oid;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return ext;
}

/*
 * The schema and owner of extension ext, from its pg_extension row (PostgreSQL
 * 15 exports no function for either); false when there is none.
 */
bool
db_extension_row(Oid ext, Oid *nsp, Oid *owner)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	found = HeapTupleIsValid(tuple);
	if (found)
	{
		Form_pg_extension row = (Form_pg_extension) GETSTRUCT(tuple);

		if (nsp)
			*nsp = row->extnamespace;
		if (owner)
			*owner = row->extowner;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The schema of the installed extension, quoted, or NULL when the extension
 * is not installed in this database (the worker then keeps what it has).
 * Cached until the extension's oid changes (DROP and CREATE EXTENSION).
 */
const char *
db_extension_schema(Oid *ext_out)
{
	Oid			ext = db_extension_oid();
	static Oid	schema_ext = InvalidOid;
	static char *schema = NULL;

	if (ext_out)
		*ext_out = ext;
	if (!OidIsValid(ext))
		return NULL;
	if (ext != schema_ext || schema == NULL)
	{
		Oid			nsp = InvalidOid;
		char	   *name = db_extension_row(ext, &nsp, NULL) ? get_namespace_name(nsp) : NULL;

		if (name == NULL)
			return NULL;
		if (schema)
			pfree(schema);
		schema = MemoryContextStrdup(TopMemoryContext, quote_identifier(name));
		schema_ext = ext;
	}
	return schema;
}

/*
 * Is there a function of this signature (schema-qualified)?  A database
 * still at 1.0 has neither partitions nor their functions.
 */
bool
db_function_exists(const char *signature)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(signature)};
	bool		isnull;
	int			rc;

	rc = SPI_execute_with_args("SELECT pg_catalog.to_regprocedure($1) IS NOT NULL",
							   1, types, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "voipbin: looking up %s failed: %s", signature, SPI_result_code_string(rc));
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Runs step(arg) in a subtransaction.  Its ERROR rolls the subtransaction
 * back and comes back copied into the caller's memory context, for the
 * caller to raise again or to survive; NULL when step ran through.
 */
ErrorData *
db_try(void (*step) (void *arg), void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile failure = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		step(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		failure = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return failure;
}
