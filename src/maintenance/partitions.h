/*
 * partitions.h — partitions made ahead, and whole partitions dropped when retention is past them.
 */
#ifndef VOIPBIN_MAINTENANCE_PARTITIONS_H
#define VOIPBIN_MAINTENANCE_PARTITIONS_H

#include "postgres.h"
#include "datatype/timestamp.h"

/*
 * Makes the partitions due and drops those past retention; errors propagate.
 * Returns when the next partition becomes due to be dropped (0: none).
 */
extern TimestampTz partitions_maintain(void);

#endif
