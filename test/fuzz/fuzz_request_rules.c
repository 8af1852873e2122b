/* fuzz-sources: src/requests/request_rules.c */
/*
 * fuzz_request_rules.c — what voipbin_request() checks a path with and how
 * the worker classifies it (src/requests/request_rules.c), on arbitrary
 * bytes: input = one byte choosing the method, then the path.
 *
 * Besides no crash or UB, what the outbox relies on:
 *  - a path request_path_problem() accepts starts with "/", has no byte
 *    at or below a space, no DEL, "#" or "\\", no "://", no "." or ".."
 *    segment, and no accesskey= or token= parameter (checked here
 *    independently); a refused one gets a sentence;
 *  - request_kind() depends on the path only up to its query: a query added
 *    never changes the class;
 *  - GET is always safe; an unsafe request's verdict is RETRY only when it
 *    was never sent or refused with a 429, whatever the answer;
 *  - the backoff stays within 1 s .. 300 s.
 */
#include "requests/request_rules.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "post", ""};

static void
fail(const char *what, const char *path)
{
	fprintf(stderr, "%s: \"%s\"\n", what, path);
	abort();
}

/* The accepted-path properties, by other means. */
static void
check_accepted(const char *path)
{
	size_t		len = strlen(path);
	const char *q;

	if (path[0] != '/')
		fail("accepted without a leading /", path);
	if (len > 2048)
		fail("accepted longer than 2048", path);
	for (const unsigned char *s = (const unsigned char *) path; *s; s++)
		if (*s <= ' ' || *s == 0x7f || *s == '#' || *s == '\\')
			fail("accepted with a forbidden byte", path);
	if (strstr(path, "://") || strncmp(path, "//", 2) == 0)
		fail("accepted naming a host", path);
	for (const char *s = path; (s = strchr(s, '/')) != NULL; s++)
	{
		size_t		seg = strcspn(s + 1, "/?");

		if ((seg == 1 && s[1] == '.') || (seg == 2 && s[1] == '.' && s[2] == '.'))
		{
			/* a dot segment in the query is no segment */
			q = strchr(path, '?');
			if (q == NULL || s < q)
				fail("accepted with a dot segment", path);
		}
	}
	if ((q = strchr(path, '?')) != NULL)
		for (const char *p = q; p != NULL; p = strchr(p + 1, '&'))
			if (strncasecmp(p + 1, "accesskey=", 10) == 0 || strncasecmp(p + 1, "token=", 6) == 0)
				fail("accepted with the credential", path);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *path;
	char	   *with_query;
	const char *method;
	const char *problem;
	RequestKind kind;

	if (size < 1 || size > 4096)
		return 0;
	method = methods[data[0] % (sizeof(methods) / sizeof(methods[0]))];
	path = malloc(size);
	memcpy(path, data + 1, size - 1);
	path[size - 1] = '\0';

	problem = request_path_problem(path);
	if (problem == NULL)
		check_accepted(path);
	else if (problem[0] == '\0')
		fail("an empty sentence", path);
	(void) request_method_known(method);

	kind = request_kind(method, path);
	if (strcmp(method, "GET") == 0 && kind != REQ_SAFE)
		fail("a GET not safe", path);

	/* a query never changes the class (a path that has none yet) */
	if (strchr(path, '?') == NULL && strchr(path, '#') == NULL)
	{
		size_t		n = strlen(path);

		with_query = malloc(n + 16);
		memcpy(with_query, path, n);
		memcpy(with_query + n, "?hangup=/stop", 14);
		if (request_kind(method, with_query) != kind)
			fail("a query changed the class", with_query);
		free(with_query);
	}

	/* the invariant of the outbox, over the input's own status and reason */
	{
		int			status = size >= 3 ? 100 + (data[1] | (data[2] << 8)) % 500 : 500;
		const char *reason = size >= 4 && data[3] % 2 ? path : NULL;

		for (int t = ATTEMPT_ANSWERED; t <= ATTEMPT_NO_ANSWER; t++)
			for (int e = 0; e < 2; e++)
			{
				RequestVerdict v = request_verdict(kind, method, path, (AttemptTransport) t,
												   t == ATTEMPT_ANSWERED ? status : 0, reason, e);

				if (v < VERDICT_DONE || v > VERDICT_UNKNOWN)
					fail("a verdict out of range", path);
				if (kind == REQ_UNSAFE && v == VERDICT_RETRY &&
					!(t == ATTEMPT_NOT_SENT || (t == ATTEMPT_ANSWERED && status == 429)))
					fail("an unsafe request retried after it may have arrived", path);
			}
	}

	{
		int			attempts = size >= 5 ? (int) data[4] * (int) data[size - 1] : 1;
		long		ra = size >= 6 ? (long) (int8_t) data[5] * 7 : 0;
		long		ms = request_backoff_ms(attempts < 1 ? 1 : attempts, ra);

		if (ms < 1000 || ms > 300000)
			fail("a backoff out of range", path);
	}
	free(path);
	return 0;
}
