/*
 * frame_json.h — a frame's JSON text parsed into jsonb, with where its "data" lies in the text.
 */
#ifndef VOIPBIN_INGEST_FRAME_JSON_H
#define VOIPBIN_INGEST_FRAME_JSON_H

#include "postgres.h"
#include "utils/jsonb.h"

extern Jsonb *frame_json_parse(const char *text, int len, int *data_off, int *data_len);

#endif
