/*
 * repair_walk.c — the requests of a gap repair, and what their answers become.
 *
 * docs/voipbin.md, "The REST reads gap repair uses": GET /calls from the head until past the outage's start
 * (REPAIR_MARGIN_S before it); GET /calls/{id} for each call not settled
 * before the outage ("When a call is settled") and not seen in the walk, 409 being a deleted
 * call and 404 a gone one; for each call that changed, its transcribes,
 * their transcripts (one request each: the endpoint ignores its page token,
 * so following it would loop), its recordings and its timeline.  Every
 * object read goes into the journal as if the WebSocket had carried it,
 * source 'rest', when a subscribed topic would have carried it.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "repair/repair_walk.h"
#include "base/time.h"
#include "ingest/frame.h"
#include "net/journal/journal.h"
#include "repair/repair_http.h"
#include "base/backoff.h"
#include "repair/repair_job.h"

typedef enum ReqKind
{
	RQ_LIST,
	RQ_CALL,
	RQ_TRANSCRIBES,
	RQ_TRANSCRIPTS,
	RQ_RECORDING,
	RQ_TIMELINE
} ReqKind;

typedef struct ReqTag
{
	ReqKind		kind;
	char		id[40];
	char	   *path;			/* to ask it again */
	int			tries;			/* answers of the moment so far (no answer, 429, 5xx) */
	TimestampTz due;			/* while waiting to be asked again */
} ReqTag;

/*
 * A read VoIPBIN could not answer just now (no answer, its limiter, a 5xx)
 * is asked again, 1 s, 2 s, 4 s, 8 s later, before the attempt fails: a
 * read is safe to repeat, and an attempt that failed starts its walk again
 * from the first page, which under a REST API failing now and then may
 * never end.
 */
#define REQUEST_TRIES		5
#define REQUEST_RETRY_MS	1000
#define REQUEST_RETRY_MAX_MS 8000

/* ---- pure helpers ---- */

static int64
days_from_civil(int y, int m, int d)
{
	/* H. Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date */
	int64		era;
	int			yoe,
				doy,
				doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (int) (y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/*
 * A VoIPBIN time ("2026-08-22T10:15:02.1Z", "2026-08-22T10:15:02.123456Z",
 * or the older "2022-04-11 06:10:58.431000", UTC) as µs since the Unix
 * epoch; false when it is none (or the 9999 "unset" sentinel).
 */
static bool
parse_time(const char *s, int len, int64 *us)
{
	int			f[6];
	int			widths[6] = {4, 2, 2, 2, 2, 2};
	const char	seps[6] = {'-', '-', 'T', ':', ':', 0};
	int			p = 0;
	int64		frac = 0;
	int			digits = 0;

	for (int i = 0; i < 6; i++)
	{
		f[i] = 0;
		for (int k = 0; k < widths[i]; k++, p++)
		{
			if (p >= len || s[p] < '0' || s[p] > '9')
				return false;
			f[i] = f[i] * 10 + (s[p] - '0');
		}
		if (seps[i])
		{
			if (p >= len || !(s[p] == seps[i] || (seps[i] == 'T' && (s[p] == ' ' || s[p] == 't'))))
				return false;
			p++;
		}
	}
	if (p < len && s[p] == '.')
		for (p++; p < len && s[p] >= '0' && s[p] <= '9'; p++)
			if (digits < 6)
			{
				frac = frac * 10 + (s[p] - '0');
				digits++;
			}
	while (digits++ < 6)
		frac *= 10;
	if (f[0] >= 9999 || f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31)
		return false;
	*us = ((days_from_civil(f[0], f[1], f[2]) * 24 + f[3]) * 60 + f[4]) * 60 * INT64CONST(1000000) +
		(int64) f[5] * 1000000 + frac;
	return true;
}

/* Appends s percent-encoded (RFC 3986 unreserved characters kept). */
static void
append_encoded(StringInfo buf, const char *s)
{
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == '~')
			appendStringInfoChar(buf, c);
		else
			appendStringInfo(buf, "%%%02X", c);
	}
}

static bool
is_uuid_text(const char *s, int len)
{
	if (len != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		char		c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return false;
		}
		else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

/* ---- JSON answers (main thread, PostgreSQL's own jsonb) ---- */

static bool
get_key(JsonbContainer *obj, const char *key, JsonbValue *v)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), v) != NULL;
}

/* The string value of key, NUL-terminated, or NULL. */
static char *
get_string(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!get_key(obj, key, &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static bool
get_time(JsonbContainer *obj, const char *key, int64 *us)
{
	JsonbValue	v;

	return get_key(obj, key, &v) && v.type == jbvString &&
		parse_time(v.val.string.val, v.val.string.len, us);
}

/* When the object last changed, as VoIPBIN says: tm_update, else tm_create. */
static bool
changed_at(JsonbContainer *obj, int64 *us)
{
	return get_time(obj, "tm_update", us) || get_time(obj, "tm_create", us);
}

/* A body as jsonb, or NULL when it is not JSON (checked before jsonb_in raises). */
static Jsonb *
parse_body(const RhResult *r)
{
	char	   *s;
	JsonLexContext *lex;

	if (r->body == NULL || !pg_verify_mbstr(PG_UTF8, r->body, (int) r->len, true))
		return NULL;
	s = pg_any_to_server(r->body, (int) r->len, PG_UTF8);
	lex = vb_json_lexer(s, strlen(s), GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
}

/* The object of a JsonbValue (jbvBinary holding an object), or NULL. */
static JsonbContainer *
as_object(const JsonbValue *v)
{
	if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		return v->val.binary.data;
	return NULL;
}

/* ---- into the journal ---- */

/*
 * Whether the live stream would have carried this event: some subscribed
 * topic is a prefix of a topic VoIPBIN publishes it under (docs/voipbin.md, "Topics and how they match":
 * <scope>:<id>:<resource>:<id> and <scope>:<id>:<resource>:<event_type>:<id>,
 * for the customer and for the owning agent).
 */
static bool
covered(const FrameEvent *fe, JsonbContainer *obj)
{
	char	   *rid;
	char	   *cust;
	char	   *owner;
	char	   *published[4];
	int			n = 0;
	ListCell   *lc;

	if (fe->resource == NULL || !fe->has_resource_id || !fe->has_customer_id)
		return false;
	rid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&fe->resource_id)));
	cust = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&fe->customer_id)));
	published[n++] = psprintf("customer_id:%s:%s:%s", cust, fe->resource, rid);
	published[n++] = psprintf("customer_id:%s:%s:%s:%s", cust, fe->resource, fe->event_type, rid);
	owner = get_string(obj, "owner_id");
	if (owner && is_uuid_text(owner, strlen(owner)) && strcmp(owner, NIL_UUID) != 0)
	{
		published[n++] = psprintf("agent_id:%s:%s:%s", owner, fe->resource, rid);
		published[n++] = psprintf("agent_id:%s:%s:%s:%s", owner, fe->resource, fe->event_type, rid);
	}
	foreach(lc, repair_job.topics)
	{
		const char *t = lfirst(lc);

		for (int i = 0; i < n; i++)
			if (strncmp(published[i], t, strlen(t)) == 0)
				return true;
	}
	return false;
}

/*
 * One object, as the WebSocket would have carried it: the bare resource
 * (whose type is then inferred exactly as for a live frame, so the dedupe
 * sees the same event), or {"type","data"} when the type is known.
 */
static void
submit(JsonbContainer *obj, const char *event_type)
{
	StringInfoData buf;
	char	   *utf8;
	size_t		len;

	initStringInfo(&buf);
	if (event_type)
	{
		appendStringInfoString(&buf, "{\"type\":");
		escape_json(&buf, event_type);
		appendStringInfoString(&buf, ",\"data\":");
	}
	(void) JsonbToCString(&buf, obj, -1);
	if (event_type)
		appendStringInfoChar(&buf, '}');
	{
		FrameEvent	fe;

		frame_classify(buf.data, buf.len, false, &fe);
		if (!covered(&fe, obj))
			return;				/* not subscribed: it would not have come live either */
	}
	utf8 = pg_server_to_any(buf.data, buf.len, PG_UTF8);
	len = strlen(utf8);
	{
		uint64		pos = journal_submit(JOURNAL_SRC_REST, 0, time_unix_us(GetCurrentTimestamp()),
										 utf8, len, len);

		if (pos == 0)
			repair_job.lost++;
		repair_job.last_pos = Max(repair_job.last_pos, pos);
	}
}

/* ---- the requests ---- */

static void
ask(ReqKind kind, const char *id, const char *fmt,...) pg_attribute_printf(3, 4);

static void
ask(ReqKind kind, const char *id, const char *fmt,...)
{
	MemoryContext old = MemoryContextSwitchTo(attempt_cxt);
	ReqTag	   *tag = palloc0(sizeof(ReqTag));
	StringInfoData path;
	va_list		ap;

	tag->kind = kind;
	if (id)
		strlcpy(tag->id, id, sizeof(tag->id));
	initStringInfo(&path);
	for (;;)
	{
		int			needed;

		va_start(ap, fmt);
		needed = appendStringInfoVA(&path, fmt, ap);
		va_end(ap);
		if (needed == 0)
			break;
		enlargeStringInfo(&path, needed);
	}
	tag->path = path.data;
	rh_submit(tag->path, tag);
	MemoryContextSwitchTo(old);
}

/* Whether tag waits to be asked again (then it is kept, in the attempt's context). */
static bool
ask_again_later(ReqTag *tag, const RhResult *r)
{
	long		ms;
	MemoryContext old;

	if (++tag->tries >= REQUEST_TRIES)
		return false;
	ms = (long) backoff_delay_ms(REQUEST_RETRY_MS, REQUEST_RETRY_MAX_MS, tag->tries, 0);
	if (r->has_retry_after && r->retry_after_s * 1000 > ms)
		ms = Min(r->retry_after_s * 1000, REQUEST_RETRY_MAX_MS);
	tag->due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	old = MemoryContextSwitchTo(attempt_cxt);
	repair_job.again = lappend(repair_job.again, tag);
	MemoryContextSwitchTo(old);
	return true;
}

long
repair_walk_ask_again(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = DT_NOEND;
	List	   *waiting = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(attempt_cxt);

	foreach(lc, repair_job.again)
	{
		ReqTag	   *tag = lfirst(lc);

		if (tag->due <= now)
			rh_submit(tag->path, tag);
		else
		{
			waiting = lappend(waiting, tag);
			next = Min(next, tag->due);
		}
	}
	list_free(repair_job.again);
	repair_job.again = waiting;
	MemoryContextSwitchTo(old);
	return next == DT_NOEND ? -1 : TimestampDifferenceMilliseconds(now, next) + 1;
}

static bool
in_list(List *ids, const char *id)
{
	ListCell   *lc;

	foreach(lc, ids)
		if (strcmp((char *) lfirst(lc), id) == 0)
			return true;
	return false;
}

static void
remember(List **ids, const char *id)
{
	MemoryContext old = MemoryContextSwitchTo(attempt_cxt);

	*ids = lappend(*ids, pstrdup(id));
	MemoryContextSwitchTo(old);
}

/* A call that changed: what hangs off it may have changed too (docs/voipbin.md, "When a call is settled"). */
static void
call_changed(JsonbContainer *call, const char *id)
{
	JsonbValue	v;

	if (in_list(repair_job.changed, id))
		return;
	remember(&repair_job.changed, id);
	ask(RQ_TRANSCRIBES, id, "/transcribes?reference_type=call&reference_id=%s", id);
	if (get_key(call, "recording_ids", &v) && v.type == jbvBinary &&
		JsonContainerIsArray(v.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
		JsonbValue	e;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
			if (tok == WJB_ELEM && e.type == jbvString &&
				is_uuid_text(e.val.string.val, e.val.string.len) &&
				strncmp(e.val.string.val, NIL_UUID, 36) != 0)
			{
				char	   *rid = pnstrdup(e.val.string.val, 36);

				ask(RQ_RECORDING, rid, "/recordings/%s", rid);
			}
	}
	ask(RQ_TIMELINE, id, "/timelines/calls/%s/events?page_size=1000", id);
}

static const char *
what_of(const ReqTag *tag)
{
	switch (tag->kind)
	{
		case RQ_LIST:
			return "GET /calls";
		case RQ_CALL:
			return "GET /calls/{id}";
		case RQ_TRANSCRIBES:
			return "GET /transcribes";
		case RQ_TRANSCRIPTS:
			return "GET /transcripts";
		case RQ_RECORDING:
			return "GET /recordings/{id}";
		case RQ_TIMELINE:
			return "GET /timelines/calls/{id}/events";
	}
	return "GET";
}

/* The items of a list answer ({"result": [...]}), as an array container, or NULL. */
static JsonbContainer *
result_array(Jsonb *j)
{
	JsonbValue	v;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j) || !get_key(&j->root, "result", &v) ||
		v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
		return NULL;
	return v.val.binary.data;
}

static void
list_walk_done(void)
{
	ListCell   *lc;

	repair_job.list_done = true;
	foreach(lc, repair_job.open_calls)
	{
		char	   *id = lfirst(lc);

		if (!in_list(repair_job.walked, id))
			ask(RQ_CALL, id, "/calls/%s", id);
	}
}

static void
on_list(Jsonb *j)
{
	JsonbContainer *items = result_array(j);
	int64		since_us = time_unix_us(repair_job.since);
	int64		last_create = PG_INT64_MAX;
	int			n = 0;
	char	   *token;

	if (items == NULL)
	{
		repair_set_fatal("GET /calls answered something that is no list");
		return;
	}
	repair_job.pages++;
	{
		JsonbIterator *it = JsonbIteratorInit(items);
		JsonbValue	e;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			JsonbContainer *call;
			char	   *id;
			int64		at;

			if (tok != WJB_ELEM || (call = as_object(&e)) == NULL)
				continue;
			n++;
			if (!get_time(call, "tm_create", &last_create))
				last_create = PG_INT64_MAX;
			id = get_string(call, "id");
			if (id == NULL || !is_uuid_text(id, strlen(id)))
				continue;
			remember(&repair_job.walked, id);
			/* only what changed since the outage began: the rest is known, or old */
			if (changed_at(call, &at) && at >= since_us)
			{
				submit(call, NULL);
				call_changed(call, id);
			}
		}
	}
	/* an empty page ends the list; so does a page reaching back past the outage */
	token = get_string(&j->root, "next_page_token");
	if (n == 0 || last_create < since_us || token == NULL || token[0] == '\0')
	{
		list_walk_done();
		return;
	}
	if (repair_job.pages >= REPAIR_MAX_PAGES)
	{
		repair_note("the walk of GET /calls stopped after %d pages, before the outage's start", repair_job.pages);
		list_walk_done();
		return;
	}
	{
		StringInfoData path;

		initStringInfo(&path);
		append_encoded(&path, token);
		ask(RQ_LIST, NULL, "/calls?page_size=100&page_token=%s", path.data);
	}
}

static void
on_call(const ReqTag *tag, Jsonb *j)
{
	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
	{
		repair_set_fatal("GET /calls/{id} answered something that is no object");
		return;
	}
	submit(&j->root, NULL);
	call_changed(&j->root, tag->id);
}

static void
on_transcribes(Jsonb *j)
{
	JsonbContainer *items = result_array(j);
	int64		since_us = time_unix_us(repair_job.since);
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;

	if (items == NULL)
	{
		repair_set_fatal("GET /transcribes answered something that is no list");
		return;
	}
	it = JsonbIteratorInit(items);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
	{
		JsonbContainer *t;
		char	   *id;
		char	   *status;
		int64		at;

		if (tok != WJB_ELEM || (t = as_object(&e)) == NULL)
			continue;
		id = get_string(t, "id");
		if (id == NULL || !is_uuid_text(id, strlen(id)))
			continue;
		submit(t, NULL);
		status = get_string(t, "status");
		/* lines may follow "done" (docs/voipbin.md, "When a call is settled"): read them when it changed lately */
		if ((changed_at(t, &at) && at >= since_us) || status == NULL || strcmp(status, "done") != 0)
			ask(RQ_TRANSCRIPTS, id, "/transcripts?transcribe_id=%s", id);
	}
	/* its next_page_token is not followed: a call has far fewer than 100 */
}

static void
on_items(Jsonb *j, const char *what)
{
	JsonbContainer *items = result_array(j);
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;

	if (items == NULL)
	{
		repair_set_fatal(psprintf("%s answered something that is no list", what));
		return;
	}
	it = JsonbIteratorInit(items);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
	{
		JsonbContainer *o;

		if (tok == WJB_ELEM && (o = as_object(&e)) != NULL)
			submit(o, NULL);
	}
	/* GET /transcripts: the newest 100, and its token brings the same page back */
}

static void
on_timeline(Jsonb *j)
{
	JsonbContainer *items = result_array(j);
	int64		since_us = time_unix_us(repair_job.since);
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;

	if (items == NULL)
		return;					/* optional: the states themselves are in */
	it = JsonbIteratorInit(items);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
	{
		JsonbContainer *entry;
		JsonbValue	d;
		JsonbContainer *data;
		char	   *type;
		int64		at;

		if (tok != WJB_ELEM || (entry = as_object(&e)) == NULL)
			continue;
		type = get_string(entry, "event_type");
		if (type == NULL || !get_key(entry, "data", &d) || (data = as_object(&d)) == NULL)
			continue;
		/* newest first: what precedes the outage is known already */
		if (get_time(entry, "timestamp", &at) && at < since_us)
			break;
		submit(data, type);
	}
}

/* One answer.  Errors of the moment make the attempt fail; 404/409/403 do not. */
void
repair_walk_answer(RhResult *r)
{
	ReqTag	   *tag = (ReqTag *) r->tag;
	Jsonb	   *j = NULL;

	if ((r->status == 0 || r->status == 429 || r->status >= 500) && ask_again_later(tag, r))
		return;
	if (r->status == 0)
	{
		repair_set_fatal(psprintf("no answer from VoIPBIN for %s: %s", what_of(tag), r->error));
		return;
	}
	if (r->status == 401)
	{
		repair_set_fatal("VoIPBIN refused the credential (HTTP 401)");
		return;
	}
	if (r->status == 429)
	{
		repair_set_fatal(psprintf("VoIPBIN's rate limit kept refusing %s (HTTP 429)", what_of(tag)));
		return;
	}
	if (r->status >= 500)
	{
		repair_set_fatal(psprintf("VoIPBIN failed on %s (HTTP %ld)", what_of(tag), r->status));
		return;
	}
	if (r->status == 409 || r->status == 404 || r->status == 403)
	{
		if (tag->kind == RQ_CALL && r->status == 409)
			repair_job.deleted++;		/* deleted: VoIPBIN keeps nothing of it to read */
		else if (tag->kind == RQ_CALL && r->status == 404)
			repair_job.gone++;
		else if (r->status == 403 && tag->kind != RQ_TIMELINE)
			repair_job.denied++;
		else if (tag->kind == RQ_RECORDING)
			repair_job.gone++;
		return;
	}
	if (r->status < 200 || r->status > 299)
	{
		repair_note("%s answered HTTP %ld", what_of(tag), r->status);
		return;
	}
	j = parse_body(r);
	if (j == NULL && tag->kind != RQ_TIMELINE)
	{
		repair_set_fatal(psprintf("%s answered something that is not JSON", what_of(tag)));
		return;
	}
	switch (tag->kind)
	{
		case RQ_LIST:
			on_list(j);
			break;
		case RQ_CALL:
			on_call(tag, j);
			break;
		case RQ_TRANSCRIBES:
			on_transcribes(j);
			break;
		case RQ_TRANSCRIPTS:
			on_items(j, "GET /transcripts");
			break;
		case RQ_RECORDING:
			if (j && JB_ROOT_IS_OBJECT(j))
				submit(&j->root, NULL);
			break;
		case RQ_TIMELINE:
			if (j)
				on_timeline(j);
			break;
	}
}

/* ---- what the job needs to begin ---- */

/* The last query's first column, its non-null values copied into the attempt's context. */
static List *
result_strings(void)
{
	List	   *out = NIL;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (v)
		{
			MemoryContext old = MemoryContextSwitchTo(attempt_cxt);

			out = lappend(out, pstrdup(v));
			MemoryContextSwitchTo(old);
		}
	}
	return out;
}

/*
 * Calls this database knows but that were not settled when the outage
 * began (docs/voipbin.md, "When a call is settled": hangup, every recording ended, every transcribe done), among
 * those heard of lately; deleted ones are settled.
 */
static List *
load_open_calls(const char *schema)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(repair_job.since)};
	char	   *sql = psprintf(
							   "WITH recent AS ("
							   " SELECT DISTINCT ON (e.resource_id) e.resource_id AS call_id, e.data"
							   " FROM %1$s.voipbin_events e"
							   " WHERE e.resource = 'call' AND e.resource_id IS NOT NULL"
							   "   AND e.received_at >= $1 - interval '" REPAIR_OPEN_HORIZON "'"
							   " ORDER BY e.resource_id,"
							   "   coalesce(%1$s.voipbin_timestamp(e.data->>'tm_update'),"
							   "            %1$s.voipbin_timestamp(e.data->>'tm_create')) DESC NULLS LAST,"
							   "   array_position(ARRAY['dialing', 'ringing', 'progressing', 'canceling',"
							   "                        'terminating', 'hangup'], e.data->>'status') DESC NULLS LAST,"
							   "   e.id DESC),"
							   " open_transcribes AS ("
							   " SELECT t.data->>'reference_id' AS call_id"
							   " FROM %1$s.voipbin_events t"
							   " WHERE t.resource = 'transcribe' AND t.data->>'reference_type' = 'call'"
							   "   AND t.received_at >= $1 - interval '" REPAIR_OPEN_HORIZON "'"
							   " GROUP BY t.resource_id, t.data->>'reference_id'"
							   " HAVING NOT bool_or(t.data->>'status' = 'done')),"
							   " ended_recordings AS ("
							   " SELECT r.resource_id::text AS id FROM %1$s.voipbin_events r"
							   " WHERE r.resource = 'recording' AND r.data->>'status' = 'ended'"
							   "   AND r.received_at >= $1 - interval '" REPAIR_OPEN_HORIZON "')"
							   " SELECT c.call_id::text FROM recent c"
							   " WHERE %1$s.voipbin_timestamp(c.data->>'tm_delete') IS NULL"
							   "   AND (c.data->>'status' IS DISTINCT FROM 'hangup'"
							   "    OR c.call_id::text IN (SELECT call_id FROM open_transcribes)"
							   "    OR EXISTS (SELECT FROM jsonb_array_elements_text("
							   "         CASE WHEN jsonb_typeof(c.data->'recording_ids') = 'array'"
							   "              THEN c.data->'recording_ids' ELSE '[]' END) x(id)"
							   "         WHERE x.id <> '" NIL_UUID "'"
							   "           AND x.id NOT IN (SELECT id FROM ended_recordings)))"
							   " LIMIT %2$d", schema, REPAIR_MAX_OPEN);

	if (SPI_execute_with_args(sql, 1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "voipbin: reading the calls not settled failed");
	return result_strings();
}

/* The topics the live connection carries (pending ones included: they are sent). */
static List *
load_topics(const char *schema)
{
	if (SPI_execute(psprintf("SELECT topic FROM %s.voipbin_subscriptions WHERE status <> 'rejected'",
							 schema), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "voipbin: reading voipbin_subscriptions failed");
	return result_strings();
}

void
repair_walk_load(const char *schema)
{
	repair_job.open_calls = load_open_calls(schema);
	repair_job.topics = load_topics(schema);
}

void
repair_walk_begin(void)
{
	ask(RQ_LIST, NULL, "/calls?page_size=100");
}
