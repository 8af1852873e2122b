/* fuzz-sources: src/net/webhook/request_line.c */
/*
 * fuzz_request_line.c — the webhook receiver's check of a new connection's
 * first bytes (src/net/webhook/request_line.c), on arbitrary bytes.
 *
 * Besides no crash or UB, what the gate relies on:
 *  - a verdict other than PARTIAL holds for every longer input (the gate
 *    decides on what has come so far), and every shorter prefix than the
 *    deciding byte is PARTIAL;
 *  - OK means the line is METHOD SP TARGET SP HTTP/1.d CRLF after empty
 *    lines, checked here independently;
 *  - the same bytes behind "POST /x HTTP/1.1\r\n" never change that line's
 *    verdict, and a line built from the input's visible bytes is OK.
 */
#include "net/webhook/request_line.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
fail(const char *what)
{
	fprintf(stderr, "%s\n", what);
	abort();
}

/* The OK case re-checked by other means: split on the two spaces. */
static bool
plausible(const char *b, size_t end)
{
	size_t		i = 0;
	const char *sp1;
	const char *sp2;
	const char *line;
	size_t		n;

	while (i + 1 < end && b[i] == '\r' && b[i + 1] == '\n')
		i += 2;
	line = b + i;
	n = end - i;
	if (n < 2 || line[n - 2] != '\r' || line[n - 1] != '\n')
		return false;
	n -= 2;
	sp1 = memchr(line, ' ', n);
	if (sp1 == NULL || sp1 == line)
		return false;
	sp2 = memchr(sp1 + 1, ' ', n - (sp1 + 1 - line));
	if (sp2 == NULL || sp2 == sp1 + 1)
		return false;
	if (line + n - (sp2 + 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
		sp2[8] < '0' || sp2[8] > '9')
		return false;
	for (const char *p = line; p < line + n; p++)
		if ((unsigned char) *p <= 0x20 && p != sp1 && p != sp2)
			return false;
		else if ((unsigned char) *p >= 0x7f)
			return false;
	return memchr(sp2 + 1, ' ', 8) == NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an allocation of exactly size bytes, so ASAN sees any read past it */
	char	   *buf = malloc(size ? size : 1);
	size_t		end = 0;
	size_t		e2 = 0;
	RequestLineVerdict v;

	memcpy(buf, data, size);
	v = request_line_check(buf, size, &end);
	if (end > size)
		fail("end past the input");
	if (v == REQUEST_LINE_PARTIAL && end != size)
		fail("PARTIAL with end short of the input");
	if (v != REQUEST_LINE_PARTIAL)
	{
		/* decided at byte end (BAD) or just before it (OK, VERSION): prefixes agree */
		size_t		decided = v == REQUEST_LINE_BAD ? end + 1 : end;

		if (request_line_check(buf, decided, &e2) != v || e2 != end)
			fail("the verdict changed with fewer bytes after the deciding one");
		if (decided > 0 && request_line_check(buf, decided - 1, &e2) != REQUEST_LINE_PARTIAL)
			fail("a prefix before the deciding byte was decided");
	}
	if (v == REQUEST_LINE_OK && !plausible(buf, end))
		fail("OK for a line that is not METHOD SP TARGET SP HTTP/1.x CRLF");
	free(buf);

	/* a good line followed by these bytes: still OK, decided by the line alone */
	{
		static const char good[] = "POST /x HTTP/1.1\r\n";
		size_t		glen = strlen(good);
		char	   *b = malloc(glen + size);

		memcpy(b, good, glen);
		memcpy(b + glen, data, size);
		if (request_line_check(b, glen + size, &e2) != REQUEST_LINE_OK || e2 != glen)
			fail("bytes after a good line changed its verdict");
		free(b);
	}
	/* the input's visible bytes as a target: OK */
	{
		char	   *b = malloc(size + 32);
		size_t		n = 0;

		n += (size_t) sprintf(b, "GET /");
		for (size_t i = 0; i < size; i++)
			if (data[i] > 0x20 && data[i] < 0x7f)
				b[n++] = (char) data[i];
		memcpy(b + n, " HTTP/1.0\r\n", 11);
		n += 11;
		if (request_line_check(b, n, &e2) != REQUEST_LINE_OK || e2 != n)
			fail("a line with a visible-ASCII target was not OK");
		free(b);
	}
	return 0;
}
