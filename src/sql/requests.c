/*
 * requests.c — voipbin_request(), which queues a request to VoIPBIN's REST
 * API as a row of voipbin_requests in the caller's transaction (the worker
 * sends it after commit: docs/requests.md), and voipbin_api(), which makes
 * one request at once in the calling session, for psql.
 *
 * voipbin_request() is C rather than a SECURITY DEFINER function so that it
 * can record who queued the request (a definer function sees only its
 * owner) and still write the table as the extension's owner: its callers
 * need EXECUTE on it, no privilege on the table.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "sql/requests.h"
#include "base/db.h"
#include "base/rest.h"
#include "base/settings.h"
#include "requests/request_rules.h"

/* The method in upper case, or an ERROR (22023) when VoIPBIN has no such method. */
static char *
checked_method(text *arg)
{
	char	   *method = text_to_cstring(arg);

	for (char *s = method; *s; s++)
		*s = pg_toupper((unsigned char) *s);
	if (!request_method_known(method))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("voipbin: \"%s\" is not an HTTP method VoIPBIN's API takes", text_to_cstring(arg)),
				 errhint("Use GET, POST, PUT, PATCH or DELETE.")));
	return method;
}

static char *
checked_path(text *arg)
{
	char	   *path = text_to_cstring(arg);
	const char *problem = request_path_problem(path);

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("voipbin: \"%s\" is not a path of VoIPBIN's API", path),
				 errdetail("%s", problem),
				 errhint("Pass the path as VoIPBIN's API reference writes it after /v1.0, e.g. /calls/<id>/hangup.")));
	return path;
}

static void
check_body(Jsonb *body)
{
	if (body != NULL && JB_ROOT_IS_SCALAR(body))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("voipbin: a request's body is a JSON object or array"),
				 errhint("Pass '{}' for a request that takes no fields.")));
}

static void
require_argument(FunctionCallInfo fcinfo, int i, const char *name)
{
	if (PG_ARGISNULL(i))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("voipbin: %s must not be NULL", name),
				 errhint("A request needs a method (GET, POST, PUT, PATCH or DELETE) and a path such as /calls.")));
}

/* What voipbin_request() writes, and the id it gets. */
typedef struct QueuedRequest
{
	const char *created_by;
	const char *method;
	const char *path;
	Jsonb	   *body;			/* or NULL */
	const char *dedupe_key;		/* or NULL */
	int64		id;
} QueuedRequest;

/* Inserts the row as the extension's owner; a dedupe_key already there gives that row's id. */
static void
insert_request(QueuedRequest *q)
{
	Oid			ext;
	Oid			owner = InvalidOid;
	const char *schema;
	Oid			save_user;
	int			save_sec;
	Oid			types[5] = {NAMEOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int			rc;

	SPI_connect();
	schema = db_extension_schema(&ext);
	if (schema == NULL || !db_extension_row(ext, NULL, &owner) || !OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("voipbin: the extension is not installed in this database")));
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(q->created_by));
	values[1] = CStringGetTextDatum(q->method);
	values[2] = CStringGetTextDatum(q->path);
	values[3] = q->body ? JsonbPGetDatum(q->body) : (Datum) 0;
	nulls[3] = q->body ? ' ' : 'n';
	values[4] = q->dedupe_key ? CStringGetTextDatum(q->dedupe_key) : (Datum) 0;
	nulls[4] = q->dedupe_key ? ' ' : 'n';

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	rc = SPI_execute_with_args(psprintf("INSERT INTO %s.voipbin_requests "
										"(created_by, method, path, body, dedupe_key) "
										"VALUES ($1, $2, $3, $4, $5) "
										"ON CONFLICT (dedupe_key) DO NOTHING RETURNING id", schema),
							   5, types, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "voipbin: INSERT INTO voipbin_requests: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		/* the key is taken: by a committed row, or one whose transaction we waited for */
		rc = SPI_execute_with_args(psprintf("SELECT id FROM %s.voipbin_requests WHERE dedupe_key = $1",
											schema),
								   1, &types[4], &values[4], NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "voipbin: the request with dedupe_key \"%s\" is gone", q->dedupe_key);
	}
	q->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SetUserIdAndSecContext(save_user, save_sec);
	SPI_finish();
}

/* voipbin_request(method text, path text, body jsonb DEFAULT '{}', dedupe_key text DEFAULT NULL) RETURNS bigint */
PG_FUNCTION_INFO_V1(voipbin_request);
Datum
voipbin_request(PG_FUNCTION_ARGS)
{
	QueuedRequest q;

	require_argument(fcinfo, 0, "method");
	require_argument(fcinfo, 1, "path");
	q.created_by = GetUserNameFromId(GetUserId(), false);
	q.method = checked_method(PG_GETARG_TEXT_PP(0));
	q.path = checked_path(PG_GETARG_TEXT_PP(1));
	q.body = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	check_body(q.body);
	q.dedupe_key = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (q.dedupe_key && q.dedupe_key[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("voipbin: a dedupe_key is NULL or a non-empty text"),
				 errhint("Derive it from what triggers the request, e.g. 'hangup:' || event id.")));
	if (voipbin_database && strcmp(voipbin_database, get_database_name(MyDatabaseId)) != 0)
		ereport(WARNING,
				(errmsg("voipbin: no worker sends the requests of database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errdetail("The request is queued; the worker serves database \"%s\" (voipbin.database) and sends only its requests.",
						   voipbin_database),
				 errhint("Queue it in database \"%s\", or set voipbin.database and restart the server.",
						 voipbin_database)));
	insert_request(&q);
	PG_RETURN_INT64(q.id);
}

/* voipbin_api(method text, path text, body jsonb DEFAULT NULL) RETURNS jsonb */
PG_FUNCTION_INFO_V1(voipbin_api);
Datum
voipbin_api(PG_FUNCTION_ARGS)
{
	RestTarget	t;
	char	   *method;
	char	   *path;
	Jsonb	   *body;
	Jsonb	   *answer;

	require_argument(fcinfo, 0, "method");
	require_argument(fcinfo, 1, "path");
	method = checked_method(PG_GETARG_TEXT_PP(0));
	path = checked_path(PG_GETARG_TEXT_PP(1));
	body = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	check_body(body);
	rest_target_load(&t, true);
	answer = rest_call(&t, method, path, body);
	if (answer == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(answer);
}
