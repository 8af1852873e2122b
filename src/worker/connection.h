/*
 * connection.h — the worker's connection to VoIPBIN: its configuration,
 * its state machine, the backoff between attempts, and the news the
 * network thread sends of it.
 */
#ifndef VOIPBIN_WORKER_CONNECTION_H
#define VOIPBIN_WORKER_CONNECTION_H

#include "postgres.h"
#include "datatype/timestamp.h"

#include "base/status.h"

/* Reads the configuration, and starts disabled (say why, if it is). */
extern void connection_init(void);

/* The server is a standby: no connection. */
extern void connection_standby(void);

/* The server is not (or no longer) a standby: connect. */
extern void connection_promoted(void);

/*
 * Follows the state machine: reconnects when voipbin_reconnect() asks,
 * connects when an attempt is due, gives up a handshake too slow, and
 * disables the connection without a credential.
 */
extern void connection_step(void);

/* Takes the network thread's news of the connection: connected, or closed. */
extern void connection_take_news(void);

/* After a reload: a changed credential, URL or CA file reconnects. */
extern void connection_reloaded(void);

/* When connection_step() has something due (DT_NOEND: never). */
extern TimestampTz connection_due(void);

extern VoipbinState connection_state(void);

/* True once after each new connection: its topics are to be subscribed. */
extern bool connection_take_fresh(void);

#endif
