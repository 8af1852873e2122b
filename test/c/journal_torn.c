/*
 * journal_torn.c — a write to the journal that stops part-way (a full disk)
 * and whose partial record then cannot be cut off (ftruncate fails): both
 * are reported, the message is counted lost, the segment takes no more
 * records (nothing is written over what is left of the partial one), and
 * what was journaled before and after reads back whole, at once and after a
 * restart.  journal.c's pwritev() and ftruncate() are wrapped here
 * (-Wl,--wrap=pwritev,--wrap=ftruncate).  Built and run by
 * test/test_durability.py with a directory as argv[1].
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net/journal/journal.h"

static int	failures;

#define CHECK(cond, ...) do { if (!(cond) && failures++ < 20) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* On: the next record is written only in part, and cutting it off fails. */
static bool torn;

ssize_t		__real_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off);
ssize_t		__wrap_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off);
int			__real_ftruncate(int fd, off_t len);
int			__wrap_ftruncate(int fd, off_t len);

ssize_t
__wrap_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	struct iovec part[2];

	if (!torn || iovcnt != 2)
		return __real_pwritev(fd, iov, iovcnt, off);
	/* the header and half the bytes: a short write, as on a full disk */
	part[0] = iov[0];
	part[1] = iov[1];
	part[1].iov_len /= 2;
	return __real_pwritev(fd, part, 2, off);
}

int
__wrap_ftruncate(int fd, off_t len)
{
	if (torn)
	{
		errno = EIO;
		return -1;
	}
	return __real_ftruncate(fd, len);
}

static void
fill(char *buf, char c, size_t len)
{
	memset(buf, c, len);
}

/* Everything from the start: exactly the records of sizes[] filled with chars[]. */
static void
read_back(const char *when, const size_t *sizes, const char *chars, int n)
{
	uint64_t	pos = journal_start();
	int			i = 0;
	char		buf[4096];

	for (;;)
	{
		uint64_t	next;
		JournalRecord *ev = journal_read(pos, 64 * 1024, 100, &next);

		pos = next;
		if (!ev)
			break;
		while (ev)
		{
			JournalRecord *nx = ev->next;

			CHECK(i < n, "%s: more records than journaled", when);
			if (i < n)
			{
				fill(buf, chars[i], sizes[i]);
				CHECK(ev->len == sizes[i] && memcmp(ev->data, buf, ev->len) == 0,
					  "%s: record %d: wrong bytes (len %zu)", when, i, ev->len);
			}
			i++;
			journal_record_free(ev);
			ev = nx;
		}
	}
	CHECK(i == n, "%s: read %d records, journaled %d", when, i, n);
}

int
main(int argc, char **argv)
{
	char		err[512],
				dir[1024],
				line[512],
				buf[4096];
	bool		warning,
				told_write = false,
				told_cut = false,
				told_torn = false;
	const size_t sizes[] = {300, 100};
	const char	chars[] = {'a', 'c'};
	uint64_t	a_end,
				c_end;

	if (argc < 2)
		return 2;
	snprintf(dir, sizeof(dir), "%s/j", argv[1]);
	CHECK(journal_open(dir, 4 << 20, 64 * 1024, false, err, sizeof(err)), "open: %s", err);

	fill(buf, 'a', 300);
	a_end = journal_submit(JOURNAL_SRC_WEBSOCKET, 0, 1, buf, 300, 300);
	CHECK(a_end > 0, "the first record was refused");

	/* the second is written in part, and stays so */
	torn = true;
	fill(buf, 'b', 2000);
	CHECK(journal_submit(JOURNAL_SRC_WEBSOCKET, 0, 2, buf, 2000, 2000) == 0,
		  "a record written in part was taken");
	torn = false;
	CHECK(journal_frames_lost() == 1, "lost %llu, not 1", (unsigned long long) journal_frames_lost());
	while (journal_take_report(line, sizeof(line), &warning))
	{
		told_write |= warning && strstr(line, "could not write to the journal") != NULL;
		told_cut |= warning && strstr(line, "could not cut a partly written record off") != NULL;
	}
	CHECK(told_write, "the short write was not reported");
	CHECK(told_cut, "the failed cut was not reported");

	/* the next goes past what is left of the partial record, to a new segment */
	fill(buf, 'c', 100);
	c_end = journal_submit(JOURNAL_SRC_WEBSOCKET, 0, 3, buf, 100, 100);
	CHECK(c_end > 0, "the record after the torn one was refused");
	CHECK(c_end - 32 - 100 >= a_end + 32 + 1000,
		  "written over the partial record: at %llu, the partial one from %llu to %llu",
		  (unsigned long long) (c_end - 132), (unsigned long long) a_end,
		  (unsigned long long) (a_end + 1032));
	read_back("at once", sizes, chars, 2);
	journal_close();

	/* a restart: recovery cuts the partial record and keeps the rest */
	CHECK(journal_open(dir, 4 << 20, 64 * 1024, false, err, sizeof(err)), "reopen: %s", err);
	while (journal_take_report(line, sizeof(line), &warning))
		told_torn |= warning && strstr(line, "at its end") != NULL;
	CHECK(told_torn, "recovery did not report the partial record");
	read_back("after a restart", sizes, chars, 2);
	journal_close();

	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
