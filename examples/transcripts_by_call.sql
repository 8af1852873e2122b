-- What was said on each call, in the order it was said.
--
--   psql -X -d app -f examples/transcripts_by_call.sql                      # every call
--   psql -X -d app -v call_id=<uuid> -f examples/transcripts_by_call.sql    # one call
--
-- A transcript line names its transcription session (transcribe_id); the
-- session's transcribe_created event names what it transcribes: reference_id,
-- a call when reference_type is 'call'.  voipbin_transcripts makes that join
-- (and drops duplicate lines); voipbin_calls gives the call's latest state.
\if :{?call_id}
\else
\set call_id ''
\endif

SELECT c.call_id, c.source_target, c.destination_target, c.status,
       t.tm_offset, t.direction, t.message
FROM voipbin_transcripts t
JOIN voipbin_calls c USING (call_id)
WHERE nullif(:'call_id', '') IS NULL OR c.call_id = nullif(:'call_id', '')::uuid
ORDER BY c.tm_create, c.call_id, t.transcribe_id, t.tm_offset;

-- The same join spelled out on voipbin_events, for what the views leave out
-- (here the session's language).  A line that arrived twice would show twice:
-- DISTINCT ON keeps its first copy.
SELECT call_id, language, tm_offset, direction, message
FROM (SELECT DISTINCT ON (t.resource_id)
             s.reference_id AS call_id, s.data->>'language' AS language,
             t.data->>'transcribe_id' AS transcribe_id,
             voipbin_offset(t.data->>'tm_transcript') AS tm_offset,
             t.data->>'direction' AS direction, t.data->>'message' AS message
      FROM voipbin_events t
      JOIN LATERAL (SELECT (s.data->>'reference_id')::uuid AS reference_id, s.data
                    FROM voipbin_events s
                    WHERE s.event_type = 'transcribe_created'
                      AND s.resource_id = (t.data->>'transcribe_id')::uuid
                      AND s.data->>'reference_type' = 'call'
                    ORDER BY s.id LIMIT 1) s ON true
      WHERE t.event_type = 'transcript_created'
      ORDER BY t.resource_id, t.id) line
WHERE nullif(:'call_id', '') IS NULL OR call_id = nullif(:'call_id', '')::uuid
ORDER BY call_id, transcribe_id, tm_offset;
