/*
 * status.c — the block of shared memory where the worker reports what it is
 * doing and where SQL backends leave it requests (sql/status.c holds the SQL
 * functions that read and write it).
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
#include "commands/extension.h"
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

#include "base/status.h"

VoipbinShared *voipbin_shared = NULL;

Size
voipbin_shmem_size(void)
{
	return MAXALIGN(sizeof(VoipbinShared));
}

void
voipbin_shmem_init(void)
{
	bool		found;

	voipbin_shared = ShmemInitStruct("voipbin", voipbin_shmem_size(), &found);
	if (!found)
	{
		memset(voipbin_shared, 0, sizeof(VoipbinShared));
		SpinLockInit(&voipbin_shared->mutex);
		voipbin_shared->state = VB_STATE_DISABLED;
		pg_atomic_init_u32(&voipbin_shared->subscriptions_changed, 0);
		pg_atomic_init_u32(&voipbin_shared->reconnect_requested, 0);
		pg_atomic_init_u64(&voipbin_shared->frames_received, 0);
		pg_atomic_init_u64(&voipbin_shared->events_stored, 0);
		pg_atomic_init_u64(&voipbin_shared->duplicates, 0);
		pg_atomic_init_u64(&voipbin_shared->dead_letters, 0);
		pg_atomic_init_u64(&voipbin_shared->reconnects, 0);
		pg_atomic_init_u64(&voipbin_shared->buffered_bytes, 0);
		pg_atomic_init_u64(&voipbin_shared->frames_lost, 0);
		pg_atomic_init_u64(&voipbin_shared->webhook_received, 0);
		pg_atomic_init_u64(&voipbin_shared->webhook_refused, 0);
		pg_atomic_init_u32(&voipbin_shared->requests_changed, 0);
		pg_atomic_init_u64(&voipbin_shared->requests_queued, 0);
		pg_atomic_init_u64(&voipbin_shared->requests_done, 0);
		pg_atomic_init_u64(&voipbin_shared->requests_failed, 0);
		pg_atomic_init_u64(&voipbin_shared->requests_unknown, 0);
		strlcpy(voipbin_shared->webhook_state, "off", VB_ERROR_LEN);
	}
}

const char *
voipbin_state_name(VoipbinState state)
{
	switch (state)
	{
		case VB_STATE_DISABLED:
			return "disabled";
		case VB_STATE_CONNECTING:
			return "connecting";
		case VB_STATE_CONNECTED:
			return "connected";
		case VB_STATE_BACKOFF:
			return "backoff";
		case VB_STATE_UNAUTHORIZED:
			return "unauthorized";
		case VB_STATE_STANDBY:
			return "standby";
		case VB_STATE_NO_DATABASE:
			return "no_database";
	}
	return "unknown";
}

/* Sets the state; a non-NULL error replaces last_error. */
void
voipbin_set_state(VoipbinState state, const char *error)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&voipbin_shared->mutex);
	if (state == VB_STATE_CONNECTED && voipbin_shared->state != VB_STATE_CONNECTED)
		voipbin_shared->connected_since = now;
	else if (state != VB_STATE_CONNECTED)
		voipbin_shared->connected_since = 0;
	voipbin_shared->state = state;
	if (error)
		strlcpy(voipbin_shared->last_error, error, VB_ERROR_LEN);
	SpinLockRelease(&voipbin_shared->mutex);
}

void
voipbin_set_error(const char *error)
{
	SpinLockAcquire(&voipbin_shared->mutex);
	strlcpy(voipbin_shared->last_error, error ? error : "", VB_ERROR_LEN);
	SpinLockRelease(&voipbin_shared->mutex);
}

void
voipbin_set_attempts(int failures, TimestampTz next_attempt_at)
{
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->failures = failures;
	voipbin_shared->next_attempt_at = next_attempt_at;
	SpinLockRelease(&voipbin_shared->mutex);
}

void
voipbin_wake_worker(void)
{
	Latch	   *latch;

	SpinLockAcquire(&voipbin_shared->mutex);
	latch = voipbin_shared->worker_latch;
	SpinLockRelease(&voipbin_shared->mutex);
	if (latch)
		SetLatch(latch);
}

