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
 * Exactly once, except for one window: a crash between the journal's fsync
 * and the .pos write imports those records again (their events are then
 * duplicates the unique index drops).
 *
 * On a standby the file is a copy of its primary's (pg_basebackup copies
 * the data directory; a 1.0 standby never receives frames): those frames
 * are the primary's to store, so it is renamed aside, never imported.
 */
#include "voipbin.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "miscadmin.h"

#include "spool_import.h"
#include "net/journal.h"
#include "net/spool_1_0.h"

/* How long the imported records may take to be fsync'd. */
#define IMPORT_DURABLE_WAIT_MS 60000

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

void
import_spool_1_0(void)
{
	char	   *path = psprintf("%s/%s", DataDir, SPOOL_1_0_FILE);
	char	   *pos_path = psprintf("%s.pos", path);
	char		err[512];
	struct stat st;
	Import		im;
	uint64_t	taken_end,
				whole_end;

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
				(errmsg("voipbin: voipbin 1.0's spool file \"%s\": its %llu frame(s) are journaled but not yet on disk; the file is kept",
						path, (unsigned long long) im.frames),
				 errdetail("The next start imports them again; their events are then duplicates the unique index drops.")));
		return;
	}
	if (taken_end < whole_end)
	{
		if (!spool_1_0_mark(path, taken_end, err, sizeof(err)))
			ereport(WARNING, (errmsg("voipbin: %s", err)));
		ereport(WARNING,
				(errmsg("voipbin: imported %llu frame(s) of voipbin 1.0's spool file \"%s\"; the rest stays in it: %s",
						(unsigned long long) im.frames, path,
						im.full ? "the journal is full (voipbin.spool_limit)" : "the journal could not take them"),
				 errhint("Restart the worker once the journal has room (or raise voipbin.spool_limit): the import goes on from there.")));
		return;
	}
	if (!spool_1_0_remove(path, err, sizeof(err)))
	{
		/* a later start would import them twice: say so loudly */
		if (!spool_1_0_mark(path, whole_end, err, sizeof(err)))
			ereport(WARNING,
					(errmsg("voipbin: imported voipbin 1.0's spool file \"%s\" but could neither remove it nor mark it imported: %s",
							path, err),
					 errhint("Remove the file by hand, or its frames are imported again at the next start.")));
		return;
	}
	if (im.frames > 0)
		ereport(LOG,
				(errmsg("voipbin: imported %llu frame(s) that voipbin 1.0 had spooled in \"%s\" into the journal; the file is removed",
						(unsigned long long) im.frames, path)));
}
