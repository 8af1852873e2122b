/*
 * no_postgres.h — included last by every file of src/net/: the code here runs
 * on threads PostgreSQL does not know (libwebsockets', the journal flusher,
 * libmicrohttpd's, the secret fetch), where palloc, elog or ereport would
 * corrupt the backend.  The build already leaves PostgreSQL's include path
 * out; this stops it should a header bring PostgreSQL in anyway.
 */
#ifndef VOIPBIN_NET_NO_POSTGRES_H
#define VOIPBIN_NET_NO_POSTGRES_H

#ifdef POSTGRES_H
#error "src/net/ runs off the worker's main thread: it must not include PostgreSQL headers"
#endif

#endif
