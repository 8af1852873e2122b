/*
 * ws_connect_race.c — ws_connect() must not touch its command once the
 * network thread owns it.
 *
 * Built and run by test/test_durability.py.  calloc, free and
 * pthread_mutex_unlock are interposed: the command ws_connect() allocates is
 * remembered, and once it is queued (the second unlock of ws_connect()) the
 * main thread waits until the network thread has taken it, failed to connect
 * (a closed port) and freed it.  free() scribbles over what it frees, so a
 * read of the command after that returns garbage, not the connection number.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/journal/journal.h"
#include "net/ws/ws_client.h"

extern void *__libc_calloc(size_t n, size_t size);
extern void __libc_free(void *p);

static pthread_t main_thread;
static volatile bool in_connect;
static void *volatile cmd;		/* the command ws_connect() allocated */
static volatile bool cmd_freed;
static int	unlocks;

void *
calloc(size_t n, size_t size)
{
	void	   *p = __libc_calloc(n, size);

	if (in_connect && cmd == NULL && pthread_equal(pthread_self(), main_thread))
		cmd = p;
	return p;
}

void
free(void *p)
{
	if (!p)
		return;
	memset(p, 0xa5, malloc_usable_size(p));
	if (p == cmd)
		cmd_freed = true;
	__libc_free(p);
}

int
pthread_mutex_unlock(pthread_mutex_t *m)
{
	static int (*real) (pthread_mutex_t *);
	int			rc;

	if (!real)
		real = (int (*) (pthread_mutex_t *)) dlsym(RTLD_NEXT, "pthread_mutex_unlock");
	rc = real(m);
	if (in_connect && pthread_equal(pthread_self(), main_thread) && ++unlocks == 2)
	{
		/* queued: let the network thread run with it, for up to 5 s */
		for (int i = 0; i < 500 && !cmd_freed; i++)
			usleep(10 * 1000);
	}
	return rc;
}

int
main(void)
{
	char		err[256];
	WsTarget	t;
	int			freed = 0;

	main_thread = pthread_self();
	journal_open(NULL, 1 << 20, 1 << 20, false, err, sizeof(err));	/* memory only */
	if (ws_start(err, sizeof(err)) < 0)
	{
		fprintf(stderr, "ws_start: %s\n", err);
		return 2;
	}
	memset(&t, 0, sizeof(t));
	t.host = "127.0.0.1";
	t.port = 1;					/* nothing listens */
	t.path = "/v1.0/ws";
	t.idle_timeout_s = 5;
	t.handshake_timeout_s = 5;
	for (int i = 0; i < 3; i++)
	{
		uint32_t	conn;

		cmd = NULL;
		cmd_freed = false;
		unlocks = 0;
		in_connect = true;
		conn = ws_connect(&t);
		in_connect = false;
		freed += cmd_freed;
		if (conn != (uint32_t) i + 1)
		{
			fprintf(stderr, "ws_connect returned %u, expected %d: it read its freed command\n",
					conn, i + 1);
			return 1;
		}
	}
	ws_stop(2000);
	journal_close();
	if (freed == 0)
	{
		fprintf(stderr, "the network thread never freed a command in time: nothing was tested\n");
		return 3;
	}
	printf("ok (%d of 3 commands freed before ws_connect returned)\n", freed);
	return 0;
}
