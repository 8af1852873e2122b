/*
 * before_triggers.h — whether a BEFORE ROW INSERT trigger can change the rows the worker stores.
 */
#ifndef VOIPBIN_INGEST_BEFORE_TRIGGERS_H
#define VOIPBIN_INGEST_BEFORE_TRIGGERS_H

#include "postgres.h"

extern bool events_before_row_triggers(const char *schema);

#endif
