/*
 * compat.h — the differences between the PostgreSQL majors the extension is
 * built for (15, 17 and 18; 16 is untested, its changes are guarded where
 * 17's imply them), in one place, each named for what it does.  Macros only:
 * a file that uses one includes the PostgreSQL header it needs.
 */
#ifndef VOIPBIN_COMPAT_H
#define VOIPBIN_COMPAT_H

#include "postgres.h"

/*
 * A JSON semantic action (common/jsonapi.h) returns JsonParseErrorType from
 * 16 on, void before: declare one as VB_JSON_ACTION and end it with
 * VB_JSON_ACTION_DONE.
 */
#if PG_VERSION_NUM >= 160000
#define VB_JSON_ACTION JsonParseErrorType
#define VB_JSON_ACTION_DONE return JSON_SUCCESS
#else
#define VB_JSON_ACTION void
#define VB_JSON_ACTION_DONE return
#endif

/*
 * A lexer over s[0..len): from 17 on makeJsonLexContextCstringLen() takes a
 * context to fill first (NULL: it allocates one, as before 17).
 */
#if PG_VERSION_NUM >= 170000
#define vb_json_lexer(s, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen(NULL, (s), (len), (encoding), (need_escapes))
#else
#define vb_json_lexer(s, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen((s), (len), (encoding), (need_escapes))
#endif

/*
 * A WaitEventSet that lives as long as the process: from 17 on the first
 * argument is a ResourceOwner (NULL: none, the set is kept in
 * TopMemoryContext until freed); before, the memory context to keep it in.
 */
#if PG_VERSION_NUM >= 170000
#define vb_create_wait_event_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define vb_create_wait_event_set(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

#endif
