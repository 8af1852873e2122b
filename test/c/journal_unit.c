/*
 * journal_unit.c — src/net/journal/journal.c on its own, no PostgreSQL: append,
 * reopen and replay in order, recycling, a copied directory, memory-only
 * mode, and open/close cycles that leak nothing (as a fuzzer runs it).
 * Built and run by test/test_durability.py with the directory as argv[1].
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/journal/journal.h"

#define N 1000

static int	failures;

#define CHECK(cond, ...) do { if (!(cond) && failures++ < 20) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static size_t
size_of(int i)
{
	return 50 + (i * 7919) % 3000;
}

static void
fill(char *buf, int i, size_t len)
{
	for (size_t k = 0; k < len; k++)
		buf[k] = (char) ('a' + (i + k) % 26);
}

static int
count_fds(void)
{
	DIR		   *d = opendir("/proc/self/fd");
	int			n = 0;

	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int
count_segments(const char *dir)
{
	DIR		   *d = opendir(dir);
	struct dirent *de;
	int			n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += strstr(de->d_name, ".seg") != NULL;
	closedir(d);
	return n;
}

/* Reads everything from pos on; checks it is records from..N-1 in order. */
static uint64_t
read_all_from(uint64_t pos, int from, uint64_t *ends)
{
	int			i = from;
	char		buf[4096];

	for (;;)
	{
		uint64_t	next;
		JournalRecord    *ev = journal_read(pos, 64 * 1024, 100, &next);

		pos = next;
		if (!ev)
			break;
		while (ev)
		{
			JournalRecord    *n = ev->next;

			CHECK(i < N, "more records than written");
			if (i < N)
			{
				fill(buf, i, size_of(i));
				CHECK(ev->len == size_of(i) && memcmp(ev->data, buf, ev->len) == 0,
					  "record %d: wrong bytes (len %zu)", i, ev->len);
				CHECK(ev->source == (uint8_t) (i % 3), "record %d: source %d", i, ev->source);
				CHECK(ev->binary == (i % 5 == 0), "record %d: binary flag", i);
				CHECK(ev->at_us == 1000 + i, "record %d: arrival time", i);
				if (ends)
					ends[i] = ev->jend;
			}
			i++;
			free(ev->data);
			free(ev);
			ev = n;
		}
	}
	CHECK(i == N, "read %d records up to %d", i - from, N);
	return pos;
}

int
main(int argc, char **argv)
{
	char		err[512],
				dir[1024],
				copy[1100],
				cmd[2400],
				line[512],
				id[64];
	char		buf[4096];
	uint64_t	ends[N],
				last = 0;
	bool		warning;
	int			fds;

	if (argc < 2)
		return 2;
	snprintf(dir, sizeof(dir), "%s/j", argv[1]);

	/* append, durable */
	CHECK(journal_open(dir, 4 << 20, 64 * 1024, true, err, sizeof(err)), "open: %s", err);
	snprintf(id, sizeof(id), "%s", journal_id());
	CHECK(strlen(id) == 32, "journal_id %s", id);
	for (int i = 0; i < N; i++)
	{
		fill(buf, i, size_of(i));
		last = journal_submit((JournalSource) (i % 3), i % 5 == 0 ? JOURNAL_BINARY : 0, 1000 + i,
							  buf, size_of(i), size_of(i));
		CHECK(last > 0, "submit %d refused", i);
	}
	CHECK(journal_wait_durable(last, 5000), "not durable in 5 s");
	/* this process reads them, partly from its cache (64 kB), the rest from the files */
	read_all_from(journal_start(), 0, ends);
	journal_close();
	CHECK(journal_submit(JOURNAL_SRC_WEBHOOK, 0, 1, "x", 1, 1) == 0, "a submit after close was taken");

	/* reopened (a restart): the same identity, everything replayed in order */
	CHECK(journal_open(dir, 4 << 20, 64 * 1024, true, err, sizeof(err)), "reopen: %s", err);
	CHECK(strcmp(journal_id(), id) == 0, "identity changed on reopen");
	while (journal_take_report(line, sizeof(line), &warning))
		CHECK(!warning, "unexpected warning: %s", line);
	read_all_from(journal_start(), 0, NULL);
	/* stored up to the 700th: segments wholly below are gone, the rest still reads */
	{
		int			before = count_segments(dir);

		journal_stored(ends[699]);
		CHECK(count_segments(dir) < before, "no segment recycled (%d)", before);
		read_all_from(ends[699], 700, NULL);
	}
	/* a new record after a restart goes past everything handed out before */
	{
		uint64_t	p = journal_submit(JOURNAL_SRC_REST, 0, 1, "{}", 2, 2);

		CHECK(p > ends[N - 1], "position %llu reused (last %llu)", (unsigned long long) p,
			  (unsigned long long) ends[N - 1]);
	}
	journal_close();

	/* a copy (new inodes): recognised, discarded, a new identity */
	snprintf(copy, sizeof(copy), "%s/copy", argv[1]);
	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s'", dir, copy);
	CHECK(system(cmd) == 0, "cp failed");
	CHECK(journal_open(copy, 4 << 20, 64 * 1024, true, err, sizeof(err)), "open copy: %s", err);
	CHECK(strcmp(journal_id(), id) != 0, "the copy kept the identity");
	{
		bool		told = false;
		uint64_t	next;

		while (journal_take_report(line, sizeof(line), &warning))
			told |= strstr(line, "copied from another server") != NULL;
		CHECK(told, "the copy was not reported");
		CHECK(journal_read(journal_start(), 1 << 20, 100, &next) == NULL, "the copy replayed frames");
	}
	journal_close();

	/* memory only */
	CHECK(!journal_open(NULL, 1 << 20, 1 << 20, false, err, sizeof(err)), "memory-only open");
	CHECK(journal_id() == NULL, "memory-only has an id");
	CHECK(journal_submit(JOURNAL_SRC_WEBSOCKET, 0, 1, "{}", 2, 2) > 0, "memory-only submit");
	journal_close();

	/* open/close cycles leak no descriptor */
	fds = count_fds();
	for (int i = 0; i < 50; i++)
	{
		CHECK(journal_open(dir, 4 << 20, 64 * 1024, false, err, sizeof(err)), "cycle open: %s", err);
		while (journal_take_report(line, sizeof(line), &warning))
			;
		journal_close();
	}
	CHECK(count_fds() == fds, "descriptors leaked: %d then %d", fds, count_fds());

	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
