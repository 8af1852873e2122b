/*
 * backoff.h — the one exponential backoff of the extension: the worker's
 * reconnects, a repair's retries, a batch's store retries, the webhook
 * secret's refetches.
 */
#ifndef VOIPBIN_BASE_BACKOFF_H
#define VOIPBIN_BASE_BACKOFF_H

#include "postgres.h"

/*
 * The delay before try number attempt (1: the first retry): min_ms, doubled
 * for each attempt after the first, at most max_ms (attempt <= 1: min_ms).
 * With jitter > 0 it then grows by a random share of itself below jitter
 * (0.5: up to half again), still at most max_ms.  Never below min_ms, which
 * wins when it exceeds max_ms.
 */
extern int64 backoff_delay_ms(int64 min_ms, int64 max_ms, int attempt, double jitter);

#endif
