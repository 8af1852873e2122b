/*
 * compat.h — the differences between the PostgreSQL majors the extension is
 * built for, in one place.  Each is named for what it does, behind
 * PG_VERSION_NUM.
 */
#ifndef VOIPBIN_COMPAT_H
#define VOIPBIN_COMPAT_H

#include "postgres.h"

#endif
