/*
 * frame.c — one WebSocket frame becomes one event, or an error saying why not.
 *
 * VoIPBIN has sent three shapes over time: {"type","data"} (webhook shape),
 * {"event_type","data",…} (public quick-starts), and today the bare resource
 * object with no type at all, whose event type is inferred from its keys.
 * frame_classify() is pure: bytes in, event out; it raises an ERROR for a
 * frame that is no event, and the caller turns that into a dead letter.
 */
#include "voipbin.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "ingest/frame.h"
#include "ingest/frame_json.h"

/* Keys that identify a resource kind, most specific first (docs/voipbin.md, "Event kinds and their keys"). */
typedef struct KindRule
{
	const char *kind;
	const char *keys[4];
} KindRule;

static const KindRule kind_rules[] = {
	{"transcribe_speech", {"streaming_id", "transcribe_id"}},
	{"transcribe", {"reference_type", "language", "provider"}},
	{"recording", {"format", "reference_type"}},
	{"groupcall", {"ring_method", "answer_method", "call_ids"}},
	{"queuecall", {"queue_id", "reference_id"}},
	{"call", {"source", "destination", "status"}},
	{"aimessage", {"aicall_id", "role", "content"}},
	{"aicall", {"ai_id", "reference_type", "status"}},
	{"activeflow", {"flow_id", "current_action"}},
	{"conference", {"conferencecall_ids"}},
	{"agent", {"username", "permission"}},
	{"number", {"number", "call_flow_id"}},
	{"message", {"targets", "source"}},
};

/* Status values that name their own event (kind_status → event type). */
typedef struct StatusRule
{
	const char *kind;
	const char *status;
	const char *event_type;
} StatusRule;

static const StatusRule status_rules[] = {
	{"call", "dialing", "call_dialing"},
	{"call", "ringing", "call_ringing"},
	{"call", "progressing", "call_progressing"},
	{"call", "terminating", "call_terminating"},
	{"call", "canceling", "call_canceling"},
	{"call", "hangup", "call_hangup"},
	{"recording", "recording", "recording_started"},
	{"recording", "ended", "recording_finished"},
	{"transcribe", "progressing", "transcribe_progressing"},
	{"transcribe", "done", "transcribe_done"},
	{"queuecall", "waiting", "queuecall_waiting"},
	{"queuecall", "connecting", "queuecall_connecting"},
	{"queuecall", "service", "queuecall_serviced"},
	{"queuecall", "done", "queuecall_done"},
	{"queuecall", "abandoned", "queuecall_abandoned"},
	{"groupcall", "progressing", "groupcall_progressing"},
	{"groupcall", "hangup", "groupcall_hangup"},
	{"aicall", "initializing", "aicall_status_initializing"},
	{"aicall", "progressing", "aicall_status_progressing"},
	{"aicall", "pausing", "aicall_status_pausing"},
	{"aicall", "resuming", "aicall_status_resuming"},
	{"aicall", "terminating", "aicall_status_terminating"},
	{"aicall", "terminated", "aicall_status_terminated"},
};

static bool
get_key(JsonbContainer *obj, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), out) != NULL;
}

static bool
has_key(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	return get_key(obj, key, &v);
}

/* The key's string value (not NUL-terminated), or NULL. */
static const char *
get_string(JsonbContainer *obj, const char *key, int *len)
{
	JsonbValue	v;

	if (!get_key(obj, key, &v) || v.type != jbvString)
		return NULL;
	*len = v.val.string.len;
	return v.val.string.val;
}

/* Unset per VoIPBIN: absent, null, empty, Go's zero time or the 9999 sentinel. */
static bool
timestamp_is_set(JsonbContainer *obj, const char *key)
{
	int			len;
	const char *s = get_string(obj, key, &len);

	if (s == NULL || len == 0)
		return false;
	if (len >= 10 && (memcmp(s, "9999-01-01", 10) == 0 || memcmp(s, "0001-01-01", 10) == 0))
		return false;
	return true;
}

/* A canonical UUID string that is not the nil UUID. */
static bool
uuid_from_json(JsonbContainer *obj, const char *key, pg_uuid_t *out)
{
	int			len;
	const char *s = get_string(obj, key, &len);
	int			nibbles = 0;
	bool		nonzero = false;

	if (s == NULL || len != 36)
		return false;
	for (int i = 0; i < len; i++)
	{
		char		c = s[i];
		int			v;

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return false;
			continue;
		}
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return false;
		if (v)
			nonzero = true;
		if (nibbles % 2 == 0)
			out->data[nibbles / 2] = (unsigned char) (v << 4);
		else
			out->data[nibbles / 2] |= (unsigned char) v;
		nibbles++;
	}
	return nonzero;
}

static const char *
kind_of(JsonbContainer *obj)
{
	for (size_t i = 0; i < lengthof(kind_rules); i++)
	{
		bool		all = true;

		for (int k = 0; k < 4 && kind_rules[i].keys[k]; k++)
			if (!has_key(obj, kind_rules[i].keys[k]))
			{
				all = false;
				break;
			}
		if (all)
			return kind_rules[i].kind;
	}
	return NULL;
}

/*
 * The event type of a bare resource object, by the rules of docs/events.md, "Frames and event types", in order;
 * "unknown" when nothing applies.
 */
static const char *
frame_infer_type(JsonbContainer *obj)
{
	const char *kind;
	int			len;
	const char *status;
	const char *update;
	const char *create;
	int			update_len,
				create_len;

	if (has_key(obj, "transcribe_id") && has_key(obj, "message") && has_key(obj, "tm_transcript"))
		return "transcript_created";

	kind = kind_of(obj);
	if (kind == NULL)
		return "unknown";

	/* speech events carry no status: only the interim one has text */
	if (strcmp(kind, "transcribe_speech") == 0)
		return has_key(obj, "message") ? "transcribe_speech_interim" : "unknown";

	if (timestamp_is_set(obj, "tm_delete"))
		return psprintf("%s_deleted", kind);

	update = timestamp_is_set(obj, "tm_update") ? get_string(obj, "tm_update", &update_len) : NULL;
	create = get_string(obj, "tm_create", &create_len);
	if (update == NULL ||
		(create && update_len == create_len && memcmp(update, create, update_len) == 0))
		return psprintf("%s_created", kind);

	status = get_string(obj, "status", &len);
	if (status)
		for (size_t i = 0; i < lengthof(status_rules); i++)
			if (strcmp(status_rules[i].kind, kind) == 0 &&
				(int) strlen(status_rules[i].status) == len &&
				memcmp(status_rules[i].status, status, len) == 0)
				return status_rules[i].event_type;

	return psprintf("%s_updated", kind);
}

/*
 * Every event type frame_infer_type() can give a bare object (palloc'd
 * strings): each kind's created, updated and deleted, the types of the status
 * rules, and the few special ones.  The vocabulary of voipbin_on() (sql/vocabulary.c)
 * takes them in, so that a handler for a type the classifier stores is no typo.
 */
List *
frame_inferred_types(void)
{
	List	   *out = list_make3(pstrdup("transcript_created"),
								 pstrdup("transcribe_speech_interim"),
								 pstrdup("unknown"));

	for (size_t i = 0; i < lengthof(kind_rules); i++)
	{
		const char *kind = kind_rules[i].kind;

		if (strcmp(kind, "transcribe_speech") == 0)
			continue;			/* only its interim event is inferred */
		out = lappend(out, psprintf("%s_created", kind));
		out = lappend(out, psprintf("%s_updated", kind));
		out = lappend(out, psprintf("%s_deleted", kind));
	}
	for (size_t i = 0; i < lengthof(status_rules); i++)
		out = lappend(out, pstrdup(status_rules[i].event_type));
	return out;
}

/* VoIPBIN names topics (and so resources) by the event type's first word. */
static char *
resource_of(const char *event_type)
{
	const char *us;

	if (strcmp(event_type, "unknown") == 0 || event_type[0] == '\0')
		return NULL;
	us = strchr(event_type, '_');
	return us ? pnstrdup(event_type, us - event_type) : pstrdup(event_type);
}

/* The value of key when it is a JSON object, as a Jsonb of its own. */
static Jsonb *
object_value(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!get_key(obj, key, &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return JsonbValueToJsonb(&v);
}

/* frame_classify() in the scratch context below. */
static void
classify_in_scratch(const char *bytes, size_t len, bool binary, FrameEvent *out)
{
	char	   *text;
	Jsonb	   *root;
	JsonbContainer *rc;
	Jsonb	   *data = NULL;
	const char *event_type = NULL;
	int			type_len = 0;
	int			data_off,
				data_len;

	memset(out, 0, sizeof(*out));
	if (binary)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg(FRAME_BINARY_ERROR)));
	if (memchr(bytes, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("frame contains a NUL byte")));
	if (!pg_verify_mbstr(PG_UTF8, bytes, (int) len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("frame is not valid UTF-8")));

	/* the bytes are UTF-8; the database may not be (then text is a converted copy) */
	text = pg_any_to_server(bytes, (int) len, PG_UTF8);
	if (text != bytes)
		len = strlen(text);
	root = frame_json_parse(text, (int) len, &data_off, &data_len);
	rc = &root->root;
	if (!JB_ROOT_IS_OBJECT(root) || JB_ROOT_IS_SCALAR(root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("frame is JSON but not an object")));

	if (JsonContainerSize(rc) == 2 &&
		(event_type = get_string(rc, "type", &type_len)) != NULL &&
		(data = object_value(rc, "data")) != NULL)
		;						/* webhook shape */
	else if ((event_type = get_string(rc, "event_type", &type_len)) != NULL &&
			 (data = object_value(rc, "data")) != NULL)
		;						/* quick-start shape */
	else
	{
		event_type = NULL;
		data = root;
		out->bare = true;
	}

	/* the payload's JSON text: the whole frame, or the "data" member's bytes */
	out->data_text = out->bare ? text : text + data_off;
	out->data_text_len = out->bare ? (int) len : data_len;

	if (event_type && type_len > 0)
		out->event_type = pnstrdup(event_type, type_len);
	else
		out->event_type = pstrdup(frame_infer_type(&data->root));
	out->resource = resource_of(out->event_type);
	out->has_resource_id = uuid_from_json(&data->root, "id", &out->resource_id);
	out->has_customer_id = uuid_from_json(&data->root, "customer_id", &out->customer_id);
	out->data = data;
}

/*
 * Parsing leaves a few times the frame's size behind (the lexer's strings,
 * the tree of JsonbValues): it goes into this context, reset for each frame,
 * so that a batch of 2,000 frames keeps only their results.
 */
static MemoryContext scratch = NULL;

static char *
copy_text(const char *s, const char *frame, size_t frame_len, int len)
{
	/* a slice of the frame stays one; converted text is copied out of scratch */
	if (s >= frame && s < frame + frame_len)
		return unconstify(char *, s);
	return pnstrdup(s, len);
}

/*
 * Classifies one frame.  Raises an ERROR (caught by the caller, which
 * dead-letters the frame) when the bytes are not a JSON object.  What out
 * points to is allocated in CurrentMemoryContext, or is part of bytes.
 */
void
frame_classify(const char *bytes, size_t len, bool binary, FrameEvent *out)
{
	MemoryContext result_cxt = CurrentMemoryContext;
	FrameEvent	fe;

	memset(out, 0, sizeof(*out));
	if (scratch == NULL)
		scratch = AllocSetContextCreate(TopMemoryContext, "voipbin frame parsing",
										ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(scratch);	/* after an error, what that frame left */
	MemoryContextSwitchTo(scratch);
	classify_in_scratch(bytes, len, binary, &fe);
	MemoryContextSwitchTo(result_cxt);

	*out = fe;
	out->event_type = pstrdup(fe.event_type);
	out->resource = fe.resource ? pstrdup(fe.resource) : NULL;
	out->data = palloc(VARSIZE(fe.data));
	memcpy(out->data, fe.data, VARSIZE(fe.data));
	out->data_text = copy_text(fe.data_text, bytes, len, fe.data_text_len);
	MemoryContextReset(scratch);
}

/*
 * voipbin_classify(frame text, OUT event_type text, OUT resource text,
 *   OUT resource_id uuid, OUT customer_id uuid, OUT data jsonb)
 * The worker's classification, reachable from SQL for tests and curiosity.
 */
PG_FUNCTION_INFO_V1(voipbin_classify);
Datum
voipbin_classify(PG_FUNCTION_ARGS)
{
	text	   *frame = PG_GETARG_TEXT_PP(0);
	TupleDesc	tupdesc;
	FrameEvent ev;
	Datum		values[5];
	bool		nulls[5] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	{
		/* the SQL text is in the server encoding; frames arrive as UTF-8 */
		char	   *s = text_to_cstring(frame);
		char	   *utf8 = pg_server_to_any(s, strlen(s), PG_UTF8);

		frame_classify(utf8, strlen(utf8), false, &ev);
	}

	values[0] = CStringGetTextDatum(ev.event_type);
	values[1] = ev.resource ? CStringGetTextDatum(ev.resource) : (Datum) 0;
	nulls[1] = ev.resource == NULL;
	values[2] = UUIDPGetDatum(&ev.resource_id);
	nulls[2] = !ev.has_resource_id;
	values[3] = UUIDPGetDatum(&ev.customer_id);
	nulls[3] = !ev.has_customer_id;
	values[4] = JsonbPGetDatum(ev.data);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
