/*
 * spool_import.h — voipbin 1.0's leftover spool, into the journal once.
 */
#ifndef VOIPBIN_SPOOL_IMPORT_H
#define VOIPBIN_SPOOL_IMPORT_H

/* Called by the worker after journal_open(), before anything is received. */
extern void import_spool_1_0(void);

#endif
