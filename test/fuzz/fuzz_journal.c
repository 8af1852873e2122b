/* fuzz-sources: src/net/journal/journal.c */
/*
 * fuzz_journal.c — journal recovery on arbitrary bytes: what a crash, a
 * torn write, a full disk or a bad sector leaves in a segment file.
 *
 * A journal directory with a valid identity is made once; each input is
 * written into it as segment file(s), journal_open() recovers them,
 * journal_read() returns all that survived and journal_close() ends it.
 * The first input byte chooses:
 *   bit 0  split the rest into two segments (the second at the first's end)
 *   bit 1  recompute the CRC of every record found, so the fuzzer gets past
 *          the checksum into the length, flag and source fields behind it
 *
 * Besides no crash, leak or UB: every event read back is a frame whose
 * journal range lies inside what was written, and journal_close() leaves
 * no file descriptor open.
 */
#include "net/journal/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HDR_SIZE 32
#define REC_MAGIC 0x4a4e4256u

static char dir[4096];
static int	baseline_fds;

static int
open_fds(void)
{
	DIR		   *d = opendir("/proc/self/fd");
	int			n = 0;

	while (d && readdir(d) != NULL)
		n++;
	if (d)
		closedir(d);
	return n;
}

static void
remove_segments(void)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d)) != NULL)
	{
		size_t		n = strlen(e->d_name);

		if (n > 4 && strcmp(e->d_name + n - 4, ".seg") == 0)
			unlinkat(dirfd(d), e->d_name, 0);
	}
	if (d)
		closedir(d);
}

static void
write_segment(uint64_t base, const uint8_t *data, size_t len)
{
	char		path[128];
	int			fd;

	snprintf(path, sizeof(path), "%s/%016llx.seg", dir, (unsigned long long) base);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t) len))
		abort();
	close(fd);
}

static void
fix_crcs(uint8_t *p, size_t n)
{
	size_t		off = 0;

	while (off + HDR_SIZE <= n)
	{
		uint32_t	magic,
					len,
					crc;

		memcpy(&magic, p + off, 4);
		if (magic != REC_MAGIC)
		{
			off++;
			continue;
		}
		memcpy(&len, p + off + 8, 4);
		if (len > n - off - HDR_SIZE)
			break;
		crc = journal_crc32c(0, p + off + 8, HDR_SIZE - 8);
		crc = journal_crc32c(crc, p + off + HDR_SIZE, len);
		memcpy(p + off + 4, &crc, 4);
		off += HDR_SIZE + len;
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char		err[256];

	const char *tmp = getenv("TMPDIR");

	/* test/fuzz.sh points TMPDIR into its work directory, which it removes */
	snprintf(dir, sizeof(dir), "%s/voipbin-fuzz-journal-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	/* a fresh directory: recovery writes journal.meta, the identity */
	if (!journal_open(dir, 64 << 20, 1 << 20, false, err, sizeof(err)))
	{
		fprintf(stderr, "journal_open(%s): %s\n", dir, err);
		abort();
	}
	journal_close();
	baseline_fds = open_fds();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t    *copy;
	size_t		n;
	size_t		first;
	char		err[256];
	char		report[512];
	bool		warning;
	uint64_t	from,
				next;
	JournalRecord    *ev;

	if (size == 0)
		return 0;
	n = size - 1;
	copy = malloc(n ? n : 1);
	memcpy(copy, data + 1, n);
	if (data[0] & 2)
		fix_crcs(copy, n);
	first = (data[0] & 1) ? n / 2 : n;
	remove_segments();
	write_segment(0, copy, first);
	if (first < n)
		write_segment(first, copy + first, n - first);

	if (!journal_open(dir, 64 << 20, 1 << 20, false, err, sizeof(err)))
	{
		fprintf(stderr, "journal_open(%s) after writing %zu bytes: %s\n", dir, n, err);
		abort();
	}
	from = journal_start();
	while ((ev = journal_read(from, 1 << 20, 1000, &next)) != NULL)
	{
		while (ev)
		{
			JournalRecord    *e = ev;

			ev = ev->next;
			if (e->jend <= e->jpos || e->jpos < from ||
				e->jend > (uint64_t) n || e->len > (uint64_t) n)
			{
				fprintf(stderr, "journal_read gave source %d, [%llu, %llu) of %zu bytes, len %zu\n",
						(int) e->source, (unsigned long long) e->jpos,
						(unsigned long long) e->jend, n, e->len);
				abort();
			}
			journal_record_free(e);
		}
		if (next <= from)
			break;
		from = next;
	}
	while (journal_take_report(report, sizeof(report), &warning))
		;
	journal_close();
	free(copy);
	/* the worker opens and closes the journal at each start: no fd may stay */
	if (open_fds() != baseline_fds)
	{
		fprintf(stderr, "journal_close() left %d file descriptor(s) open\n",
				open_fds() - baseline_fds);
		abort();
	}
	return 0;
}
