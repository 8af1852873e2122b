/*
 * status.c — the SQL side of the worker's shared status: voipbin_status(),
 * voipbin_reconnect(), and waking the worker when the topics or the
 * extension change (at commit, never before).
 */
#include "voipbin.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "sql/status.h"
#include "base/settings.h"
#include "base/db.h"
#include "base/status.h"

static bool wake_at_commit = false;
static bool requests_at_commit = false;
static bool xact_callback_registered = false;

static void
require_shared(void)
{
	if (voipbin_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("voipbin is not loaded via shared_preload_libraries"),
				 errhint("Add voipbin to shared_preload_libraries and restart the server.")));
}

/* The worker re-reads voipbin_subscriptions only once the change is committed. */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit && voipbin_shared)
				pg_atomic_write_u32(&voipbin_shared->subscriptions_changed, 1);
			if (requests_at_commit && voipbin_shared)
				pg_atomic_write_u32(&voipbin_shared->requests_changed, 1);
			if ((wake_at_commit || requests_at_commit) && voipbin_shared)
				voipbin_wake_worker();
			wake_at_commit = requests_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = requests_at_commit = false;
			break;
		default:
			break;
	}
}

static void
register_wake(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

static void
wake_worker_at_commit(void)
{
	register_wake();
	wake_at_commit = true;
}

/* Statement trigger on voipbin_subscriptions: any change wakes the worker at commit. */
PG_FUNCTION_INFO_V1(voipbin_subscriptions_changed);
Datum
voipbin_subscriptions_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("voipbin_subscriptions_changed() must be called as a trigger")));
	wake_worker_at_commit();
	return PointerGetDatum(NULL);
}

/*
 * Statement trigger on voipbin_requests (INSERT): the worker sends what was
 * queued soon after the commit, and never sees a request that rolled back.
 */
PG_FUNCTION_INFO_V1(voipbin_requests_changed);
Datum
voipbin_requests_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("voipbin_requests_changed() must be called as a trigger")));
	register_wake();
	requests_at_commit = true;
	return PointerGetDatum(NULL);
}

/*
 * CREATE and DROP EXTENSION fire no trigger on voipbin_subscriptions, yet the
 * worker must follow them (unsubscribe when the tables go, subscribe when they
 * come back): every backend has this hook, the library being preloaded.
 */
static object_access_hook_type prev_object_access_hook = NULL;

static void
extension_access_hook(ObjectAccessType access, Oid classId, Oid objectId,
					  int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (classId == ExtensionRelationId && (access == OAT_POST_CREATE || access == OAT_DROP))
		wake_worker_at_commit();
}

void
voipbin_install_hooks(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = extension_access_hook;
}

PG_FUNCTION_INFO_V1(voipbin_reconnect);
Datum
voipbin_reconnect(PG_FUNCTION_ARGS)
{
	require_shared();
	pg_atomic_write_u32(&voipbin_shared->reconnect_requested, 1);
	voipbin_wake_worker();
	PG_RETURN_VOID();
}

/*
 * last_error can quote a handler's error, and so an event's data: status is
 * open to PUBLIC, its errors only to pg_monitor (superusers included) and
 * to the extension's owner, who can read the events anyway.
 */
static bool
may_see_errors(void)
{
	Oid			user = GetUserId();
	Oid			ext;
	Oid			owner;

	if (has_privs_of_role(user, ROLE_PG_MONITOR))
		return true;
	ext = db_extension_oid();
	if (!OidIsValid(ext))
		return false;
	owner = InvalidOid;
	(void) db_extension_row(ext, NULL, &owner);
	return OidIsValid(owner) && has_privs_of_role(user, owner);
}

/*
 * The columns of voipbin_status(), in order.  A database still at 1.0 (the
 * library was upgraded, ALTER EXTENSION not yet run) declares a prefix of
 * them: only as many as its declaration has are returned.
 */
#define STATUS_COLUMNS 22

/* Whether this backend's database is the one the worker serves, voipbin.database. */
static bool
served_here(void)
{
	char	   *name = get_database_name(MyDatabaseId);

	return name != NULL && voipbin_database != NULL && strcmp(name, voipbin_database) == 0;
}

/*
 * The status in a database the worker does not serve: a state of its own,
 * none of the worker's pid, counters or errors (they are another
 * database's), and a last_error that names the database it serves (and
 * that it does not exist, if so) for everyone: it quotes no event.
 */
static void
other_database_status(Datum *values, bool *nulls)
{
	const char *error;

	if (OidIsValid(get_database_oid(voipbin_database, true)))
		error = psprintf("the voipbin worker serves database \"%s\" (voipbin.database), not this one",
						 voipbin_database);
	else
		error = psprintf("the voipbin worker serves database \"%s\" (voipbin.database), not this one;"
						 " voipbin.database \"%s\" does not exist",
						 voipbin_database, voipbin_database);
	/* the counters are 0: nothing was received or stored for this database */
	for (int i = 0; i < STATUS_COLUMNS; i++)
	{
		values[i] = Int64GetDatum(0);
		nulls[i] = false;
	}
	values[0] = CStringGetTextDatum("other_database");
	nulls[1] = nulls[2] = true; /* connected_since, last_frame_at */
	values[8] = CStringGetTextDatum(error);
	nulls[9] = true;			/* worker_pid */
	values[12] = CStringGetTextDatum("off");
	nulls[15] = nulls[16] = true;	/* last_gap_at, next_attempt_at */
	values[17] = Int32GetDatum(0);
}

PG_FUNCTION_INFO_V1(voipbin_status);
Datum
voipbin_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[STATUS_COLUMNS];
	bool		nulls[STATUS_COLUMNS];
	VoipbinState state;
	bool		retrying;
	TimestampTz connected_since,
				last_frame_at,
				last_gap_at,
				next_attempt_at;
	int32		failures;
	pid_t		pid;
	char		last_error[VB_ERROR_LEN];
	char		webhook_state[VB_ERROR_LEN];

	require_shared();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (tupdesc->natts > STATUS_COLUMNS)
		elog(ERROR, "voipbin_status() is declared with %d columns; this library knows %d",
			 tupdesc->natts, STATUS_COLUMNS);
	tupdesc = BlessTupleDesc(tupdesc);

	if (!served_here())
	{
		other_database_status(values, nulls);
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}

	SpinLockAcquire(&voipbin_shared->mutex);
	state = voipbin_shared->state;
	retrying = voipbin_shared->store_failing_since != 0;
	connected_since = voipbin_shared->connected_since;
	last_frame_at = voipbin_shared->last_frame_at;
	last_gap_at = voipbin_shared->last_gap_at;
	next_attempt_at = voipbin_shared->next_attempt_at;
	failures = voipbin_shared->failures;
	pid = voipbin_shared->worker_pid;
	strlcpy(last_error, voipbin_shared->last_error, VB_ERROR_LEN);
	strlcpy(webhook_state, voipbin_shared->webhook_state, VB_ERROR_LEN);
	SpinLockRelease(&voipbin_shared->mutex);

	memset(nulls, 0, sizeof(nulls));
	/* the database refusing events matters more than how the socket is doing */
	values[0] = CStringGetTextDatum(retrying && state != VB_STATE_STANDBY ? "retrying" :
									voipbin_state_name(state));
	values[1] = TimestampTzGetDatum(connected_since);
	nulls[1] = connected_since == 0;
	values[2] = TimestampTzGetDatum(last_frame_at);
	nulls[2] = last_frame_at == 0;
	values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->frames_received));
	values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->events_stored));
	values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->duplicates));
	values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->dead_letters));
	values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->reconnects));
	values[8] = CStringGetTextDatum(last_error);
	nulls[8] = last_error[0] == '\0' || !may_see_errors();
	values[9] = Int32GetDatum((int32) pid);
	nulls[9] = pid == 0;
	values[10] = Int64GetDatum((int64) (pg_atomic_read_u64(&voipbin_shared->buffered_bytes) +
										__atomic_load_n(&voipbin_shared->network_backlog, __ATOMIC_RELAXED)));
	/* 1.1 */
	values[11] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->frames_lost));
	values[12] = CStringGetTextDatum(webhook_state);
	values[13] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->webhook_received));
	values[14] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->webhook_refused));
	values[15] = TimestampTzGetDatum(last_gap_at);
	nulls[15] = last_gap_at == 0;
	/* when the worker tries again: only while it waits to */
	values[16] = TimestampTzGetDatum(next_attempt_at);
	nulls[16] = next_attempt_at == 0 ||
		(state != VB_STATE_BACKOFF && state != VB_STATE_UNAUTHORIZED);
	values[17] = Int32GetDatum(failures);
	/* 1.2 */
	values[18] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->requests_queued));
	values[19] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->requests_done));
	values[20] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->requests_failed));
	values[21] = Int64GetDatum((int64) pg_atomic_read_u64(&voipbin_shared->requests_unknown));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
