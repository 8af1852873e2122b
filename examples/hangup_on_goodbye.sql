-- Hang up a call when the caller says goodbye, as its live transcript shows.
--
--   psql -X -v ON_ERROR_STOP=1 -d app -f examples/hangup_on_goodbye.sql
--
-- Needs transcript lines and transcription sessions stored:
-- voipbin_subscribe('transcript') and voipbin_subscribe('transcribe'), and a
-- transcription running on the call (examples/transcribe_answered_calls.sql
-- starts one on every answered call).  A line (transcript_created) names its
-- session (transcribe_id); the session's transcribe_created event names the
-- call (reference_id, when reference_type is 'call').  A line stored before
-- its session is not matched; the next goodbye is.
--
-- The hangup is queued in the transaction that stores the line and sent by
-- the worker once it commits: if the line's transaction rolls back, nothing
-- is sent.  The dedupe key 'hangup:<call id>' queues one hangup per call,
-- however many lines say goodbye.  Safe to run again.

CREATE OR REPLACE FUNCTION hangup_on_goodbye(e voipbin_events) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp          -- the extension's schema
AS $$
DECLARE
    call_id uuid;
BEGIN
    -- the caller's words ('in'), not VoIPBIN's text to speech ('out')
    IF e.data->>'direction' IS DISTINCT FROM 'in'
       OR e.data->>'message' !~* '\mgood[- ]?bye\M' THEN
        RETURN;
    END IF;
    SELECT (s.data->>'reference_id')::uuid INTO call_id
    FROM voipbin_events s
    WHERE s.resource = 'transcribe'
      AND s.resource_id = (e.data->>'transcribe_id')::uuid
      AND s.data->>'reference_type' = 'call'
    ORDER BY s.event_type = 'transcribe_created' DESC, s.id
    LIMIT 1;
    IF call_id IS NULL OR call_id = '00000000-0000-0000-0000-000000000000' THEN
        RETURN;
    END IF;
    -- voipbin_hangup(call_id) queues the same request, without a dedupe key
    PERFORM voipbin_request('POST', format('/calls/%s/hangup', call_id), '{}',
                            'hangup:' || call_id);
END
$$;

-- Anyone who may call a SECURITY DEFINER handler could pass it an event of
-- their own making and hang up any call as its owner: only the worker calls
-- it.  (With voipbin.worker_role set: GRANT EXECUTE ON FUNCTION
-- hangup_on_goodbye(voipbin_events) TO that role.)
REVOKE EXECUTE ON FUNCTION hangup_on_goodbye(voipbin_events) FROM PUBLIC;

SELECT voipbin_on('transcript_created', 'hangup_on_goodbye(voipbin_events)');

-- What became of the hangups (state done, failed or unknown; LISTEN
-- voipbin_requests to hear each as it ends):
--   SELECT substr(dedupe_key, 8)::uuid AS call_id, state, status, error, finished_at
--   FROM voipbin_requests WHERE dedupe_key LIKE 'hangup:%' ORDER BY id;
--
-- Undo:
--   SELECT voipbin_off('transcript_created', 'hangup_on_goodbye(voipbin_events)');
--   DROP FUNCTION hangup_on_goodbye(voipbin_events);
