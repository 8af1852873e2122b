/*
 * before_triggers.c — whether a BEFORE ROW INSERT trigger on voipbin_events
 * or on any of its partitions can change or skip the rows the worker inserts.
 *
 * Without one, a stored row is the row the worker gave, so the batch insert
 * needs back only which rows went in (their ids, which the worker draws
 * itself), not a copy of every row and its data.  With one, the rows come
 * back whole, as a trigger left them.
 *
 * The answer is kept until a relcache invalidation of the table or of one of
 * its partitions: creating or dropping a trigger invalidates its table's
 * entry, attaching or creating a partition its parent's.  Asking again is
 * one catalog query.
 */
#include "voipbin.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"

#include "ingest/before_triggers.h"

static bool known = false;
static bool present = false;
static uint64 invalidations = 0;
static Oid *tree = NULL;		/* the table and its partitions, when known */
static int	tree_n = 0;
static bool asking = false;		/* while asking, any invalidation may be of the table */

static void
forget(Datum arg, Oid relid)
{
	bool		ours = asking || !OidIsValid(relid);

	for (int i = 0; i < tree_n && !ours; i++)
		ours = tree[i] == relid;
	if (ours)
	{
		known = false;
		invalidations++;
	}
}

/* schema: quoted, as db_extension_schema(NULL) gives it.  Needs SPI connected. */
bool
events_before_row_triggers(const char *schema)
{
	static bool registered = false;
	uint64		before = invalidations;
	char	   *sql;
	volatile int rc = 0;
	bool		isnull;

	if (!registered)
	{
		CacheRegisterRelcacheCallback(forget, (Datum) 0);
		registered = true;
	}
	if (known)
		return present;

	tree_n = 0;
	asking = true;

	/* tgtype: ROW 1, BEFORE 2, INSERT 4 (catalog/pg_trigger.h) */
	sql = psprintf("SELECT p.relid, EXISTS (SELECT FROM pg_catalog.pg_trigger t"
				   "  WHERE t.tgrelid = p.relid AND t.tgtype & 7 = 7)"
				   " FROM pg_catalog.pg_partition_tree(%s::pg_catalog.regclass) p",
				   quote_literal_cstr(psprintf("%s.voipbin_events", schema)));
	PG_TRY();
	{
		rc = SPI_execute(sql, true, 0);
	}
	PG_FINALLY();
	{
		asking = false;
	}
	PG_END_TRY();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: looking for BEFORE INSERT triggers failed: %s",
			 SPI_result_code_string(rc));

	present = false;
	if (tree)
		pfree(tree);
	tree = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];

		tree[r] = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		present |= DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
	}
	pfree(sql);

	/*
	 * An invalidation that came while the query ran (its locks process the
	 * pending ones) may be of a trigger it did not see: ask again next time.
	 */
	known = invalidations == before;
	tree_n = (int) SPI_processed;
	return present;
}
