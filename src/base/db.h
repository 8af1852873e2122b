/*
 * db.h — the database side's toolbox: a transaction bracket for the worker's steps, SPI plans kept across transactions, the installed extension's schema, and function lookup.
 */
#ifndef VOIPBIN_BASE_DB_H
#define VOIPBIN_BASE_DB_H

#include "postgres.h"
#include "executor/spi.h"
#include "utils/elog.h"

/* A transaction with SPI and a snapshot, as every database step of the worker needs. */
extern void db_begin_work(void);
extern void db_end_work(void);

/*
 * The schema of the installed extension, quoted, or NULL when it is not
 * installed in this database.  *ext (may be NULL) gets its pg_extension oid,
 * InvalidOid when absent: a caller that keeps plans remakes them when it
 * changes.  Needs a transaction.
 */
extern const char *db_extension_schema(Oid *ext);

/*
 * SPI plans kept across transactions: prepared and kept (an ERROR if SPI
 * cannot), and freed, each pointer set to NULL.
 */
extern SPIPlanPtr db_keep_plan(const char *sql, int nargs, Oid *types);
extern void db_free_plans(SPIPlanPtr **plans, int n);

/*
 * The voipbin extension's pg_extension oid, InvalidOid when not installed:
 * read from the catalog, never a cache, so right as soon as a CREATE or DROP
 * EXTENSION has committed (the worker is woken then).  Needs a transaction.
 */
extern Oid	db_extension_oid(void);

/* The schema and owner of extension ext (either may be NULL); false: no such extension. */
extern bool db_extension_row(Oid ext, Oid *nsp, Oid *owner);

/*
 * Runs step(arg) in a subtransaction: NULL when it ran through, else its
 * error (the subtransaction rolled back), for the caller to raise or survive.
 */
extern ErrorData *db_try(void (*step) (void *arg), void *arg);

/* Whether a function of this signature ("schema.name(argtypes)") exists. */
extern bool db_function_exists(const char *signature);

#endif
