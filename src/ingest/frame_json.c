/*
 * frame_json.c — a frame's text to jsonb in one pass of PostgreSQL's JSON
 * parser, noting where the top-level "data" member lies in the text.
 *
 * The NOTIFY payload carries the event's data as JSON text.  Serialising the
 * stored jsonb back to text costs about as much as parsing it; the frame
 * already holds that text, so the payload takes it from the frame, whatever
 * the frame's shape: the whole frame for a bare resource, the "data"
 * member's bytes for the {type,data} and {event_type,data,…} shapes.  The
 * byte range comes from the parser's own token positions (JsonLexContext),
 * read in the same pass that builds the jsonb, so the frame is lexed once.
 *
 * The callbacks build the jsonb with pushJsonbValue() as jsonb_in does, so
 * the result, and an error for text that is no JSON, are jsonb_in's.
 */
#include "voipbin.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/jsonfuncs.h"
#include "utils/numeric.h"

#include "ingest/frame_json.h"

typedef struct ParseState
{
	JsonLexContext *lex;
	JsonbParseState *stack;
	JsonbValue *result;
	int			depth;			/* objects and arrays open around the current token */
	const char *data_start;		/* the current top-level "data" value, while in it */
	const char *data_from;		/* the last complete one */
	const char *data_to;
} ParseState;

static void
check_len(size_t len)
{
	/* jsonb's own limit on a string's length */
	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
}

/* An object or array opens (delta 1) or closes (-1). */
static void
nest(void *arg, int delta, JsonbIteratorToken token)
{
	ParseState *s = arg;

	s->depth += delta;
	s->result = pushJsonbValue(&s->stack, token, NULL);
}

static VB_JSON_ACTION
on_object_start(void *arg)
{
	nest(arg, 1, WJB_BEGIN_OBJECT);
	VB_JSON_ACTION_DONE;
}

static VB_JSON_ACTION
on_object_end(void *arg)
{
	nest(arg, -1, WJB_END_OBJECT);
	VB_JSON_ACTION_DONE;
}

static VB_JSON_ACTION
on_array_start(void *arg)
{
	nest(arg, 1, WJB_BEGIN_ARRAY);
	VB_JSON_ACTION_DONE;
}

static VB_JSON_ACTION
on_array_end(void *arg)
{
	nest(arg, -1, WJB_END_ARRAY);
	VB_JSON_ACTION_DONE;
}

static bool
is_top_data(const ParseState *s, const char *fname)
{
	return s->depth == 1 && strcmp(fname, "data") == 0;
}

/* The parser calls this with the value's first token current. */
static VB_JSON_ACTION
on_field_start(void *arg, char *fname, bool isnull)
{
	ParseState *s = arg;
	JsonbValue	key;

	if (is_top_data(s, fname))
		s->data_start = s->lex->token_start;
	key.type = jbvString;
	key.val.string.len = strlen(fname);
	check_len(key.val.string.len);
	key.val.string.val = fname;
	s->result = pushJsonbValue(&s->stack, WJB_KEY, &key);
	VB_JSON_ACTION_DONE;
}

/*
 * ... and this with the value's last token consumed.  A key given twice
 * keeps its last value in jsonb, so the last "data" is the one noted.
 */
static VB_JSON_ACTION
on_field_end(void *arg, char *fname, bool isnull)
{
	ParseState *s = arg;

	if (is_top_data(s, fname) && s->data_start)
	{
		s->data_from = s->data_start;
		s->data_to = s->lex->prev_token_terminator;
		s->data_start = NULL;
	}
	VB_JSON_ACTION_DONE;
}

static VB_JSON_ACTION
on_scalar(void *arg, char *token, JsonTokenType type)
{
	ParseState *s = arg;
	JsonbValue	v;

	switch (type)
	{
		case JSON_TOKEN_STRING:
			v.type = jbvString;
			v.val.string.len = strlen(token);
			check_len(v.val.string.len);
			v.val.string.val = token;
			break;
		case JSON_TOKEN_NUMBER:
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(token),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = type == JSON_TOKEN_TRUE;
			break;
		case JSON_TOKEN_NULL:
			v.type = jbvNull;
			break;
		default:
			elog(ERROR, "voipbin: unexpected JSON token type %d", (int) type);
	}

	if (s->stack == NULL)
	{
		/* a document that is one scalar: jsonb's raw-scalar array */
		JsonbValue	a;

		a.type = jbvArray;
		a.val.array.rawScalar = true;
		a.val.array.nElems = 1;
		pushJsonbValue(&s->stack, WJB_BEGIN_ARRAY, &a);
		pushJsonbValue(&s->stack, WJB_ELEM, &v);
		s->result = pushJsonbValue(&s->stack, WJB_END_ARRAY, NULL);
	}
	else
		s->result = pushJsonbValue(&s->stack,
								   s->stack->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE, &v);
	VB_JSON_ACTION_DONE;
}

/*
 * text[0..len) (server encoding, need not be NUL-terminated) as jsonb.
 * *data_off / *data_len: the byte range of the top-level "data" member's
 * value in text, *data_len 0 when there is none.  Raises jsonb_in's error
 * when the text is no JSON.
 */
Jsonb *
frame_json_parse(const char *text, int len, int *data_off, int *data_len)
{
	ParseState	s;
	JsonSemAction sem;

	memset(&s, 0, sizeof(s));
	memset(&sem, 0, sizeof(sem));
	/* the lexer only reads its input */
	s.lex = vb_json_lexer(unconstify(char *, text), len, GetDatabaseEncoding(), true);
	sem.semstate = &s;
	sem.object_start = on_object_start;
	sem.object_end = on_object_end;
	sem.array_start = on_array_start;
	sem.array_end = on_array_end;
	sem.object_field_start = on_field_start;
	sem.object_field_end = on_field_end;
	sem.scalar = on_scalar;

	pg_parse_json_or_ereport(s.lex, &sem);

	*data_off = s.data_from ? (int) (s.data_from - text) : 0;
	*data_len = s.data_from ? (int) (s.data_to - s.data_from) : 0;
	return JsonbValueToJsonb(s.result);
}
