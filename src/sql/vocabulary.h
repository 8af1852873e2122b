/*
 * vocabulary.h — VoIPBIN's event types and topic resources, and the nearest
 * of them to a word that is none (sql/vocabulary.c).
 */
#ifndef VOIPBIN_SQL_VOCABULARY_H
#define VOIPBIN_SQL_VOCABULARY_H

#include "postgres.h"
#include "nodes/pg_list.h"

extern List *vocabulary_resources(void);
extern List *vocabulary_event_types(void);
extern const char *vocabulary_nearest(const char *word, List *words);
extern bool vocabulary_check_topic(const char *topic);
extern bool vocabulary_check_event_type(const char *event_type);

#endif
