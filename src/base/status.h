/*
 * status.h — the worker's state in shared memory, which voipbin_status() reads and SQL functions use to wake the worker.
 */
#ifndef VOIPBIN_BASE_STATUS_H
#define VOIPBIN_BASE_STATUS_H

#include "postgres.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"

typedef enum VoipbinState
{
	VB_STATE_DISABLED,
	VB_STATE_CONNECTING,
	VB_STATE_CONNECTED,
	VB_STATE_BACKOFF,
	VB_STATE_UNAUTHORIZED,
	VB_STATE_STANDBY,
	VB_STATE_NO_DATABASE		/* voipbin.database does not exist (worker/database_wait.c) */
} VoipbinState;

#define VB_ERROR_LEN 512

typedef struct VoipbinShared
{
	slock_t		mutex;			/* guards the non-atomic fields */
	pid_t		worker_pid;
	Latch	   *worker_latch;
	VoipbinState state;
	TimestampTz connected_since;
	TimestampTz last_frame_at;
	char		last_error[VB_ERROR_LEN];
	pg_atomic_uint32 subscriptions_changed;
	pg_atomic_uint32 reconnect_requested;
	pg_atomic_uint64 frames_received;
	pg_atomic_uint64 events_stored;
	pg_atomic_uint64 duplicates;
	pg_atomic_uint64 dead_letters;
	pg_atomic_uint64 reconnects;
	pg_atomic_uint64 buffered_bytes;	/* taken by the worker, not yet stored */
	uint64		network_backlog;	/* written by the network thread (__atomic) */

	/* 1.1 (guarded by mutex unless atomic) */
	pg_atomic_uint64 frames_lost;	/* read, but the journal could not keep them */
	char		webhook_state[VB_ERROR_LEN];	/* "off", "listening on …", or why not */
	pg_atomic_uint64 webhook_received;
	pg_atomic_uint64 webhook_refused;
	TimestampTz last_gap_at;	/* start of the latest recorded outage */
	TimestampTz store_failing_since;	/* storing fails with errors of the moment; 0: it works */
	TimestampTz next_attempt_at;	/* backoff / unauthorized: the next connection attempt; 0: none */
	int32		failures;		/* consecutive failed connection attempts */

	/* 1.2 (guarded by mutex) */
	bool		connecting_database;	/* a worker is connecting to voipbin.database; still set at the
										 * next start if that worker died trying (InitPostgres' FATAL) */
	pg_atomic_uint32 requests_changed;	/* a committed voipbin_request(): send soon */
	pg_atomic_uint64 requests_queued;	/* queued or sending now, as the worker last counted */
	pg_atomic_uint64 requests_done; /* since the worker started */
	pg_atomic_uint64 requests_failed;
	pg_atomic_uint64 requests_unknown;
} VoipbinShared;

extern VoipbinShared *voipbin_shared;

extern Size voipbin_shmem_size(void);
extern void voipbin_shmem_init(void);
extern void voipbin_set_state(VoipbinState state, const char *error);
extern void voipbin_set_error(const char *error);
extern void voipbin_set_attempts(int failures, TimestampTz next_attempt_at);
extern const char *voipbin_state_name(VoipbinState state);
extern void voipbin_wake_worker(void);

#endif
