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

#include "voipbin.h"

#include "voipbin.h"

#include "voipbin.h"
#include "base/settings.h"
#include "base/status.h"
#include "sql/status.h"
#include "worker/worker.h"

PG_MODULE_MAGIC;

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

	settings_define();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = voipbin_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = voipbin_shmem_startup;

	voipbin_install_hooks();
	register_worker();
}
