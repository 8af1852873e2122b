/*
 * repair_walk.h — the walk of a repair: which REST reads to make (the calls
 * since the outage, then each changed call's transcribes, transcripts,
 * recordings and timeline), and each answer's objects into the journal.
 */
#ifndef VOIPBIN_REPAIR_REPAIR_WALK_H
#define VOIPBIN_REPAIR_REPAIR_WALK_H

#include "postgres.h"

#include "repair/repair_http.h"

/* Reads the calls not settled and the topics subscribed (in a transaction). */
extern void repair_walk_load(const char *schema);

/* Asks for the first page of calls. */
extern void repair_walk_begin(void);

/* Takes one answer: its objects into the journal, the requests it leads to queued. */
extern void repair_walk_answer(RhResult *r);

/*
 * Asks again the reads that are due (an answer of the moment put them
 * aside); ms until the next one is, or -1 when none waits.
 */
extern long repair_walk_ask_again(void);

#endif
