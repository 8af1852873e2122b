-- Start a live transcription of every call once it is answered.
--
--   psql -X -v ON_ERROR_STOP=1 -d app -f examples/transcribe_answered_calls.sql
--
-- Needs call events stored (voipbin_subscribe('call')); the lines arrive as
-- transcript_created events (voipbin_subscribe('transcript')), their sessions
-- as transcribe_* events (voipbin_subscribe('transcribe')), and
-- voipbin_transcripts shows them by call.
--
-- A call is answered when its status becomes progressing (call_progressing).
-- The request is queued in the transaction that stores that event and sent
-- by the worker once it commits.  The dedupe key 'transcribe:<call id>'
-- queues one start per call, even when VoIPBIN sends the event again in a
-- copy that is stored as a second event; a second start would be refused by
-- VoIPBIN anyway (409, which the worker counts as done), the key spares the
-- request.  A start that VoIPBIN does not answer in time is sent again: it
-- cannot make a second transcription.  Safe to run again.

CREATE OR REPLACE FUNCTION transcribe_answered_call(e voipbin_events) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp          -- the extension's schema
AS $$
BEGIN
    -- voipbin_transcribe_start(e.resource_id, 'en-US') queues the same
    -- request, without a dedupe key
    PERFORM voipbin_request('POST', '/transcribes',
        jsonb_build_object('reference_type', 'call',
                           'reference_id', e.resource_id,
                           'language', 'en-US',
                           'direction', 'both'),
        'transcribe:' || e.resource_id);
END
$$;

-- Only the worker calls it (anyone else could pass a made-up event).  With
-- voipbin.worker_role set: GRANT EXECUTE ON FUNCTION
-- transcribe_answered_call(voipbin_events) TO that role.
REVOKE EXECUTE ON FUNCTION transcribe_answered_call(voipbin_events) FROM PUBLIC;

SELECT voipbin_on('call_progressing', 'transcribe_answered_call(voipbin_events)');

-- Which calls are transcribed, and which starts failed (a call that ended
-- before the request reached VoIPBIN is answered 500: failed):
--   SELECT c.call_id, c.status, r.state, r.status AS http_status, r.error,
--          r.response->>'id' AS transcribe_id
--   FROM voipbin_calls c
--   JOIN voipbin_requests r ON r.dedupe_key = 'transcribe:' || c.call_id
--   ORDER BY r.id;
--
-- Undo:
--   SELECT voipbin_off('call_progressing', 'transcribe_answered_call(voipbin_events)');
--   DROP FUNCTION transcribe_answered_call(voipbin_events);
