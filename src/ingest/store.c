/*
 * store.c — frames into voipbin_events, NOTIFY at commit, dead letters.
 *
 * A batch of frames goes into one transaction, so throughput is bound by
 * Postgres rather than by a commit per frame, and the journal position goes
 * into the same transaction, so a crash neither loses nor repeats a batch.
 *
 * When the batch fails, what the error says decides (store_errors.c).  An
 * error of the moment (a deadlock, a lock timeout, a cancel, a full disk)
 * keeps the whole batch for a retry with backoff, until
 * voipbin.store_retry_timeout has passed; only then do its frames become
 * dead letters, with the last error.  An error of the data (a frame that is
 * no JSON object, a trigger or handler that raises) means some frames can
 * never be stored: they are found by bisecting in subtransactions, become
 * dead letters, and the rest is stored.
 */
#include "voipbin.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "ingest/store.h"
#include "base/db.h"
#include "base/fault.h"
#include "base/settings.h"
#include "base/status.h"
#include "base/time.h"
#include "ingest/before_triggers.h"
#include "ingest/boundaries.h"
#include "ingest/dedupe.h"
#include "ingest/frame.h"
#include "ingest/position.h"
#include "ingest/store_batch.h"
#include "ingest/store_report.h"
#include "ingest/store_retry.h"
#include "net/journal/journal.h"
#include "net/journal/record.h"

/* NOTIFY payloads stay under Postgres's 8,000-byte limit with room to spare. */
#define NOTIFY_PAYLOAD_LIMIT 7900

static Oid	plans_ext_oid = InvalidOid;
static int	plans_window_s = 0;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr batch_plan = NULL;
static SPIPlanPtr batch_ids_plan = NULL;
static Oid	events_seq = InvalidOid;	/* what voipbin_events.id's default draws from */
static const char *plans_schema = NULL;
static SPIPlanPtr dead_letter_plan = NULL;
static bool dead_letter_keys = false;	/* 1.2: a dead letter says what event it is */

static void
forget_plans(void)
{
	SPIPlanPtr *plans[] = {&insert_plan, &batch_plan, &batch_ids_plan, &dead_letter_plan};

	db_free_plans(plans, lengthof(plans));
	plans_ext_oid = InvalidOid;
	events_seq = InvalidOid;
	plans_schema = NULL;
}

/*
 * How far apart in time two copies of an event are looked for across a
 * partition boundary: within one partition its unique index catches a copy
 * whenever it comes, and VoIPBIN's copies come seconds to minutes apart.  A
 * quarter of the interval, at most an hour: the rows that far past a
 * boundary pay for a lookup (a quarter of them with partitions of an hour or
 * less, a twenty-fourth with partitions of a day).
 */
static int
dedupe_window_s(void)
{
	return Min(partition_step_s(voipbin_partition_interval_s, voipbin_event_retention_s) / 4, 3600);
}

/*
 * The condition that no event stored within the window before r is a copy
 * of (e, rid, d), asked only when near (boundaries.c: a partition boundary
 * lies in that window).  The partitions' unique dedupe indexes are per
 * partition, so a copy in the partition before is found here, by its
 * index, the window pruning the other partitions away.  In a CASE, so that
 * it stays a lookup per row that asks for it rather than becoming a join
 * over the whole table.  Two lookups, so that each can use the index:
 * resource_id = NULL is never true.
 */
static char *
no_copy_nearby(const char *schema, const char *near, const char *r, const char *e,
			   const char *rid, const char *d)
{
	int			w = dedupe_window_s();
	const char *probe =
		"SELECT FROM %s.voipbin_events o"
		" WHERE o.received_at >= %s - interval '%d s' AND o.received_at <= %s"
		" AND o.event_type = %s AND o.resource_id %s"
		" AND %s.voipbin_data_hash(o.data) = %s.voipbin_data_hash(%s)";
	char	   *eq = psprintf("= %s", rid);

	return psprintf("CASE WHEN %s THEN NOT EXISTS (%s) AND NOT (%s IS NULL AND EXISTS (%s))"
					" ELSE true END", near,
					psprintf(probe, schema, r, w, r, e, eq, schema, schema, d),
					rid,
					psprintf(probe, schema, r, w, r, e, "IS NULL", schema, schema, d));
}

/*
 * One statement for the whole batch, so the executor starts once, not per
 * event.  The unnests are in a target list (a ProjectSet, row by row), not in
 * FROM, which would copy every row into a tuplestore first.  ids: the worker
 * gives each row's id ($9) and only the ids come back; otherwise the rows
 * come back whole, as BEFORE triggers left them.
 */
static SPIPlanPtr
batch_insert_plan(const char *schema, bool ids)
{
	Oid			types[] = {TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	UUIDARRAYOID, UUIDARRAYOID, JSONBARRAYOID, BOOLARRAYOID, INT8ARRAYOID};

	return db_keep_plan(psprintf(
									"INSERT INTO %s.voipbin_events"
									" (%sreceived_at, source, event_type, resource, resource_id, customer_id, data)"
									" SELECT %sr, s, e, res, rid, cid, d"
									" FROM (SELECT pg_catalog.unnest($1) AS r, pg_catalog.unnest($2) AS s,"
									" pg_catalog.unnest($3) AS e, pg_catalog.unnest($4) AS res,"
									" pg_catalog.unnest($5) AS rid, pg_catalog.unnest($6) AS cid,"
									" pg_catalog.unnest($7) AS d, pg_catalog.unnest($8) AS near%s) AS u"
									" WHERE %s"
									" ON CONFLICT DO NOTHING"
									" RETURNING %s", schema,
									ids ? "id, " : "", ids ? "i, " : "",
									ids ? ", pg_catalog.unnest($9) AS i" : "",
									no_copy_nearby(schema, "u.near", "u.r", "u.e", "u.rid", "u.d"),
									ids ? "id" : "id, event_type, resource_id, data"),
						   ids ? 9 : 8, types);
}

/* The sequence voipbin_events.id is drawn from, InvalidOid if there is none. */
static Oid
events_sequence(const char *schema)
{
	bool		isnull;
	Datum		seq;
	int			rc = SPI_execute(psprintf("SELECT pg_catalog.pg_get_serial_sequence(%s, 'id')"
										  "::pg_catalog.regclass::pg_catalog.oid",
										  quote_literal_cstr(psprintf("%s.voipbin_events", schema))),
								 true, 1);

	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "voipbin: looking up the sequence of voipbin_events.id failed: %s",
			 SPI_result_code_string(rc));
	seq = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? InvalidOid : DatumGetObjectId(seq);
}

/* Whether voipbin_dead_letters has 1.2's columns saying what event a dead letter is. */
static bool
dead_letters_have_keys(const char *schema)
{
	int			rc = SPI_execute(psprintf("SELECT FROM pg_catalog.pg_attribute"
										  " WHERE attrelid = %s::pg_catalog.regclass"
										  " AND attname = 'data_hash' AND NOT attisdropped",
										  quote_literal_cstr(psprintf("%s.voipbin_dead_letters", schema))),
								 true, 1);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: looking up the columns of voipbin_dead_letters failed: %s",
			 SPI_result_code_string(rc));
	return SPI_processed == 1;
}

/*
 * Plans for the installed extension; false when it is not installed.  Every
 * name is qualified: voipbin_retry_dead_letters() prepares them in a user's
 * backend, under whatever search_path it has.
 */
bool
store_plans_ready(void)
{
	Oid			ext = db_extension_oid();
	const char *schema;

	if (ext == plans_ext_oid && OidIsValid(ext) && plans_window_s == dedupe_window_s())
	{
		boundaries_refresh(db_extension_schema(NULL));
		return true;
	}
	forget_plans();
	schema = db_extension_schema(NULL);
	if (schema == NULL)
		return false;

	/*
	 * ON CONFLICT without a target: the arbiter is the unique dedupe index of
	 * the partition the row goes to (a partitioned table can have no unique
	 * index without its partition key), or 1.0's index on the whole table.
	 */
	{
		Oid			types[] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, UUIDOID, JSONBOID,
		BOOLOID};

		insert_plan = db_keep_plan(psprintf(
										 "INSERT INTO %s.voipbin_events"
										 " (received_at, source, event_type, resource, resource_id, customer_id, data)"
										 " SELECT $1, $2, $3, $4, $5, $6, $7 WHERE %s"
										 " ON CONFLICT DO NOTHING"
										 " RETURNING id", schema,
										 no_copy_nearby(schema, "$8", "$1", "$3", "$5", "$7")),
								8, types);
	}
	batch_plan = batch_insert_plan(schema, false);
	batch_ids_plan = batch_insert_plan(schema, true);
	events_seq = events_sequence(schema);
	dead_letter_keys = dead_letters_have_keys(schema);
	if (dead_letter_keys)
	{
		Oid			types[] = {TIMESTAMPTZOID, TEXTOID, BYTEAOID, TEXTOID, TEXTOID, UUIDOID, UUIDOID};

		/*
		 * A copy of an event already dead-lettered (VoIPBIN sends each on two
		 * topics, and both fail alike) is no second dead letter: one event,
		 * one dead letter, one retry.  Found by the index on data_hash.
		 */
		dead_letter_plan = db_keep_plan(psprintf(
											  "INSERT INTO %s.voipbin_dead_letters"
											  " (received_at, source, raw, error, event_type, resource_id, data_hash)"
											  " SELECT $1, $2, $3, $4, $5, $6, $7"
											  " WHERE $7 IS NULL OR NOT EXISTS (SELECT FROM %s.voipbin_dead_letters d"
											  "  WHERE d.data_hash = $7 AND d.event_type = $5"
											  "  AND (d.resource_id = $6 OR ($6 IS NULL AND d.resource_id IS NULL)))",
											  schema, schema),
									 7, types);
	}
	else
	{
		Oid			types[] = {TIMESTAMPTZOID, TEXTOID, BYTEAOID, TEXTOID};

		dead_letter_plan = db_keep_plan(psprintf(
											  "INSERT INTO %s.voipbin_dead_letters (received_at, source, raw, error)"
											  " VALUES ($1, $2, $3, $4)", schema),
									 4, types);
	}
	plans_ext_oid = ext;
	plans_schema = schema;
	plans_window_s = dedupe_window_s();
	boundaries_forget();
	boundaries_refresh(schema);
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
 * data_text, when given, is data's JSON text as received (a slice of the
 * frame, whatever its shape: frame_json.c), which spares converting the
 * jsonb back.
 */
static void
notify_row(int64 id, const char *event_type, const pg_uuid_t *resource_id, Jsonb *data,
		   const char *data_text, size_t data_len)
{
	/*
	 * One buffer for every payload: thousands of events a batch, each a
	 * fresh allocation of its size, only touched fresh memory (page faults)
	 * for what Async_Notify copies anyway.
	 */
	static StringInfoData p = {NULL};
	int			before_data;

	if (p.data == NULL || p.maxlen > 4 * NOTIFY_PAYLOAD_LIMIT)
	{
		if (p.data)
			pfree(p.data);
		p.data = MemoryContextAlloc(TopMemoryContext, 2 * NOTIFY_PAYLOAD_LIMIT);
		p.maxlen = 2 * NOTIFY_PAYLOAD_LIMIT;
	}
	resetStringInfo(&p);
	appendStringInfo(&p, "{\"id\": " INT64_FORMAT ", \"event_type\": ", id);
	escape_json(&p, event_type);
	appendStringInfoString(&p, ", \"resource_id\": ");
	if (resource_id != NULL)
	{
		char	   *u = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(resource_id)));

		appendStringInfoChar(&p, '"');
		appendStringInfoString(&p, u);
		appendStringInfoChar(&p, '"');
		pfree(u);
	}
	else
		appendStringInfoString(&p, "null");
	before_data = p.len;
	/* LISTEN takes no privilege: with "id", listeners read the row, which grants guard */
	if (voipbin_notify_payload == VB_NOTIFY_ID)
		appendStringInfoChar(&p, '}');
	else
	{
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
	}

	if (is_channel_name(event_type))
		Async_Notify(event_type, p.data);
	Async_Notify("voipbin_events", p.data);
}

static const char *
frame_source(const StoreBatch *b, int i)
{
	return b->sources ? b->sources[i] : journal_source_name(b->frames[i]->source);
}

void
store_batch_init(StoreBatch *b, JournalRecord **frames, int n)
{
	memset(b, 0, sizeof(*b));
	b->frames = frames;
	b->n = n;
	b->cxt = CurrentMemoryContext;
	b->fes = palloc0(sizeof(FrameEvent) * n);
	b->errors = palloc0(sizeof(char *) * n);
	b->codes = palloc0(sizeof(int) * n);
	b->contexts = palloc0(sizeof(char *) * n);
	b->copies = palloc0(sizeof(bool) * n);
}

static void
mark_dead(StoreBatch *b, int i, const char *error)
{
	if (b->errors[i] == NULL)
		b->dead++;
	b->errors[i] = MemoryContextStrdup(b->cxt, error ? error : "unknown error");
}

/* Frame i could not be inserted: err says why, and in which trigger or handler. */
static void
mark_failed(StoreBatch *b, int i, const ErrorData *err)
{
	mark_dead(b, i, err->message);
	b->codes[i] = err->sqlerrcode;
	b->contexts[i] = err->context ? MemoryContextStrdup(b->cxt, err->context) : NULL;
}

/*
 * The frame's error when it is a dead letter before any attempt to store it,
 * else NULL: a message past voipbin.max_frame_size, journaled with only its
 * first bytes (storing it again would fail the same way).
 */
#define OVERSIZE_ERROR "message of %llu bytes exceeds voipbin.max_frame_size"

static const char *
refused_before_storing(const JournalRecord *ev)
{
	if (ev->oversize_len == 0)
		return NULL;
	return psprintf(OVERSIZE_ERROR " (%zu bytes); its first %zu bytes are kept",
					(unsigned long long) ev->oversize_len, ev->len, ev->len);
}

/*
 * The real length of a message whose dead letter holds only its start, read
 * back from the error above (the table keeps no such column); else 0.
 */
uint64
store_oversize_len(const char *error)
{
	unsigned long long len = 0;
	int			end = 0;

	if (error && sscanf(error, OVERSIZE_ERROR "%n", &len, &end) == 1 && end > 0)
		return (uint64) len;
	return 0;
}

/*
 * Classifies each frame once for all the attempts of this call: the results
 * live in b->cxt, beyond the transaction.  A frame that is no event is caught
 * without a subtransaction: frame_classify() only parses bytes, and takes no
 * lock, buffer or other resource an abort would have to release.  An error
 * of the moment (out of memory, a cancel) goes on up: the batch is retried.
 */
static void
classify_one(StoreBatch *b, int i)
{
	JournalRecord    *ev = b->frames[i];

	MemoryContextSwitchTo(b->cxt);
	PG_TRY();
	{
		frame_classify(ev->data, ev->len, ev->binary, &b->fes[i]);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(b->cxt);
		edata = CopyErrorData();
		if (store_error_kind(edata->sqlerrcode) != STORE_ERROR_DATA)
			PG_RE_THROW();
		FlushErrorState();
		memset(&b->fes[i], 0, sizeof(FrameEvent));
		mark_dead(b, i, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

void
store_batch_classify(StoreBatch *b)
{
	MemoryContext outer = CurrentMemoryContext;

	if (b->classified)
		return;
	for (int i = 0; i < b->n; i++)
	{
		const char *refused;

		if (b->errors[i] != NULL || b->fes[i].event_type != NULL)
			continue;			/* done by an earlier attempt of this call */
		refused = refused_before_storing(b->frames[i]);
		if (refused)
			mark_dead(b, i, refused);
		else
			classify_one(b, i);
	}
	MemoryContextSwitchTo(outer);
	b->classified = true;
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
 * When frame ev's row was received: its arrival in the journal.  The planted
 * bug VOIPBIN_FAULT=skip-dedupe-once (test/test_chaos.py) dates the first row
 * a process stores a day back: out of its copies' partition and past the look
 * into the partition before, so their dedupe misses it, as a bug in the
 * dedupe key or its boundaries would.  Off unless that variable is set.
 */
static TimestampTz
row_received_at(const JournalRecord *ev)
{
	return time_from_unix_us(ev->at_us) - (voipbin_fault_once("skip-dedupe-once") ? USECS_PER_DAY : 0);
}

/*
 * One event by the single-row plan: at a low rate most batches are one frame.
 * Its payload is the frame's data: with a BEFORE trigger, which may change
 * it, one event goes by the batch plan, which returns the row as stored.
 */
static uint64
insert_one(StoreBatch *b, int i, bool notify)
{
	const JournalRecord *ev = b->frames[i];
	const FrameEvent *fe = &b->fes[i];
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = TimestampTzGetDatum(row_received_at(ev));
	values[1] = CStringGetTextDatum(frame_source(b, i));
	values[2] = CStringGetTextDatum(fe->event_type);
	values[3] = fe->resource ? CStringGetTextDatum(fe->resource) : (Datum) 0;
	if (!fe->resource)
		nulls[3] = 'n';
	values[4] = UUIDPGetDatum(&fe->resource_id);
	if (!fe->has_resource_id)
		nulls[4] = 'n';
	values[5] = UUIDPGetDatum(&fe->customer_id);
	if (!fe->has_customer_id)
		nulls[5] = 'n';
	values[6] = JsonbPGetDatum(fe->data);
	values[7] = BoolGetDatum(boundaries_near(time_from_unix_us(ev->at_us), dedupe_window_s()));

	rc = SPI_execute_plan(insert_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "voipbin: inserting an event failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return 0;
	if (notify)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull));

		notify_row(id, fe->event_type, fe->has_resource_id ? &fe->resource_id : NULL, fe->data,
				   fe->data_text, fe->data_text_len);
	}
	return 1;
}

/*
 * Notifies the rows an insert by given ids returned: ids[k] is what frame
 * idx[k] was given, and the rows come back in that order, duplicates left
 * out.  An id not given (a BEFORE trigger made since the plan was chosen set
 * it) raises an error of the moment: the batch is stored again, by the plan
 * that returns whole rows.
 */
static void
notify_by_id(StoreBatch *b, const int *idx, int m, const Datum *ids)
{
	int			k = 0;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		FrameEvent *fe;

		while (k < m && DatumGetInt64(ids[k]) != DatumGetInt64(id))
			k++;
		if (k == m)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("voipbin: an event was stored with an id it was not given"),
					 errdetail("A BEFORE INSERT trigger on voipbin_events changed it."),
					 errhint("The batch is stored again, and its rows are read back as stored.")));
		fe = &b->fes[idx[k++]];
		notify_row(DatumGetInt64(id), fe->event_type,
				   fe->has_resource_id ? &fe->resource_id : NULL, fe->data,
				   fe->data_text, fe->data_text_len);
	}
}

/*
 * The rows a whole-row insert returned, duplicates left out, in insertion
 * order: each is matched to its frame, whose received text can then be the
 * payload unless a trigger changed the data.
 */
static void
notify_returned(StoreBatch *b, const int *idx, int m)
{
	for (uint64 r = 0, k = 0; r < SPI_processed; r++)
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
		size_t		text_len = 0;

		for (; k < (uint64) m; k++)
		{
			FrameEvent *fe = &b->fes[idx[k]];

			if (strcmp(fe->event_type, event_type) == 0 &&
				VARSIZE(fe->data) == VARSIZE(data) &&
				memcmp(fe->data, data, VARSIZE(data)) == 0)
			{
				text = fe->data_text;
				text_len = fe->data_text_len;
				k++;
				break;
			}
		}
		notify_row(id, event_type, rid_null ? NULL : DatumGetUUIDP(rid), data,
				   text, text ? text_len : 0);
	}
}

/*
 * The frames idx[0..m) in one INSERT … SELECT of unnest(…); the rows it
 * inserts (duplicates are not) are notified in insertion order when notify.
 * Returns how many rows it inserted.  With no BEFORE ROW INSERT trigger a
 * row is stored as given: the worker draws the ids from the table's own
 * sequence, as the column's default would, and only they come back; with
 * one, the rows come back whole and the payloads carry what was stored.
 */
static uint64
insert_rows(StoreBatch *b, const int *idx, int m, bool notify)
{
	Datum	   *cols[9];
	bool	   *nulls[9];
	Datum		args[9];
	static const Oid types[9] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, UUIDOID,
	JSONBOID, BOOLOID, INT8OID};
	bool		by_id;
	int			ncols;
	int			rc;

	by_id = OidIsValid(events_seq) && !events_before_row_triggers(plans_schema);
	if (m == 1 && by_id)
		return insert_one(b, idx[0], notify);
	ncols = by_id ? 9 : 8;
	for (int c = 0; c < ncols; c++)
	{
		cols[c] = palloc(sizeof(Datum) * m);
		nulls[c] = palloc0(sizeof(bool) * m);
	}
	for (int k = 0; k < m; k++)
	{
		FrameEvent *fe = &b->fes[idx[k]];

		cols[0][k] = TimestampTzGetDatum(row_received_at(b->frames[idx[k]]));
		cols[1][k] = CStringGetTextDatum(frame_source(b, idx[k]));
		cols[2][k] = CStringGetTextDatum(fe->event_type);
		cols[3][k] = fe->resource ? CStringGetTextDatum(fe->resource) : (Datum) 0;
		nulls[3][k] = fe->resource == NULL;
		cols[4][k] = UUIDPGetDatum(&fe->resource_id);
		nulls[4][k] = !fe->has_resource_id;
		cols[5][k] = UUIDPGetDatum(&fe->customer_id);
		nulls[5][k] = !fe->has_customer_id;
		cols[6][k] = JsonbPGetDatum(fe->data);
		cols[7][k] = BoolGetDatum(boundaries_near(time_from_unix_us(b->frames[idx[k]]->at_us),
												  dedupe_window_s()));
		if (by_id)
			cols[8][k] = Int64GetDatum(nextval_internal(events_seq, true));
	}
	for (int c = 0; c < ncols; c++)
		args[c] = array_of(cols[c], nulls[c], m, types[c]);

	rc = SPI_execute_plan(by_id ? batch_ids_plan : batch_plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "voipbin: inserting events failed: %s", SPI_result_code_string(rc));
	if (notify && by_id)
		notify_by_id(b, idx, m, cols[8]);
	else if (notify)
		notify_returned(b, idx, m);
	return SPI_processed;
}

/*
 * idx[0..m) in a subtransaction.  keep: released on success, the rows and
 * their NOTIFYs stay; otherwise it is a probe, rolled back whatever happens,
 * so that no probe's subtransaction outlives it: the 64-entry cache of
 * running subtransactions that every snapshot of the cluster reads never
 * overflows.  Returns NULL, or the error when it is an error of the data; an
 * error of the moment is raised again once the subtransaction is gone.
 */
static ErrorData *
try_rows(StoreBatch *b, const int *idx, int m, bool keep)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile err = NULL;
	volatile uint64 stored = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		stored = insert_rows(b, idx, m, keep);
		if (keep)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(b->cxt);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();

	if (err != NULL && store_error_kind(err->sqlerrcode) != STORE_ERROR_DATA)
		ReThrowError(err);
	if (err == NULL && keep)
	{
		b->stored += stored;
		b->duplicates += m - stored;
	}
	return err;
}

/* idx[0..m) failed with err: each half is tried, the failing ones split again. */
static void
split(StoreBatch *b, const int *idx, int m, ErrorData *err, bool keep)
{
	int			half = m / 2;

	if (m == 1)
	{
		mark_failed(b, idx[0], err);
		return;
	}
	for (int part = 0; part < 2; part++)
	{
		const int  *p = part == 0 ? idx : idx + half;
		int			pm = part == 0 ? half : m - half;
		ErrorData  *e;

		CHECK_FOR_INTERRUPTS();
		e = try_rows(b, p, pm, keep);
		if (e != NULL)
			split(b, p, pm, e, keep);
	}
}

/* The indexes of the frames not (yet) dead letters, in order. */
static int
live_frames(StoreBatch *b, int *idx)
{
	int			m = 0;

	for (int i = 0; i < b->n; i++)
		if (b->errors[i] == NULL)
			idx[m++] = i;
	return m;
}

/*
 * One bad frame among 2,000 costs about 2·log2(2000) = 22 probes and one
 * insert of the rest.  The probes' verdicts are trusted only if that last
 * insert succeeds: frames that fail only together (a trigger comparing
 * rows) are then found by bisecting again, keeping what succeeds.
 */
void
store_batch_resolve(StoreBatch *b, ErrorData *failure)
{
	int		   *idx = palloc(sizeof(int) * b->n);
	int			m = live_frames(b, idx);

	if (m == 0)
		return;
	if (failure == NULL && (failure = try_rows(b, idx, m, true)) == NULL)
		return;
	split(b, idx, m, failure, false);
	if ((m = live_frames(b, idx)) == 0)
		return;
	if ((failure = try_rows(b, idx, m, true)) != NULL)
		split(b, idx, m, failure, true);
}

/* The first attempt: the whole batch at top level, no subtransaction at all. */
static void
insert_plain(StoreBatch *b)
{
	int		   *idx = palloc(sizeof(int) * b->n);
	int			m = live_frames(b, idx);
	uint64		stored;

	if (m == 0)
		return;
	stored = insert_rows(b, idx, m, true);
	b->stored += stored;
	b->duplicates += m - stored;
}

/*
 * Frame i as a dead letter, saying what event it is (when it is one); a copy
 * of one still there is marked in b->copies instead, and counted as a
 * duplicate.
 */
static void
insert_dead_letter(StoreBatch *b, int i)
{
	const JournalRecord *ev = b->frames[i];
	const FrameEvent *fe = &b->fes[i];
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', 'n', 'n', 'n'};
	bytea	   *raw = palloc(VARHDRSZ + ev->len);
	pg_uuid_t  *hash = palloc(sizeof(pg_uuid_t));
	int			rc;

	SET_VARSIZE(raw, VARHDRSZ + ev->len);
	memcpy(VARDATA(raw), ev->data, ev->len);
	values[0] = TimestampTzGetDatum(time_from_unix_us(ev->at_us));
	values[1] = CStringGetTextDatum(frame_source(b, i));
	values[2] = PointerGetDatum(raw);
	values[3] = CStringGetTextDatum(b->errors[i]);
	if (fe->event_type != NULL && fe->data != NULL)
	{
		values[4] = CStringGetTextDatum(fe->event_type);
		nulls[4] = ' ';
		values[5] = UUIDPGetDatum(&fe->resource_id);
		nulls[5] = fe->has_resource_id ? ' ' : 'n';
		dedupe_data_hash(fe->data, hash);
		values[6] = UUIDPGetDatum(hash);
		nulls[6] = ' ';
	}
	rc = SPI_execute_plan(dead_letter_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "voipbin: inserting a dead letter failed: %s", SPI_result_code_string(rc));
	b->copies[i] = SPI_processed == 0;
	if (b->copies[i])
		b->dead_copies++;
}

static void
publish_counts(const StoreBatch *b)
{
	pg_atomic_fetch_add_u64(&voipbin_shared->events_stored, b->stored);
	pg_atomic_fetch_add_u64(&voipbin_shared->duplicates, b->duplicates + b->dead_copies);
	pg_atomic_fetch_add_u64(&voipbin_shared->dead_letters, b->dead - b->dead_copies);
}

/*
 * After the commit: each dead letter an insert's error made (a trigger's, a
 * handler's) is logged and shown, rate-limited (store_report.c); each event
 * stored ends what last_error said about its type.
 */
static void
report(const StoreBatch *b)
{
	for (int i = 0; i < b->n; i++)
	{
		const char *type = b->fes[i].event_type;

		if (b->errors[i] == NULL && type != NULL)
			store_report_stored(type);
		else if (b->errors[i] != NULL && b->codes[i] != 0 && !b->copies[i])
			store_report_dead_letter(type, b->errors[i], b->codes[i], b->contexts[i]);
	}
}

/* ---- the worker's side: one transaction per attempt, retries with backoff ---- */

typedef enum StoreStep
{
	STEP_PLAIN,					/* the whole batch in one statement */
	STEP_BISECT,				/* it failed for some frame's sake: find which */
	STEP_GIVE_UP				/* retried for store_retry_timeout: all dead letters */
} StoreStep;

/* The current run of errors of the moment, across batches; reset by a success. */
static struct
{
	TimestampTz failing_since;	/* 0: the last attempt succeeded */
	int			failures;		/* consecutive failed attempts */
	char		shown[VB_ERROR_LEN];	/* what we put into last_error */
	bool		exit_hook;
}			retry;

static void
show_retrying(const char *error)
{
	strlcpy(retry.shown, error, sizeof(retry.shown));
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->store_failing_since = retry.failing_since;
	strlcpy(voipbin_shared->last_error, retry.shown, VB_ERROR_LEN);
	SpinLockRelease(&voipbin_shared->mutex);
}

/* Ends the retrying state; last_error is cleared unless something else wrote it since. */
static void
show_stored(void)
{
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->store_failing_since = 0;
	if (retry.shown[0] && strcmp(voipbin_shared->last_error, retry.shown) == 0)
		voipbin_shared->last_error[0] = '\0';
	SpinLockRelease(&voipbin_shared->mutex);
	retry.shown[0] = '\0';
}

static void
retry_state_exit(int code, Datum arg)
{
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->store_failing_since = 0;
	SpinLockRelease(&voipbin_shared->mutex);
}

/* For the planted bug lose-batch-once: events of which the batch holds two copies. */
static int
planted_pairs(StoreBatch *b)
{
	int			pairs = 0;

	for (int i = 0; i < b->n; i++)
	{
		FrameEvent *x = &b->fes[i];

		if (b->errors[i] || !x->event_type || !x->has_resource_id || !x->data)
			continue;
		for (int j = i + 1; j < b->n; j++)
		{
			FrameEvent *y = &b->fes[j];

			if (!b->errors[j] && y->event_type && y->has_resource_id && y->data &&
				strcmp(x->event_type, y->event_type) == 0 &&
				memcmp(&x->resource_id, &y->resource_id, sizeof(pg_uuid_t)) == 0 &&
				compareJsonbContainers(&x->data->root, &y->data->root) == 0)
			{
				pairs++;
				break;
			}
		}
	}
	return pairs;
}

/*
 * One attempt in a transaction of its own, with the journal position: all of
 * it commits or none.  STORE_FAILED: *err is the error, in b->cxt.
 */
static StoreResult
attempt(StoreBatch *b, StoreStep step, ErrorData *failure, const char *journal_id, uint64 upto,
		ErrorData **err)
{
	volatile StoreResult result = STORE_DONE;

	b->stored = b->duplicates = b->dead_copies = 0;
	memset(b->copies, 0, sizeof(bool) * b->n);
	PG_TRY();
	{
		db_begin_work();
		if (!store_plans_ready() || (journal_id && position_ready() != POSITION_READY))
			result = STORE_NOT_READY;
		else
		{
			store_batch_classify(b);
			/*
			 * The planted bug VOIPBIN_FAULT=lose-batch-once (test/test_chaos.py):
			 * the first batch of a process holding both copies of two events
			 * (VoIPBIN sends each on two topics, back to back) is not inserted,
			 * yet its position is saved, so it is never replayed: lost events,
			 * not just lost copies, which a batch of any 3 frames need not be
			 * (a webhook's frame between two events' copies).  Off unless that
			 * variable is set.
			 */
			if (step == STEP_PLAIN && b->n >= 4 && voipbin_fault("lose-batch-once") &&
				planted_pairs(b) >= 2 && voipbin_fault_once("lose-batch-once"))
				;
			else if (step == STEP_PLAIN)
				insert_plain(b);
			else if (step == STEP_BISECT)
				store_batch_resolve(b, failure);
			else
				for (int i = 0; i < b->n; i++)
					if (b->errors[i] == NULL)
						mark_dead(b, i, failure->message);
			for (int i = 0; i < b->n; i++)
				if (b->errors[i] != NULL)
					insert_dead_letter(b, i);
			if (journal_id)
				position_save(journal_id, upto);
		}
		db_end_work();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(b->cxt);
		*err = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		result = STORE_FAILED;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(b->cxt);
	return result;
}

/*
 * An error of the moment: keep the batch and say when to try again, 100 ms
 * doubling to 10 s — unless its oldest frame has been retried for
 * voipbin.store_retry_timeout, when its frames become dead letters with the
 * last error.
 */
static StoreResult
retry_later(StoreBatch *b, ErrorData *err, const char *journal_id, uint64 upto,
			TimestampTz *retry_at)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz deadline;
	int			delay;
	char	   *msg;

	forget_plans();				/* the extension may have changed under us */
	if (!retry.exit_hook)
	{
		before_shmem_exit(retry_state_exit, (Datum) 0);
		retry.exit_hook = true;
	}
	if (retry.failing_since == 0)
		retry.failing_since = now;
	retry.failures++;
	deadline = store_retry_deadline(retry.failing_since, time_from_unix_us(b->frames[0]->at_us),
									voipbin_store_retry_timeout_ms);
	if (deadline != 0 && now >= deadline)
	{
		ErrorData  *again = NULL;
		StoreResult r;

		ereport(WARNING,
				(errmsg_plural("voipbin: %d frame becomes a dead letter: storing it failed for %d ms (voipbin.store_retry_timeout)",
							   "voipbin: %d frames become dead letters: storing them failed for %d ms (voipbin.store_retry_timeout)",
							   b->n,
							   b->n, voipbin_store_retry_timeout_ms),
				 errdetail("The last error was: %s (SQLSTATE %s)", err->message,
						   unpack_sql_state(err->sqlerrcode)),
				 errhint("Once the cause is fixed, voipbin_retry_dead_letters() stores them.")));
		r = attempt(b, STEP_GIVE_UP, err, journal_id, upto, &again);
		if (r != STORE_FAILED)
		{
			/* the next batch's own deadline counts from this run or its arrival */
			show_stored();
			if (r == STORE_DONE)
				voipbin_set_error(psprintf(b->n == 1 ?
										   "%d frame became a dead letter after storing it failed for %d ms: %s (SQLSTATE %s)" :
										   "%d frames became dead letters after storing them failed for %d ms: %s (SQLSTATE %s)",
										   b->n, voipbin_store_retry_timeout_ms, err->message,
										   unpack_sql_state(err->sqlerrcode)));
			return r;
		}
		err = again;
	}
	delay = store_retry_delay_ms(retry.failures);
	*retry_at = TimestampTzPlusMilliseconds(now, delay);
	if (deadline != 0 && deadline > now)
		*retry_at = Min(*retry_at, deadline);
	msg = psprintf(b->n == 1 ? "could not store %d frame, retrying in %.1f s: %s (SQLSTATE %s)" :
				   "could not store %d frames, retrying in %.1f s: %s (SQLSTATE %s)",
				   b->n, (*retry_at - now) / 1000000.0, err->message,
				   unpack_sql_state(err->sqlerrcode));
	ereport(WARNING, (errmsg("voipbin: %s", msg)));
	show_retrying(msg);
	return STORE_FAILED;
}

/*
 * Stores n frames.  STORE_DONE: every frame is now an event, a counted
 * duplicate or a dead letter.  STORE_NOT_READY: the extension is not
 * installed.  STORE_FAILED: an error of the moment (logged, shown in
 * voipbin_status()); the caller keeps the frames and calls again at *retry_at.
 */
StoreResult
store_frames(JournalRecord **frames, int n, const char *journal_id, uint64 upto,
			 TimestampTz *retry_at)
{
	MemoryContext cxt = CurrentMemoryContext;
	/* the classified frames outlive each attempt's transaction, not the call */
	MemoryContext mine = AllocSetContextCreate(cxt, "voipbin batch", ALLOCSET_DEFAULT_SIZES);
	StoreBatch	b;
	ErrorData  *err = NULL;
	StoreResult result;

	MemoryContextSwitchTo(mine);
	store_batch_init(&b, frames, n);
	result = attempt(&b, STEP_PLAIN, NULL, journal_id, upto, &err);
	if (result == STORE_FAILED && store_error_kind(err->sqlerrcode) == STORE_ERROR_DATA)
	{
		ErrorData  *failure = err;

		result = attempt(&b, STEP_BISECT, failure, journal_id, upto, &err);
	}
	if (result == STORE_FAILED)
		result = retry_later(&b, err, journal_id, upto, retry_at);
	else
	{
		if (retry.failing_since != 0 && result == STORE_DONE)
			ereport(LOG,
					(errmsg_plural("voipbin: storing works again after %d failed attempt",
								   "voipbin: storing works again after %d failed attempts",
								   retry.failures,
								   retry.failures)));
		retry.failing_since = 0;
		retry.failures = 0;
		if (retry.shown[0])
			show_stored();
	}
	if (result == STORE_DONE)
	{
		publish_counts(&b);
		report(&b);
	}
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(mine);
	return result;
}
