/*
 * worker.h — the background worker's entry point (the postmaster starts it by name).
 */
#ifndef VOIPBIN_WORKER_WORKER_H
#define VOIPBIN_WORKER_WORKER_H

#include "postgres.h"
#include "fmgr.h"

extern PGDLLEXPORT void voipbin_worker_main(Datum arg);

#endif
