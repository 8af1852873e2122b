/*
 * store_errors.c — what an error while storing a batch means for its frames.
 *
 * A frame becomes a dead letter only when storing it would fail again the
 * same way: the data itself is refused (class 22, 23, a RAISE, a handler that
 * does not exist or may not run …).  Anything else — a deadlock, a lock
 * timeout, a cancel, a full disk, out of memory, an I/O error, an internal
 * error, a SQLSTATE we do not know — is an error of the moment: the batch is
 * kept and retried with backoff, until voipbin.store_retry_timeout has passed.
 * Erring on the side of retrying misfiles nothing: the timeout still turns a
 * batch that never goes in into dead letters.
 *
 * Pure functions; store_error_kind() and store_retry_delay_ms() are reachable
 * from SQL only through test entry points (sql/store_errors.sql declares them).
 */
#include "voipbin.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "ingest/store_retry.h"
#include "base/backoff.h"

/* Classes of SQLSTATEs raised by what the data is, or by code that refuses it. */
static const char *const data_classes[] = {
	"09",						/* triggered action exception */
	"0A",						/* feature not supported */
	"0L",						/* invalid grantor */
	"0P",						/* invalid role specification */
	"0Z",						/* diagnostics exception (GET STACKED DIAGNOSTICS misuse) */
	"20",						/* case not found (a handler's CASE) */
	"21",						/* cardinality violation */
	"22",						/* data exception: not JSON, not UTF-8, out of range … */
	"23",						/* integrity constraint violation (the dedupe never raises) */
	"24",						/* invalid cursor state */
	"26",						/* invalid SQL statement name */
	"27",						/* triggered data change violation */
	"28",						/* invalid authorization specification */
	"2B",						/* dependent privilege descriptors still exist */
	"2D",						/* invalid transaction termination (COMMIT in a handler) */
	"2F",						/* SQL routine exception */
	"34",						/* invalid cursor name */
	"38",						/* external routine exception */
	"39",						/* external routine invocation exception */
	"3B",						/* savepoint exception */
	"3D",						/* invalid catalog name */
	"3F",						/* invalid schema name */
	"42",						/* syntax error or access rule violation: a broken handler */
	"44",						/* WITH CHECK OPTION violation */
	"54",						/* program limit exceeded: JSON nested too deep, too large */
	"P0",						/* PL/pgSQL: RAISE EXCEPTION, ASSERT, NO_DATA_FOUND … */
};

StoreErrorKind
store_error_kind(int sqlerrcode)
{
	char	   *state = unpack_sql_state(sqlerrcode);

	for (size_t i = 0; i < lengthof(data_classes); i++)
		if (state[0] == data_classes[i][0] && state[1] == data_classes[i][1])
			return STORE_ERROR_DATA;
	return STORE_ERROR_MOMENT;
}

/* 100 ms, doubling with each consecutive failure, at most 10 s. */
int
store_retry_delay_ms(int failures)
{
	return (int) backoff_delay_ms(STORE_RETRY_MIN_MS, STORE_RETRY_MAX_MS, failures, 0);
}

/*
 * When a batch's frames become dead letters: once its oldest frame has been
 * retried for the timeout.  Its retrying began when the current run of
 * failures did, or when it arrived if that was later.  0: never (timeout 0).
 */
TimestampTz
store_retry_deadline(TimestampTz failing_since, TimestampTz oldest_received, int timeout_ms)
{
	if (timeout_ms <= 0)
		return 0;
	return TimestampTzPlusMilliseconds(Max(failing_since, oldest_received), timeout_ms);
}

/* Test entry point: 'retry' or 'dead letter' for a SQLSTATE. */
PG_FUNCTION_INFO_V1(voipbin_store_error_kind);
Datum
voipbin_store_error_kind(PG_FUNCTION_ARGS)
{
	char	   *code = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strlen(code) != 5)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a SQLSTATE has five characters: \"%s\"", code)));
	PG_RETURN_TEXT_P(cstring_to_text(
									 store_error_kind(MAKE_SQLSTATE(code[0], code[1], code[2], code[3], code[4]))
									 == STORE_ERROR_DATA ? "dead letter" : "retry"));
}

/* Test entry point: the delay before the n-th consecutive retry. */
PG_FUNCTION_INFO_V1(voipbin_store_retry_delay);
Datum
voipbin_store_retry_delay(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(store_retry_delay_ms(PG_GETARG_INT32(0)));
}
