/*
 * store.c — frames into voipbin_events, NOTIFY at commit, dead letters.
 *
 * A batch of frames goes into one transaction, so throughput is bound by
 * Postgres rather than by a commit per frame.  When anything in the batch
 * fails (a frame that is no JSON object, a user's trigger that raises), the
 * batch is redone with each frame in a subtransaction of its own, and only the
 * failing frames become dead letters: nothing that arrived is dropped.
 */
#include "voipbin.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "store.h"

/* NOTIFY payloads stay under Postgres's 8,000-byte limit with room to spare. */
#define NOTIFY_PAYLOAD_LIMIT 7900

static Oid	plans_ext_oid = InvalidOid;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr batch_plan = NULL;
static SPIPlanPtr dead_letter_plan = NULL;
static SPIPlanPtr prune_events_plan = NULL;
static SPIPlanPtr prune_dead_plan = NULL;

typedef struct Counts
{
	uint64		stored;
	uint64		duplicates;
	uint64		dead;
} Counts;

static TimestampTz
received_at(const WsEvent *ev)
{
	/* µs since the Unix epoch to µs since the Postgres epoch */
	return (TimestampTz) ev->at_us -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC);
}

static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "voipbin: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

static void
forget_plans(void)
{
	SPIPlanPtr *plans[] = {&insert_plan, &batch_plan, &dead_letter_plan, &prune_events_plan,
	&prune_dead_plan};

	for (size_t i = 0; i < lengthof(plans); i++)
		if (*plans[i])
		{
			SPI_freeplan(*plans[i]);
			*plans[i] = NULL;
		}
	plans_ext_oid = InvalidOid;
}

/* pg_extension.extnamespace; PostgreSQL 15 exports no function for it. */
static Oid
extension_namespace(Oid ext)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			nsp = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nsp = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

/*
 * The schema of the installed extension, quoted, or NULL when the extension
 * is not installed in this database (the worker then keeps what it has).
 * Needs a transaction and an SPI connection.
 */
const char *
store_extension_schema(void)
{
	Oid			ext = get_extension_oid("voipbin", true);
	static char *schema = NULL;

	if (!OidIsValid(ext))
	{
		if (OidIsValid(plans_ext_oid))
			forget_plans();
		return NULL;
	}
	if (ext != plans_ext_oid || schema == NULL)
	{
		char	   *name = get_namespace_name(extension_namespace(ext));

		if (name == NULL)
			return NULL;
		if (schema)
			pfree(schema);
		schema = MemoryContextStrdup(TopMemoryContext, quote_identifier(name));
	}
	return schema;
}

/* Plans for the installed extension; false when it is not installed. */
static bool
prepare_plans(void)
{
	Oid			ext = get_extension_oid("voipbin", true);
	const char *schema;

	if (ext == plans_ext_oid && OidIsValid(ext))
		return true;
	forget_plans();
	schema = store_extension_schema();
	if (schema == NULL)
		return false;

	{
		Oid			types[] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, UUIDOID, UUIDOID, JSONBOID};

		insert_plan = keep_plan(psprintf(
										 "INSERT INTO %s.voipbin_events"
										 " (received_at, source, event_type, resource, resource_id, customer_id, data)"
										 " VALUES ($1, 'websocket', $2, $3, $4, $5, $6)"
										 " ON CONFLICT (event_type, resource_id, %s.voipbin_data_hash(data)) DO NOTHING"
										 " RETURNING id", schema, schema),
								6, types);
	}
	{
		Oid			types[] = {TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID, UUIDARRAYOID,
		UUIDARRAYOID, JSONBARRAYOID};

		/* one statement for the whole batch: the executor starts once, not per event */
		batch_plan = keep_plan(psprintf(
										"INSERT INTO %s.voipbin_events"
										" (received_at, source, event_type, resource, resource_id, customer_id, data)"
										" SELECT r, 'websocket', e, res, rid, cid, d"
										" FROM unnest($1, $2, $3, $4, $5, $6) AS u(r, e, res, rid, cid, d)"
										" ON CONFLICT (event_type, resource_id, %s.voipbin_data_hash(data)) DO NOTHING"
										" RETURNING id, event_type, resource_id, data", schema, schema),
							   6, types);
	}
	{
		Oid			types[] = {TIMESTAMPTZOID, BYTEAOID, TEXTOID};

		dead_letter_plan = keep_plan(psprintf(
											  "INSERT INTO %s.voipbin_dead_letters (received_at, source, raw, error)"
											  " VALUES ($1, 'websocket', $2, $3)", schema),
									 3, types);
	}
	{
		Oid			types[] = {INTERVALOID};

		/* small batches by the received_at index: no long locks */
		prune_events_plan = keep_plan(psprintf(
											   "DELETE FROM %s.voipbin_events WHERE id IN"
											   " (SELECT id FROM %s.voipbin_events"
											   "  WHERE received_at < now() - $1 ORDER BY received_at LIMIT 1000)",
											   schema, schema), 1, types);
		prune_dead_plan = keep_plan(psprintf(
											 "DELETE FROM %s.voipbin_dead_letters WHERE id IN"
											 " (SELECT id FROM %s.voipbin_dead_letters"
											 "  WHERE received_at < now() - $1 ORDER BY received_at LIMIT 1000)",
											 schema, schema), 1, types);
	}
	plans_ext_oid = ext;
	return true;
}

static bool
is_channel_name(const char *s)
{
	int			n = 0;

	if (!(*s >= 'a' && *s <= 'z'))
		return false;
	for (; *s; s++, n++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return n <= 63;
}

/*
 * Two notifications per event; they go out when the transaction commits.
 * data_text, when given, is the payload's JSON text as received (a bare
 * frame in a UTF-8 database), which spares converting the jsonb back.
 */
static void
notify_row(int64 id, const char *event_type, const pg_uuid_t *resource_id, Jsonb *data,
		   const char *data_text, size_t data_len)
{
	StringInfoData p;
	int			before_data;

	initStringInfo(&p);
	appendStringInfo(&p, "{\"id\": " INT64_FORMAT ", \"event_type\": ", id);
	escape_json(&p, event_type);
	appendStringInfoString(&p, ", \"resource_id\": ");
	if (resource_id != NULL)
	{
		appendStringInfoChar(&p, '"');
		appendStringInfoString(&p, DatumGetCString(DirectFunctionCall1(uuid_out,
																	   UUIDPGetDatum(resource_id))));
		appendStringInfoChar(&p, '"');
	}
	else
		appendStringInfoString(&p, "null");
	before_data = p.len;
	appendStringInfoString(&p, ", \"data\": ");
	if (data_text == NULL)
		JsonbToCString(&p, &data->root, VARSIZE(data));
	else if (p.len + data_len < NOTIFY_PAYLOAD_LIMIT)
		appendBinaryStringInfo(&p, data_text, (int) data_len);
	appendStringInfoChar(&p, '}');
	if (p.len > NOTIFY_PAYLOAD_LIMIT || (data_text && p.len - before_data < (int) data_len))
	{
		/* the listener reads the row by id */
		p.len = before_data;
		p.data[p.len] = '\0';
		appendStringInfoString(&p, ", \"truncated\": true}");
	}

	if (is_channel_name(event_type))
		Async_Notify(event_type, p.data);
	Async_Notify("voipbin_events", p.data);
	pfree(p.data);
}

/* The frame's text when it is exactly the event's data as JSON, else NULL. */
static const char *
received_text(const WsEvent *ev, const FrameEvent *fe)
{
	return fe->bare && GetDatabaseEncoding() == PG_UTF8 ? ev->data : NULL;
}

/* Classifies and inserts one frame; raises an ERROR for a frame that is no event. */
static void
store_one(const WsEvent *ev, Counts *counts)
{
	FrameEvent	fe;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	frame_classify(ev->data, ev->len, ev->binary, &fe);

	values[0] = TimestampTzGetDatum(received_at(ev));
	values[1] = CStringGetTextDatum(fe.event_type);
	values[2] = fe.resource ? CStringGetTextDatum(fe.resource) : (Datum) 0;
	if (!fe.resource)
		nulls[2] = 'n';
	values[3] = UUIDPGetDatum(&fe.resource_id);
	if (!fe.has_resource_id)
		nulls[3] = 'n';
	values[4] = UUIDPGetDatum(&fe.customer_id);
	if (!fe.has_customer_id)
		nulls[4] = 'n';
	values[5] = JsonbPGetDatum(fe.data);

	rc = SPI_execute_plan(insert_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "voipbin: inserting an event failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		counts->duplicates++;
		return;
	}
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull));

		notify_row(id, fe.event_type, fe.has_resource_id ? &fe.resource_id : NULL, fe.data,
				   received_text(ev, &fe), ev->len);
	}
	counts->stored++;
}

static void
store_dead_letter(const WsEvent *ev, const char *error)
{
	Datum		values[3];
	bytea	   *raw = palloc(VARHDRSZ + ev->len);
	int			rc;

	SET_VARSIZE(raw, VARHDRSZ + ev->len);
	memcpy(VARDATA(raw), ev->data, ev->len);
	values[0] = TimestampTzGetDatum(received_at(ev));
	values[1] = PointerGetDatum(raw);
	values[2] = CStringGetTextDatum(error);
	rc = SPI_execute_plan(dead_letter_plan, values, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "voipbin: inserting a dead letter failed: %s", SPI_result_code_string(rc));
}

static void
publish_counts(const Counts *c)
{
	pg_atomic_fetch_add_u64(&voipbin_shared->events_stored, c->stored);
	pg_atomic_fetch_add_u64(&voipbin_shared->duplicates, c->duplicates);
	pg_atomic_fetch_add_u64(&voipbin_shared->dead_letters, c->dead);
}

/* A transaction with SPI and a snapshot, as every database step of the worker needs. */
void
store_begin_work(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "voipbin: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
store_end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

static Datum
array_of(Datum *values, bool *nulls, int n, Oid type)
{
	int16		len;
	bool		byval;
	char		align;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &len, &byval, &align);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, type, len, byval, align));
}

/*
 * The whole batch in one INSERT … SELECT FROM unnest(…); the rows it returns
 * (duplicates are not returned) are notified in insertion order.  Raises on
 * the first frame that is no event or on any error of the insert.
 */
static void
store_batch(WsEvent **frames, int n, Counts *counts)
{
	Datum	   *cols[6];
	bool	   *nulls[6];
	Datum		args[6];
	static const Oid types[6] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, UUIDOID, UUIDOID, JSONBOID};
	FrameEvent *fes = palloc(sizeof(FrameEvent) * n);
	int			rc;

	for (int c = 0; c < 6; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	for (int i = 0; i < n; i++)
	{
		FrameEvent *fe = &fes[i];

		frame_classify(frames[i]->data, frames[i]->len, frames[i]->binary, fe);
		cols[0][i] = TimestampTzGetDatum(received_at(frames[i]));
		cols[1][i] = CStringGetTextDatum(fe->event_type);
		cols[2][i] = fe->resource ? CStringGetTextDatum(fe->resource) : (Datum) 0;
		nulls[2][i] = fe->resource == NULL;
		cols[3][i] = UUIDPGetDatum(&fe->resource_id);
		nulls[3][i] = !fe->has_resource_id;
		cols[4][i] = UUIDPGetDatum(&fe->customer_id);
		nulls[4][i] = !fe->has_customer_id;
		cols[5][i] = JsonbPGetDatum(fe->data);
	}
	for (int c = 0; c < 6; c++)
		args[c] = array_of(cols[c], nulls[c], n, types[c]);

	rc = SPI_execute_plan(batch_plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "voipbin: inserting events failed: %s", SPI_result_code_string(rc));
	/*
	 * The rows come back in insertion order, duplicates left out: match each
	 * to its frame, whose received text can then be the payload.
	 */
	for (uint64 r = 0, i = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull,
					rid_null;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
		Datum		rid = SPI_getbinval(tup, desc, 3, &rid_null);
		Jsonb	   *data = DatumGetJsonbP(SPI_getbinval(tup, desc, 4, &isnull));
		const char *text = NULL;

		for (; i < (uint64) n; i++)
			if (strcmp(fes[i].event_type, event_type) == 0 &&
				VARSIZE(fes[i].data) == VARSIZE(data) &&
				memcmp(fes[i].data, data, VARSIZE(data)) == 0)
			{
				text = received_text(frames[i], &fes[i]);
				i++;
				break;
			}
		notify_row(id, event_type, rid_null ? NULL : DatumGetUUIDP(rid), data,
				   text, text ? frames[i - 1]->len : 0);
	}
	counts->stored += SPI_processed;
	counts->duplicates += n - SPI_processed;
}

/* The redo: each frame in a subtransaction, failures become dead letters. */
static void
store_one_by_one(WsEvent **frames, int n, Counts *counts)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	for (int i = 0; i < n; i++)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			store_one(frames[i], counts);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;

			store_dead_letter(frames[i], edata->message);
			counts->dead++;
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
}

/*
 * Stores n frames.  STORE_DONE: every frame is now an event, a counted
 * duplicate or a dead letter.  STORE_NOT_READY: the extension is not
 * installed.  STORE_FAILED: the database could not take them (the error is
 * logged); the caller keeps the frames and tries again later.
 */
StoreResult
store_frames(WsEvent **frames, int n, const char *journal_id, uint64 upto,
			 TimestampTz *retry_at)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile StoreResult result = STORE_FAILED;
	volatile bool retry_one_by_one = false;
	Counts		counts = {0};

	PG_TRY();
	{
		store_begin_work();
		if (!prepare_plans() || (journal_id && position_ready() != POSITION_READY))
			result = STORE_NOT_READY;
		else
		{
			if (n == 1)
				store_one(frames[0], &counts);
			else
				store_batch(frames, n, &counts);
			if (journal_id)
				position_save(journal_id, upto);
		}
		store_end_work();
		if (result != STORE_NOT_READY)
			result = STORE_DONE;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		AbortCurrentTransaction();
		retry_one_by_one = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	if (retry_one_by_one)
	{
		memset(&counts, 0, sizeof(counts));
		PG_TRY();
		{
			store_begin_work();
			if (!prepare_plans() || (journal_id && position_ready() != POSITION_READY))
				result = STORE_NOT_READY;
			else
			{
				store_one_by_one(frames, n, &counts);
				if (journal_id)
					position_save(journal_id, upto);
			}
			store_end_work();
			if (result != STORE_NOT_READY)
				result = STORE_DONE;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			ereport(WARNING,
					(errmsg("voipbin: could not store %d received frame(s), will retry: %s",
							n, edata->message)));
			voipbin_set_error(edata->message);
			FreeErrorData(edata);
			result = STORE_FAILED;
			*retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
			/* the extension may have changed under us: re-prepare next time */
			forget_plans();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
	}

	if (result == STORE_DONE)
		publish_counts(&counts);
	return result;
}

/*
 * Deletes events and dead letters past voipbin.event_retention, a batch at a
 * time, each batch its own transaction so no lock is held for long.  Errors
 * propagate: the worker runs this through guarded().
 */
void
store_prune(void)
{
	Interval   *keep;
	Datum		values[1];
	bool		more = true;

	if (voipbin_event_retention_s <= 0)
		return;
	keep = palloc0(sizeof(Interval));
	keep->time = (int64) voipbin_event_retention_s * USECS_PER_SEC;
	values[0] = IntervalPGetDatum(keep);
	for (int round = 0; more && round < 100; round++)
	{
		uint64		deleted = 0;

		store_begin_work();
		if (prepare_plans())
		{
			SPI_execute_plan(prune_events_plan, values, NULL, false, 0);
			deleted += SPI_processed;
			SPI_execute_plan(prune_dead_plan, values, NULL, false, 0);
			deleted += SPI_processed;
		}
		store_end_work();
		more = deleted > 0;
		CHECK_FOR_INTERRUPTS();
	}
}
