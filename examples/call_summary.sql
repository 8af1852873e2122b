-- One row per finished call, written by a handler in the transaction that
-- stores the call's call_hangup event.
--
--   psql -X -v ON_ERROR_STOP=1 -d app -f examples/call_summary.sql
--
-- Upserted: VoIPBIN may deliver a hangup twice, and a copy that differs (a
-- retry, a later tm_update) is a second event; the row keeps the latest state
-- and a stale copy changes nothing.  Safe to run again.

CREATE TABLE IF NOT EXISTS call_summaries (
    call_id       uuid PRIMARY KEY,
    direction     text,
    source        text,
    destination   text,
    hangup_by     text,
    hangup_reason text,
    created_at    timestamptz,
    answered_at   timestamptz,      -- NULL: never answered
    ended_at      timestamptz,
    talk_time     interval,
    tm_update     timestamptz,      -- VoIPBIN's, to order copies
    event_id      bigint            -- the voipbin_events row it comes from
);

CREATE OR REPLACE FUNCTION summarize_call(e voipbin_events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO call_summaries AS s
    SELECT e.resource_id,
           e.data->>'direction',
           e.data->'source'->>'target',
           e.data->'destination'->>'target',
           nullif(e.data->>'hangup_by', ''),
           nullif(e.data->>'hangup_reason', ''),
           voipbin_timestamp(e.data->>'tm_create'),
           voipbin_timestamp(e.data->>'tm_progressing'),
           voipbin_timestamp(e.data->>'tm_hangup'),
           voipbin_timestamp(e.data->>'tm_hangup') - voipbin_timestamp(e.data->>'tm_progressing'),
           voipbin_timestamp(e.data->>'tm_update'),
           e.id
    ON CONFLICT (call_id) DO UPDATE
        SET direction = excluded.direction, source = excluded.source,
            destination = excluded.destination, hangup_by = excluded.hangup_by,
            hangup_reason = excluded.hangup_reason, created_at = excluded.created_at,
            answered_at = excluded.answered_at, ended_at = excluded.ended_at,
            talk_time = excluded.talk_time, tm_update = excluded.tm_update,
            event_id = excluded.event_id
        WHERE excluded.tm_update > s.tm_update OR s.tm_update IS NULL
$$;

SELECT voipbin_on('call_hangup', 'summarize_call(voipbin_events)');

-- Undo:
--   SELECT voipbin_off('call_hangup', 'summarize_call(voipbin_events)');
--   DROP FUNCTION summarize_call(voipbin_events); DROP TABLE call_summaries;
