/*
 * pg_fuzz.c — libFuzzer inside a PostgreSQL backend, for the parts of the
 * extension that need the backend (palloc, the jsonb parser, ereport).
 *
 * Built only by test/fuzz/Makefile, never into the extension: frame.c,
 * topic.c and endpoint.c (targets frame, topic, endpoint and host) are compiled again with coverage and ASAN+UBSAN and
 * linked with this file and libFuzzer's no-main runtime into voipbin_fuzz.so.
 * test/fuzz.sh loads it into `postgres --single` with the ASAN runtime
 * preloaded and calls
 *
 *	SELECT voipbin_fuzz('frame', ARRAY['-max_total_time=60', corpus, …]);
 *
 * which hands the array to LLVMFuzzerRunDriver() as argv.  libFuzzer exits
 * the process itself, with 0 when time is up and non-zero on a finding.
 *
 * Each input runs in a memory context reset afterwards.  An ERROR is a valid
 * answer to hostile input (the worker dead-letters such a frame) and is
 * caught; an internal error (SQLSTATE class XX: elog's "cannot happen")
 * is a finding, as is anything ASAN, UBSAN or LSan reports.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/array.h"

#include "base/endpoint.h"
#include "base/settings.h"
#include "ingest/frame.h"
#include "sql/topic.h"

PG_MODULE_MAGIC;

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

/*
 * The settings endpoint.c reads.  base/settings.c (which defines them as GUCs)
 * is not part of this library, so they are plain variables here that a
 * target sets before each call.
 */
char	   *voipbin_token = NULL;
char	   *voipbin_token_file = NULL;

typedef void (*FuzzTarget) (const uint8_t *data, size_t size);

static MemoryContext fuzz_context;
static FuzzTarget fuzz_target;

/* A NUL-terminated copy of data in its own allocation, sized exactly. */
static char *
fuzz_cstring(const uint8_t *data, size_t size)
{
	char	   *s = palloc(size + 1);

	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/*
 * frame: the bytes of one WebSocket text frame.  frame_classify() reads
 * libFuzzer's own buffer, which ASAN bounds to exactly size bytes.
 */
static void
target_frame(const uint8_t *data, size_t size)
{
	FrameEvent	ev;

	frame_classify((const char *) data, size, false, &ev);
	if (ev.event_type == NULL || ev.data == NULL)
		elog(ERROR, "frame_classify returned no event type or no data");
	(void) strlen(ev.event_type);
	if (ev.resource)
		(void) strlen(ev.resource);
	(void) VARSIZE(ev.data);
}

/*
 * topic: a topic as a user passes it.  The first byte chooses whether the
 * customer id is known (bare names expand) or not.
 */
static void
target_topic(const uint8_t *data, size_t size)
{
	const char *own = NULL;
	const char *error;
	const char *hint;
	char	   *topic;
	char	   *result;

	if (size == 0)
		return;
	if (data[0] & 1)
		own = "5e4a0680-804e-11ec-8477-2fea5968d85b";
	topic = fuzz_cstring(data + 1, size - 1);
	if (strlen(topic) != size - 1)
		return;					/* SQL text never holds a NUL */
	result = topic_normalize(topic, own, &error, &hint);
	if (result == NULL && (error == NULL || hint == NULL))
		elog(ERROR, "topic_normalize failed without an error and a hint");
	if (result != NULL)
	{
		/* a normalised topic is stable: normalising it again changes nothing */
		char	   *again = topic_normalize(result, own, &error, &hint);

		if (again == NULL || strcmp(again, result) != 0)
			elog(ERROR, "topic \"%s\" normalises to \"%s\", which normalises to \"%s\"",
				 topic, result, again ? again : error);
		(void) topic_is_bare_resource(result);
	}
}

/*
 * endpoint: voipbin.api_url and voipbin.token as a user may set them.  Input
 * is "<api_url>\n<token>"; both parse, the credential is freed as the
 * worker frees it at a reload, and redact_secret() masks it in a text
 * made of both.
 */
static void
target_endpoint(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	char	   *nl = strchr(s, '\n');
	char	   *token = "";
	Endpoint	ep;
	const char *error = NULL;
	CredentialKind kind;
	char	   *cred_error;
	char	   *cred;

	if (strlen(s) != size)
		return;					/* a GUC string never holds a NUL */
	if (nl)
	{
		*nl = '\0';
		token = nl + 1;
	}

	if (endpoint_parse(s, &ep, &error))
	{
		if (ep.host == NULL || ep.host[0] == '\0' || ep.base_path == NULL ||
			ep.port < 1 || ep.port > 65535)
			elog(ERROR, "endpoint_parse accepted \"%s\" with a bad result", s);
		(void) strlen(ep.host);
		(void) strlen(ep.base_path);
	}
	else if (error == NULL)
		elog(ERROR, "endpoint_parse refused \"%s\" without an error", s);

	voipbin_token = token;
	voipbin_token_file = "";
	cred = credential_load(&kind, &cred_error);
	voipbin_token = NULL;
	if (cred != NULL)
	{
		char	   *text = psprintf("%s %s %s", s, cred, token);
		char	   *masked = redact_secret(text, cred);

		if (strlen(cred) >= 4 && strstr(masked, cred) != NULL)
			elog(ERROR, "redact_secret left the secret in the text");
		pfree(masked);
		pfree(text);
		pfree(cred);
	}
	else if (kind != CRED_NONE)
		elog(ERROR, "credential_load returned no credential of kind %d", (int) kind);
}

/*
 * host: a webhook URI's host as libcurl hands it over (or anything else a
 * user may type there).  endpoint_host_nonpublic() says why it is no public
 * address, or NULL; the same for the host in brackets when it is IPv6.
 */
static void
target_host(const uint8_t *data, size_t size)
{
	char	   *host = fuzz_cstring(data, size);
	const char *why;

	if (strlen(host) != size)
		return;					/* SQL text never holds a NUL */
	why = endpoint_host_nonpublic(host);
	if (why != NULL && why[0] == '\0')
		elog(ERROR, "endpoint_host_nonpublic gave an empty reason for \"%s\"", host);
	if (size > 0 && strchr(host, ':') != NULL && host[0] != '[')
	{
		const char *bracketed = endpoint_host_nonpublic(psprintf("[%s]", host));

		if ((why == NULL) != (bracketed == NULL) || (why && strcmp(why, bracketed) != 0))
			elog(ERROR, "\"%s\" is \"%s\" but in brackets \"%s\"", host,
				 why ? why : "public", bracketed ? bracketed : "public");
	}
}

typedef struct NamedTarget
{
	const char *name;
	FuzzTarget	fn;
} NamedTarget;

static const NamedTarget targets[] = {
	{"frame", target_frame},
	{"topic", target_topic},
	{"endpoint", target_endpoint},
	{"host", target_host},
};

static int
fuzz_one(const uint8_t *data, size_t size)
{
	MemoryContext caller = CurrentMemoryContext;

	MemoryContextSwitchTo(fuzz_context);
	PG_TRY();
	{
		fuzz_target(data, size);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(fuzz_context);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_INTERNAL_ERROR)
		{
			fprintf(stderr, "voipbin_fuzz: internal error: %s\n", edata->message);
			abort();
		}
		FlushErrorState();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	MemoryContextReset(fuzz_context);
	return 0;
}

/* voipbin_fuzz(target text, args text[]) — never returns: libFuzzer exits. */
PG_FUNCTION_INFO_V1(voipbin_fuzz);
Datum
voipbin_fuzz(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *args = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			argc;
	char	  **argv;

	fuzz_target = NULL;
	for (size_t i = 0; i < lengthof(targets); i++)
		if (strcmp(targets[i].name, name) == 0)
			fuzz_target = targets[i].fn;
	if (fuzz_target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no fuzz target \"%s\"", name)));

	deconstruct_array(args, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	argv = palloc0(sizeof(char *) * (nelems + 2));
	argv[0] = psprintf("voipbin_fuzz_%s", name);
	for (int i = 0; i < nelems; i++)
		argv[i + 1] = nulls[i] ? "" : TextDatumGetCString(elems[i]);
	argc = nelems + 1;

	/*
	 * Small blocks: an allocation over a few hundred bytes gets a malloc()
	 * block of its own, so ASAN sees an overrun of it past its MAXALIGNed
	 * size.  Smaller chunks share blocks and an overrun inside one is not
	 * seen: the postgres binary is not instrumented.
	 */
	fuzz_context = AllocSetContextCreate(TopMemoryContext, "voipbin_fuzz",
										 0, 1024, 1024);
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, fuzz_one));
}
