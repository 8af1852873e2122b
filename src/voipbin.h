/*
 * voipbin.h — what the files of the extension share: settings, the shared
 * status block, and the entry points one file offers another.
 */
#ifndef VOIPBIN_H
#define VOIPBIN_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

/* ---- settings (voipbin.c) ---- */
extern char *voipbin_database;
extern char *voipbin_api_url;
extern char *voipbin_token;
extern char *voipbin_token_file;
extern char *voipbin_ca_file;
extern int	voipbin_reconnect_min_delay_ms;
extern int	voipbin_reconnect_max_delay_ms;
extern int	voipbin_idle_timeout_s;
extern int	voipbin_event_retention_s;
extern int	voipbin_partition_interval_s;
extern int	voipbin_buffer_limit_kb;
extern int	voipbin_http_timeout_ms;

/* 1.1 */
typedef enum VoipbinNotifyPayload
{
	VB_NOTIFY_FULL,
	VB_NOTIFY_ID
} VoipbinNotifyPayload;

extern char *voipbin_spool_directory;
extern int	voipbin_spool_limit_kb;
extern int	voipbin_max_frame_size;
extern int	voipbin_store_retry_timeout_ms;
extern int	voipbin_notify_payload;
extern char *voipbin_worker_role;
extern int	voipbin_webhook_port;
extern char *voipbin_webhook_listen_addresses;
extern char *voipbin_webhook_path;
extern char *voipbin_webhook_secret;
extern bool voipbin_repair;
extern double voipbin_repair_rate;

/* ---- shared status (status.c) ---- */
typedef enum VoipbinState
{
	VB_STATE_DISABLED,
	VB_STATE_CONNECTING,
	VB_STATE_CONNECTED,
	VB_STATE_BACKOFF,
	VB_STATE_UNAUTHORIZED,
	VB_STATE_STANDBY
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
} VoipbinShared;

extern VoipbinShared *voipbin_shared;

extern Size voipbin_shmem_size(void);
extern void voipbin_shmem_init(void);
extern void voipbin_set_state(VoipbinState state, const char *error);
extern void voipbin_set_error(const char *error);
extern void voipbin_set_attempts(int failures, TimestampTz next_attempt_at);
extern const char *voipbin_state_name(VoipbinState state);
extern void voipbin_wake_worker(void);
extern void voipbin_install_hooks(void);
/* worker.c: one database step of the worker's loop, an error logged and survived */
extern bool voipbin_guarded(void (*step) (void), const char *what);

/* ---- topics (topic.c) ---- */
extern char *topic_normalize(const char *topic, const char *own_customer_id,
							 const char **error, const char **hint);
extern char *topic_arg(FunctionCallInfo fcinfo);
extern Datum topic_result(const char *topic, const char *result, const char *error,
						  const char *hint);
extern bool topic_is_bare_resource(const char *topic);

/* ---- frames (frame.c) ---- */
typedef struct FrameEvent
{
	char	   *event_type;
	char	   *resource;		/* NULL for "unknown" */
	bool		has_resource_id;
	pg_uuid_t	resource_id;
	bool		has_customer_id;
	pg_uuid_t	customer_id;
	Jsonb	   *data;
	bool		bare;			/* the frame is the resource object itself */
	/* data as JSON text: a slice of the frame (in the server encoding), for the NOTIFY payload */
	const char *data_text;
	int			data_text_len;
} FrameEvent;

/* frame_classify()'s error for a binary frame: a dead letter keeps no opcode */
#define FRAME_BINARY_ERROR "binary frame: VoIPBIN sends events as text frames"

extern void frame_classify(const char *bytes, size_t len, bool binary, FrameEvent *out);

/* ---- a frame's JSON text (frame_json.c) ---- */
extern Jsonb *frame_json_parse(const char *text, int len, int *data_off, int *data_len);

/* ---- endpoint and credential (endpoint.c) ---- */
typedef enum CredentialKind
{
	CRED_NONE,
	CRED_ACCESSKEY,
	CRED_JWT
} CredentialKind;

typedef struct Endpoint
{
	bool		tls;
	char	   *host;
	int			port;
	char	   *base_path;		/* "/v1.0", no trailing slash */
} Endpoint;

extern bool endpoint_parse(const char *api_url, Endpoint *ep, const char **error);
extern char *credential_load(CredentialKind *kind, char **error);
extern char *credential_clean(const char *text, size_t len, bool first_line,
							  const char *source, char **error);
extern bool endpoint_is_loopback(const char *host);
extern char *redact_secret(const char *text, const char *secret);

/* ---- the worker (worker.c, store.c, subscriptions.c) ---- */
extern PGDLLEXPORT void voipbin_worker_main(Datum arg);

#endif
