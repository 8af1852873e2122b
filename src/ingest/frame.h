/*
 * frame.h — a frame's bytes classified into an event: its type, resource, ids and data.
 */
#ifndef VOIPBIN_INGEST_FRAME_H
#define VOIPBIN_INGEST_FRAME_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

typedef struct FrameEvent
{
	char	   *event_type;
	char	   *resource;		/* NULL for "unknown" */
	bool		has_resource_id;
	pg_uuid_t	resource_id;
	bool		has_customer_id;
	pg_uuid_t	customer_id;
	Jsonb	   *data;
	bool		bare;			/* the frame is the resource object itself */
	/* data as JSON text: a slice of the frame (in the server encoding), for the NOTIFY payload */
	const char *data_text;
	int			data_text_len;
} FrameEvent;

/* frame_classify()'s error for a binary frame: a dead letter keeps no opcode */
#define FRAME_BINARY_ERROR "binary frame: VoIPBIN sends events as text frames"

extern void frame_classify(const char *bytes, size_t len, bool binary, FrameEvent *out);
extern List *frame_inferred_types(void);

#endif
