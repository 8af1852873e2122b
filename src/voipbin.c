/*
 * voipbin.c — loading the library: settings, shared memory, the worker.
 */
#include "voipbin.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

char	   *voipbin_database = NULL;
char	   *voipbin_api_url = NULL;
char	   *voipbin_token = NULL;
char	   *voipbin_token_file = NULL;
char	   *voipbin_ca_file = NULL;
int			voipbin_reconnect_min_delay_ms = 1000;
int			voipbin_reconnect_max_delay_ms = 30000;
int			voipbin_idle_timeout_s = 35;
int			voipbin_event_retention_s = 7 * 86400;
int			voipbin_buffer_limit_kb = 64 * 1024;
int			voipbin_http_timeout_ms = 10000;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
voipbin_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(voipbin_shmem_size());
}

static void
voipbin_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	voipbin_shmem_init();
}

static void
define_settings(void)
{
	DefineCustomStringVariable("voipbin.database",
							   "Database the voipbin worker connects to.",
							   "Run CREATE EXTENSION voipbin in this database.",
							   &voipbin_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.api_url",
							   "VoIPBIN REST base URL; the WebSocket URL is derived from it.",
							   "http becomes ws and https becomes wss, plus /ws.",
							   &voipbin_api_url, "https://api.voipbin.net/v1.0",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.token",
							   "VoIPBIN credential: an access key (vb_…) or a JWT.",
							   "Prefer voipbin.token_file: a reload logs changed values.",
							   &voipbin_token, "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.token_file",
							   "File whose first line is the VoIPBIN credential; wins over voipbin.token.",
							   NULL,
							   &voipbin_token_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.ca_file",
							   "PEM bundle of extra CAs trusted for VoIPBIN TLS.",
							   "Certificates are always verified; these add to the system store.",
							   &voipbin_ca_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.reconnect_min_delay",
							"First reconnect delay; it doubles, with jitter, on each failure.",
							NULL,
							&voipbin_reconnect_min_delay_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.reconnect_max_delay",
							"Largest reconnect delay.",
							NULL,
							&voipbin_reconnect_max_delay_ms, 30000, 10, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.idle_timeout",
							"A connection that passes no frame for this long is dead.",
							"VoIPBIN pings every 10 s.",
							&voipbin_idle_timeout_s, 35, 2, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.event_retention",
							"Events and dead letters older than this are deleted; 0 keeps them.",
							NULL,
							&voipbin_event_retention_s, 7 * 86400, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.buffer_limit",
							"Memory the worker may hold for events the database cannot take yet.",
							NULL,
							&voipbin_buffer_limit_kb, 64 * 1024, 1024, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.http_timeout",
							"Total time one VoIPBIN REST call may take.",
							NULL,
							&voipbin_http_timeout_ms, 10000, 100, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	MarkGUCPrefixReserved("voipbin");
}

static void
register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* started on a standby too, where it waits in state "standby" */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "voipbin");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "voipbin_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "voipbin worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "voipbin");
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("voipbin must be loaded via shared_preload_libraries"),
				 errhint("Add voipbin to shared_preload_libraries in postgresql.conf and restart the server.")));

	define_settings();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = voipbin_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = voipbin_shmem_startup;

	voipbin_install_hooks();
	register_worker();
}
