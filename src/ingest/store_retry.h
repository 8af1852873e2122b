/*
 * store_errors.h — retry or dead-letter: the policy for errors while storing.
 */
#ifndef VOIPBIN_STORE_ERRORS_H
#define VOIPBIN_STORE_ERRORS_H

#include "datatype/timestamp.h"

typedef enum StoreErrorKind
{
	STORE_ERROR_MOMENT,			/* keep the frames, try again later */
	STORE_ERROR_DATA			/* the frame would fail the same way again: dead letter */
} StoreErrorKind;

#define STORE_RETRY_MIN_MS 100
#define STORE_RETRY_MAX_MS 10000

extern StoreErrorKind store_error_kind(int sqlerrcode);
extern int	store_retry_delay_ms(int failures);
extern TimestampTz store_retry_deadline(TimestampTz failing_since, TimestampTz oldest_received,
										int timeout_ms);

#endif
