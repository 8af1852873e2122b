/*
 * database_wait.c — a voipbin.database that does not exist, waited for
 * without a crash loop of FATALs.
 *
 * A background worker names its database once, in
 * BackgroundWorkerInitializeConnection(), and a database that does not
 * exist ends it FATAL there; restarted every second (bgw_restart_time), it
 * would log that FATAL every second, forever.  So the start-up marks in the
 * shared status that it is connecting and clears the mark once connected: a
 * worker that finds the mark still set knows the one before it died
 * connecting.  It connects to no database instead (the shared catalogs,
 * pg_database among them, are readable so) and, while voipbin.database does
 * not exist, says so in the status (state no_database, last_error naming
 * the setting), logs it at most once a minute and looks again every second
 * and whenever its latch is set (CREATE EXTENSION sets it).  Once the
 * database is there it exits with code 1, and the postmaster starts the next
 * worker a second later, which connects to it.  A worker that died
 * connecting for another reason (voipbin.worker_role refused) costs one
 * such round, which finds the database and exits at once.
 */
#include "voipbin.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "worker/database_wait.h"
#include "base/settings.h"
#include "base/status.h"

#define DATABASE_POLL_MS 1000
#define DATABASE_LOG_EVERY_MS (60 * 1000)

bool
database_wait_needed(void)
{
	bool		died;

	SpinLockAcquire(&voipbin_shared->mutex);
	died = voipbin_shared->connecting_database;
	voipbin_shared->connecting_database = true;
	SpinLockRelease(&voipbin_shared->mutex);
	return died;
}

void
database_wait_connected(void)
{
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->connecting_database = false;
	SpinLockRelease(&voipbin_shared->mutex);
}

/*
 * Whether voipbin.database is in pg_database.  A heap scan, as the
 * autovacuum launcher's: without a database, pg_database's indexes cannot
 * be opened (their relcache entries are read from pg_class).
 */
static bool
database_exists(void)
{
	bool		exists = false;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!exists && HeapTupleIsValid(tuple = heap_getnext(scan, ForwardScanDirection)))
		exists = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname), voipbin_database) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return exists;
}

/* The waiting worker leaves the status as a worker that is gone. */
static void
forget_waiter(int code, Datum arg)
{
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = 0;
	voipbin_shared->worker_latch = NULL;
	if (voipbin_shared->state == VB_STATE_NO_DATABASE)
	{
		voipbin_shared->state = VB_STATE_DISABLED;
		voipbin_shared->last_error[0] = '\0';
	}
	SpinLockRelease(&voipbin_shared->mutex);
}

void
database_wait(void)
{
	TimestampTz logged_at = 0;
	char		error[VB_ERROR_LEN];

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("voipbin worker");
	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->worker_pid = MyProcPid;
	voipbin_shared->worker_latch = MyLatch;
	SpinLockRelease(&voipbin_shared->mutex);
	before_shmem_exit(forget_waiter, (Datum) 0);

	snprintf(error, sizeof(error), "voipbin.database \"%s\" does not exist", voipbin_database);
	for (;;)
	{
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (database_exists())
			break;
		voipbin_set_state(VB_STATE_NO_DATABASE, error);
		now = GetCurrentTimestamp();
		if (logged_at == 0 || TimestampDifferenceExceeds(logged_at, now, DATABASE_LOG_EVERY_MS))
		{
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_DATABASE),
					 errmsg("voipbin: %s", error),
					 errdetail("The worker waits for it, looking every second; this is logged once a minute."),
					 errhint("Create database \"%s\", or set voipbin.database to an existing database and restart the server.",
							 voipbin_database)));
			logged_at = now;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 DATABASE_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	SpinLockAcquire(&voipbin_shared->mutex);
	voipbin_shared->connecting_database = false;
	SpinLockRelease(&voipbin_shared->mutex);
	if (logged_at != 0)
		ereport(LOG,
				(errmsg("voipbin: database \"%s\" exists now; the worker restarts to connect to it",
						voipbin_database)));
	/* exit code 1: the postmaster starts the worker again after bgw_restart_time */
	proc_exit(1);
}
