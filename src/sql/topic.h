/*
 * topic.h — topics: validating and normalising what a user subscribes to.
 */
#ifndef VOIPBIN_SQL_TOPIC_H
#define VOIPBIN_SQL_TOPIC_H

#include "postgres.h"
#include "fmgr.h"

extern char *topic_normalize(const char *topic, const char *own_customer_id,
							 const char **error, const char **hint);
extern char *topic_arg(FunctionCallInfo fcinfo);
extern Datum topic_result(const char *topic, const char *result, const char *error,
						  const char *hint);
extern bool topic_is_bare_resource(const char *topic);

#endif
