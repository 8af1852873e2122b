/*
 * database_wait.h — a voipbin.database that does not exist, waited for
 * without a crash loop of FATALs.
 */
#ifndef VOIPBIN_WORKER_DATABASE_WAIT_H
#define VOIPBIN_WORKER_DATABASE_WAIT_H

#include "postgres.h"

/*
 * Called before connecting to voipbin.database: true when the worker before
 * this one died connecting (then database_wait() is next), else marks that
 * this one connects.
 */
extern bool database_wait_needed(void);

/* The connection to voipbin.database is made: the mark is cleared. */
extern void database_wait_connected(void);

/*
 * Connects to no database and waits while voipbin.database does not exist;
 * then exits, for the postmaster to start a worker that connects to it.
 */
extern _Noreturn void database_wait(void);

#endif
