/*
 * voipbin.h — the prelude every PostgreSQL-side file of the extension includes
 * first: PostgreSQL's own, and the few version differences (compat.h).  Each
 * file's own declarations are in the header named for it.
 */
#ifndef VOIPBIN_H
#define VOIPBIN_H

#include "postgres.h"

#include "fmgr.h"

#include "compat.h"

#endif
