/*
 * spool_import.c — the frames a 1.0 server spooled, carried across the upgrade.
 *
 * 1.0 kept what it could not store yet in $PGDATA/voipbin.spool and replayed
 * it at its next start; a 1.1 worker reads only its journal, so without this
 * an upgrade would lose whatever 1.0 had spooled (a lock, a stop while the
 * database could not take events).  At start, before the network threads
 * receive anything (arrival order is kept: 1.0's frames are older), each
 * record still unstored becomes a journal record, source websocket as it
 * was; once they are on disk in the journal the file is removed.  If the
 * journal has no room for all of them (voipbin.spool_limit), 1.0's own .pos
 * file records how far the import got and the next start goes on from
 * there, without counting anything as lost.
 *
 * Exactly once across crashes: before its first record goes into the
 * journal, a marker file (voipbin.spool.importing, fsync'd) says which
 * journal, where it ended and where in 1.0's file the import began; it is
 * removed, durably, only once .pos (or the file's removal) says the records
 * are taken.  A start that finds it counts the records the journal holds
 * from that end on (those that reached its disk before the crash) and skips
 * as many of the file's: a crash between the journal's fsync and the .pos
 * write imports nothing twice, not even a frame that becomes a dead letter.
 * The network threads start only after the import, so what the journal holds
 * past that end is the import's alone.
 *
 * On a standby the file is a copy of its primary's (pg_basebackup copies
 * the data directory; a 1.0 standby never receives frames): those frames
 * are the primary's to store, so it is renamed aside, never imported.
 */
#include "voipbin.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/fd.h"

#include "ingest/spool_import.h"
#include "base/fault.h"
#include "base/settings.h"
#include "net/journal/journal.h"
#include "net/journal/record.h"
#include "net/journal/spool_1_0.h"

/* How long the imported records may take to be fsync'd. */
#define IMPORT_DURABLE_WAIT_MS 60000

#define IMPORT_MARKER_FILE "voipbin.spool.importing"

typedef struct Marker
{
	char		journal[64];	/* journal_id() of the journal imported into */
	uint64		journal_end;	/* journal_end() before the first record */
	uint64		spool_from;		/* 1.0's stored offset when the import began */
} Marker;

typedef struct Import
{
	uint64		frames;
	uint64_t	last_pos;		/* journal position after the last record submitted */
	bool		full;			/* stopped: the journal had no room */
	bool		failed;			/* stopped: the journal refused one */
} Import;

static bool
import_one(void *arg, bool binary, int64_t at_us, char *data, size_t len, uint64_t orig_len)
{
	Import	   *im = arg;
	unsigned	flags = (binary ? JOURNAL_BINARY : 0) | (orig_len > len ? JOURNAL_OVERSIZE : 0);
	uint64_t	pos;

	if (!journal_has_room(len))
	{
		im->full = true;
		free(data);
		return false;
	}
	pos = journal_submit_owned(JOURNAL_SRC_WEBSOCKET, flags, at_us, data, len, orig_len);
	if (pos == 0)
	{
		im->failed = true;
		return false;
	}
	im->last_pos = pos;
	im->frames++;
	return true;
}

static bool
take_none(void *arg, bool binary, int64_t at_us, char *data, size_t len, uint64_t orig_len)
{
	free(data);
	return false;
}

/* Takes the first *(uint64 *) arg records, no more. */
static bool
skip_some(void *arg, bool binary, int64_t at_us, char *data, size_t len, uint64_t orig_len)
{
	uint64	   *left = arg;

	free(data);
	if (*left == 0)
		return false;
	(*left)--;
	return true;
}

/* Where in 1.0's file the records not taken begin (what its .pos says). */
static bool
spool_from(const char *path, uint64 *from, char *err, size_t errlen)
{
	uint64_t	taken_end,
				whole_end;

	if (!spool_1_0_read(path, 0, take_none, NULL, &taken_end, &whole_end, err, errlen))
		return false;
	*from = taken_end;
	return true;
}

/* Records the journal holds from position from on. */
static uint64
journal_records_from(uint64 from)
{
	uint64		n = 0;

	for (;;)
	{
		uint64		next;
		JournalRecord    *ev = journal_read(from, 4 * 1024 * 1024, 1000, &next);

		if (ev == NULL)
			break;
		while (ev)
		{
			JournalRecord    *e = ev->next;

			journal_record_free(ev);
			n++;
			ev = e;
		}
		from = next;
	}
	return n;
}

/* Written before the import's first record: durable (file and directory) or false. */
static bool
marker_write(const char *mpath, const Marker *m)
{
	char	   *tmp = psprintf("%s.tmp", mpath);
	char	   *text = psprintf("%s %llu %llu\n", m->journal,
								(unsigned long long) m->journal_end,
								(unsigned long long) m->spool_from);
	int			fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool		ok;

	ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t) strlen(text) && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	return ok && durable_rename(tmp, mpath, WARNING) == 0;
}

static bool
marker_read(const char *mpath, Marker *m)
{
	char		buf[256];
	unsigned long long je,
				sf;
	int			fd = open(mpath, O_RDONLY | O_CLOEXEC);
	ssize_t		n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	if (sscanf(buf, "%63s %llu %llu", m->journal, &je, &sf) != 3)
		return false;
	m->journal_end = je;
	m->spool_from = sf;
	return true;
}

/*
 * A marker left by an import a crash interrupted: the records it got into
 * the journal are skipped in 1.0's file, so that the import goes on after
 * them.  Any other marker (the file already taken or gone, another journal)
 * is stale and goes.
 */
static void
resume_interrupted(const char *path, const char *mpath)
{
	Marker		m;
	uint64		from;
	char		err[512];

	if (!marker_read(mpath, &m))
	{
		(void) durable_unlink(mpath, WARNING);
		return;
	}
	if (access(path, F_OK) == 0 && journal_id() != NULL && strcmp(m.journal, journal_id()) == 0 &&
		spool_from(path, &from, err, sizeof(err)) && from == m.spool_from)
	{
		uint64		journaled = journal_records_from(m.journal_end);
		uint64		left = journaled;
		uint64_t	taken_end,
					whole_end;

		if (journaled > 0)
		{
			if (!spool_1_0_read(path, 0, skip_some, &left, &taken_end, &whole_end, err, sizeof(err)) ||
				!spool_1_0_mark(path, taken_end, err, sizeof(err)))
			{
				/* the marker stays: the next start tries again, rather than import twice */
				ereport(WARNING,
						(errmsg("voipbin: an interrupted import of voipbin 1.0's spool file cannot go on: %s", err),
						 errhint("The worker tries again at its next start.")));
				return;
			}
			ereport(LOG,
					(errmsg_plural("voipbin: the import of voipbin 1.0's spool file \"%s\" was interrupted; its %llu frame already in the journal is not imported again",
								   "voipbin: the import of voipbin 1.0's spool file \"%s\" was interrupted; its %llu frames already in the journal are not imported again",
								   journaled,
								   path, (unsigned long long) journaled)));
		}
	}
	(void) durable_unlink(mpath, WARNING);
}

void
import_spool_1_0(void)
{
	char	   *path = psprintf("%s/%s", DataDir, SPOOL_1_0_FILE);
	char	   *pos_path = psprintf("%s.pos", path);
	char	   *mpath = psprintf("%s/%s", DataDir, IMPORT_MARKER_FILE);
	char		err[512];
	Marker		marker;
	struct stat st;
	Import		im;
	uint64_t	taken_end,
				whole_end;

	err[0] = '\0';
	if (access(mpath, F_OK) == 0)
	{
		if (RecoveryInProgress())
			(void) durable_unlink(mpath, WARNING);	/* the primary's, copied */
		else
			resume_interrupted(path, mpath);
		if (access(mpath, F_OK) == 0)
			return;				/* said why: importing now could import twice */
	}
	if (stat(path, &st) != 0)
	{
		(void) unlink(pos_path);	/* left by a crash between the two unlinks */
		return;
	}
	if (RecoveryInProgress())
	{
		char	   *aside = psprintf("%s.copied", path);

		if (st.st_size > 0 && rename(path, aside) == 0)
			ereport(LOG,
					(errmsg("voipbin: this standby's data directory has voipbin 1.0's spool file \"%s\", a copy of its primary's: renamed to \"%s\", not imported",
							path, aside),
					 errdetail("Its frames are the primary's to store; importing them here could store them twice.")));
		else if (st.st_size == 0)
			(void) spool_1_0_remove(path, err, sizeof(err));
		return;
	}
	if (journal_id() == NULL)
	{
		ereport(WARNING,
				(errmsg("voipbin: voipbin 1.0's spool file \"%s\" is not imported: the journal runs in memory only", path),
				 errhint("Fix voipbin.spool_directory and restart the worker: the file is imported then.")));
		return;
	}

	memset(&marker, 0, sizeof(marker));
	strlcpy(marker.journal, journal_id(), sizeof(marker.journal));
	marker.journal_end = journal_end();
	if (!spool_from(path, &marker.spool_from, err, sizeof(err)) || !marker_write(mpath, &marker))
	{
		ereport(WARNING,
				(errmsg("voipbin: could not import voipbin 1.0's spool file: %s",
						err[0] ? err : "the import's marker file could not be written"),
				 errhint("The worker tries again at its next start.")));
		return;
	}
	memset(&im, 0, sizeof(im));
	if (!spool_1_0_read(path, (size_t) voipbin_max_frame_size, import_one, &im,
						&taken_end, &whole_end, err, sizeof(err)))
	{
		ereport(WARNING,
				(errmsg("voipbin: could not import voipbin 1.0's spool file: %s", err),
				 errhint("The worker tries again at its next start.")));
		return;
	}
	if (im.frames > 0 && !journal_wait_durable(im.last_pos, IMPORT_DURABLE_WAIT_MS))
	{
		/* not known to be on disk: keep the file, so nothing depends on the journal alone */
		ereport(WARNING,
				(errmsg_plural("voipbin: voipbin 1.0's spool file \"%s\": its %llu frame is journaled but not yet on disk; the file is kept",
							   "voipbin: voipbin 1.0's spool file \"%s\": its %llu frames are journaled but not yet on disk; the file is kept",
							   im.frames,
							   path, (unsigned long long) im.frames),
				 errdetail("The next start imports those that did not reach the disk; the marker file says how many did.")));
		return;
	}
	if (im.frames > 0 && voipbin_fault("spool-import-journaled"))
		(void) kill(getpid(), SIGKILL);
	if (taken_end < whole_end)
	{
		if (!spool_1_0_mark(path, taken_end, err, sizeof(err)))
		{
			/* the marker stays: the next start skips what is in the journal */
			ereport(WARNING, (errmsg("voipbin: %s", err)));
			return;
		}
		(void) durable_unlink(mpath, WARNING);
		ereport(WARNING,
				(errmsg_plural("voipbin: imported %llu frame of voipbin 1.0's spool file \"%s\"; the rest stays in it: %s",
							   "voipbin: imported %llu frames of voipbin 1.0's spool file \"%s\"; the rest stays in it: %s",
							   im.frames,
							   (unsigned long long) im.frames, path,
						im.full ? "the journal is full (voipbin.spool_limit)" : "the journal could not take them"),
				 errhint("Restart the worker once the journal has room (or raise voipbin.spool_limit): the import goes on from there.")));
		return;
	}
	if (!spool_1_0_remove(path, err, sizeof(err)))
	{
		if (!spool_1_0_mark(path, whole_end, err, sizeof(err)))
		{
			/* the marker stays: the next start skips what is in the journal */
			ereport(WARNING,
					(errmsg("voipbin: imported voipbin 1.0's spool file \"%s\" but could neither remove it nor mark it imported: %s",
							path, err),
					 errhint("The next start does not import its frames again; remove the file by hand once voipbin_status() shows them stored.")));
			return;
		}
	}
	(void) durable_unlink(mpath, WARNING);
	if (im.frames > 0)
		ereport(LOG,
				(errmsg_plural("voipbin: imported %llu frame that voipbin 1.0 had spooled in \"%s\" into the journal; the file is removed",
							   "voipbin: imported %llu frames that voipbin 1.0 had spooled in \"%s\" into the journal; the file is removed",
							   im.frames,
							   (unsigned long long) im.frames, path)));
}
