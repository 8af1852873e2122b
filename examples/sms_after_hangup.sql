-- Text the caller after an incoming call ends: thanks for an answered call,
-- an apology for a missed one.
--
--   psql -X -v ON_ERROR_STOP=1 -d app -f examples/sms_after_hangup.sql
--
-- Needs call events stored (voipbin_subscribe('call')), and a number of the
-- account that can send SMS: the message goes from the number the caller
-- dialled (the call's destination) to the caller (its source).
--
-- The SMS is queued in the transaction that stores call_hangup and sent by
-- the worker once it commits.  A repeated SMS would be sent and billed twice,
-- so the key is the call, not the event: 'sms-after-call:<call id>' queues
-- one SMS per call even when VoIPBIN sends call_hangup again in a copy that
-- is stored as a second event.  The worker never sends an SMS twice: an
-- answer that leaves open whether VoIPBIN sent it ends the request
-- "unknown" (docs/requests.md says how to settle it from message_created
-- events).  Safe to run again.

CREATE OR REPLACE FUNCTION sms_after_hangup(e voipbin_events) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp          -- the extension's schema
AS $$
BEGIN
    IF e.data->>'direction' IS DISTINCT FROM 'incoming'
       OR e.data->'source'->>'type' IS DISTINCT FROM 'tel'
       OR e.data->'destination'->>'type' IS DISTINCT FROM 'tel'
       OR coalesce(e.data->'source'->>'target', '') = ''
       OR coalesce(e.data->'destination'->>'target', '') = '' THEN
        RETURN;
    END IF;
    -- voipbin_send_message(source, destinations, text) queues the same
    -- request, without a dedupe key
    PERFORM voipbin_request('POST', '/messages',
        jsonb_build_object(
            'source', jsonb_build_object('type', 'tel', 'target', e.data->'destination'->>'target'),
            'destinations', jsonb_build_array(
                jsonb_build_object('type', 'tel', 'target', e.data->'source'->>'target')),
            'text', CASE WHEN voipbin_timestamp(e.data->>'tm_progressing') IS NOT NULL
                         THEN 'Thank you for your call.'
                         ELSE 'Sorry we missed your call. We will call you back.' END),
        'sms-after-call:' || e.resource_id);
END
$$;

-- Only the worker calls it: anyone else could pass a made-up event and send
-- SMS to any number as its owner.  With voipbin.worker_role set: GRANT
-- EXECUTE ON FUNCTION sms_after_hangup(voipbin_events) TO that role.
REVOKE EXECUTE ON FUNCTION sms_after_hangup(voipbin_events) FROM PUBLIC;

SELECT voipbin_on('call_hangup', 'sms_after_hangup(voipbin_events)');

-- The messages and their outcome (done: VoIPBIN accepted it, and its
-- message_updated events tell the delivery; unknown: see docs/requests.md):
--   SELECT substr(r.dedupe_key, 16)::uuid AS call_id,
--          r.body->'destinations'->0->>'target' AS sent_to, r.state, r.status,
--          r.error, r.response->>'id' AS message_id
--   FROM voipbin_requests r
--   WHERE r.dedupe_key LIKE 'sms-after-call:%' ORDER BY r.id;
--
-- Undo:
--   SELECT voipbin_off('call_hangup', 'sms_after_hangup(voipbin_events)');
--   DROP FUNCTION sms_after_hangup(voipbin_events);
