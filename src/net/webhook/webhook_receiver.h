/*
 * webhook_receiver.h — the webhook receiver: libmicrohttpd on threads of its
 * own, no PostgreSQL.
 *
 * VoIPBIN POSTs (or PUTs, GETs, DELETEs) each event, signed, to the path
 * voipbin.webhook_path; the receiver checks the request (webhook_request.h),
 * appends a verified body to the journal (journal.h), which queues it for the
 * main thread like a WebSocket frame, and answers 200 only once the journal
 * is on disk, so a crash after the answer cannot lose it.  The worker's main thread starts,
 * stops and reconfigures it, learns of news through an eventfd in its
 * WaitEventSet and copies the counters into voipbin_status().
 */
#ifndef VOIPBIN_WEBHOOK_RECEIVER_H
#define VOIPBIN_WEBHOOK_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How long a verified body may wait for the journal's fsync before the answer is 503. */
#define WEBHOOK_DURABLE_WAIT_MS 10000
/* Longest secret kept (VoIPBIN's are 32 or 64 characters). */
#define WEBHOOK_SECRET_MAX 1024
/* After a request fails to verify, the secret is fetched again at most this often. */
#define WEBHOOK_REFETCH_INTERVAL_MS 60000
/* How long a request that failed to verify waits for that refetch (VoIPBIN waits 30 s in all). */
#define WEBHOOK_REFETCH_WAIT_MS 5000

/*
 * Creates the eventfd the main thread waits on; call once, before anything
 * else.  -1 with errbuf set on failure.
 */
extern int	webhook_receiver_init(char *errbuf, size_t errlen);
extern void webhook_receiver_ack_wakeup(void);
/* Wakes the main thread; callable from any thread (the secret fetch's too). */
extern void webhook_receiver_wake(void);

/*
 * Listens on port at each of addresses (comma-separated host names or IP
 * addresses, "*" for all).  Returns how many sockets listen; state gets
 * "listening on 127.0.0.1:8080, [::1]:8080" or why not (with the addresses
 * that failed).
 */
extern int	webhook_receiver_start(const char *addresses, int port, char *state, size_t statelen);

/* Stops listening; requests waiting for durability are answered 503.  Safe to call twice. */
extern void webhook_receiver_stop(void);

/* Settings that apply to the next request, without a restart. */
extern void webhook_receiver_set_path(const char *path);
extern void webhook_receiver_set_max_body(uint64_t bytes);
/* The HMAC key; NULL or "" means none is known (requests get 503). */
extern void webhook_receiver_set_secret(const char *secret, size_t len);

/* Answers since webhook_receiver_init(): 200s, and every other status. */
extern void webhook_receiver_counts(uint64_t *received, uint64_t *refused);

/*
 * Refetching the key after a request fails to verify.  allowed: the key came
 * from GET /customer (not from voipbin.webhook_secret), so a failure may mean
 * the customer's secret was rotated; restart_limit: forget when the last
 * refetch was (a new credential).  The first such failure claims a refetch
 * (at most one per WEBHOOK_REFETCH_INTERVAL_MS); it, and any that fails while
 * that refetch is on its way, waits up to WEBHOOK_REFETCH_WAIT_MS for it and
 * is then checked again against the key in hand: 200 (once durable) if it
 * verifies now, else 401.  The others get 401 at once.
 */
extern void webhook_receiver_set_refetch(bool allowed, bool restart_limit);
/* True once after a request claimed a refetch: the caller fetches the secret. */
extern bool webhook_receiver_take_refetch(void);
/*
 * The fetch (or refetch) has ended, and the new key, if any, is set: the
 * waiting requests are checked again.  It also ends a key pending (below).
 */
extern void webhook_receiver_refetch_done(void);

/*
 * No key is in hand and the first fetch of one is due or under way: a
 * request then waits for it (at most WEBHOOK_REFETCH_WAIT_MS, as one waits
 * for a refetch) and is verified with what it brought, rather than answered
 * 503 a moment before the key arrives.  webhook_receiver_refetch_done() (or
 * on = false) ends the wait; 503 is then for "no key could be had".
 */
extern void webhook_receiver_set_key_pending(bool on);

#endif
