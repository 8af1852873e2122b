-- Workflows: the timestamp helpers, the views on hand-made events, handlers.
-- The worker has no credential here, so these inserts are the only events.
\set SHOW_CONTEXT never
-- not UTC, day first: nothing below may depend on the session's settings
SET TimeZone = 'America/New_York';
SET DateStyle = 'ISO, DMY';
SET IntervalStyle = 'postgres';

-- An event as the worker would store it.
CREATE FUNCTION ev(event_type text, data jsonb) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO voipbin_events (event_type, resource, resource_id, customer_id, data)
    VALUES (event_type, split_part(event_type, '_', 1), (data->>'id')::uuid,
            (data->>'customer_id')::uuid, data)
    ON CONFLICT DO NOTHING
    RETURNING id
$$;

--
-- voipbin_timestamp, voipbin_offset
--
SELECT t, voipbin_timestamp(t) AT TIME ZONE 'UTC' AS utc
FROM (VALUES ('2026-02-21T10:05:15.1Z'), ('2026-02-21T10:05:15Z'),
             ('2026-02-21T19:05:15.1+09:00'), ('2026-02-21T05:05:15.1-05:00'),
             ('2026-02-21T10:35:15.1+0030'), ('2026-02-21 10:05:15.1+00'),
             ('2022-04-11 06:10:58.431000'), ('2022-04-11 06:10:55.918010931'),
             ('9999-01-01 00:00:00.000000'), ('9999-01-01T00:00:00Z'), ('null'), (''), (NULL)) v(t);
-- the older form is UTC whatever the session's zone
SELECT voipbin_timestamp('2022-04-11 06:10:58.431000') = '2022-04-11 06:10:58.431+00' AS ny;
SET TimeZone = 'Pacific/Chatham';
SELECT voipbin_timestamp('2022-04-11 06:10:58.431000') = '2022-04-11 06:10:58.431+00' AS chatham;
SET TimeZone = 'America/New_York';
SELECT voipbin_timestamp('yesterday');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_timestamp('2026-02-21');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_offset('0001-01-01T00:00:08.99184Z') AS rfc3339,
       voipbin_offset('0001-01-01 00:00:08.991840') AS older,
       voipbin_offset('0001-01-01T00:00:00Z') AS zero,
       voipbin_offset(NULL) AS unset;
-- immutable for real: usable in an index
SELECT proname, provolatile FROM pg_proc
WHERE oid IN ('voipbin_timestamp(text)'::regprocedure, 'voipbin_offset(text)'::regprocedure)
ORDER BY 1;
CREATE TEMP TABLE stamps (data jsonb);
CREATE INDEX ON stamps (voipbin_timestamp(data->>'tm_update'));
DROP TABLE stamps;

--
-- voipbin_calls
--
-- a: arrives hangup first, then ringing, then progressing twice (the second
--    copy under another event type, as frame shapes can cause)
SELECT ev('call_hangup', '{"id": "aaaaaaaa-0000-4000-8000-000000000001", "status": "hangup",
    "direction": "incoming", "source": {"type": "tel", "target": "+15550001"},
    "destination": {"type": "tel", "target": "+15550002"}, "hangup_by": "remote",
    "hangup_reason": "normal", "tm_create": "2026-02-21T10:05:10.1Z",
    "tm_ringing": "2026-02-21T10:05:10.5Z", "tm_progressing": "2026-02-21T10:05:12Z",
    "tm_hangup": "2026-02-21T10:05:20.25Z", "tm_update": "2026-02-21T10:05:20.25Z"}') IS NOT NULL;
SELECT ev('call_ringing', '{"id": "aaaaaaaa-0000-4000-8000-000000000001", "status": "ringing",
    "direction": "incoming", "source": {"type": "tel", "target": "+15550001"},
    "destination": {"type": "tel", "target": "+15550002"}, "tm_create": "2026-02-21T10:05:10.1Z",
    "tm_ringing": "2026-02-21T10:05:10.5Z", "tm_update": "2026-02-21T10:05:10.5Z"}') IS NOT NULL;
SELECT ev(t, '{"id": "aaaaaaaa-0000-4000-8000-000000000001", "status": "progressing",
    "direction": "incoming", "source": {"type": "tel", "target": "+15550001"},
    "destination": {"type": "tel", "target": "+15550002"}, "tm_create": "2026-02-21T10:05:10.1Z",
    "tm_ringing": "2026-02-21T10:05:10.5Z", "tm_progressing": "2026-02-21T10:05:12Z",
    "tm_update": "2026-02-21T10:05:12Z"}') IS NOT NULL
FROM unnest(ARRAY['call_progressing', 'call_updated']) t;
-- b: the older format throughout, with its 9999 sentinel; created, then hung up
SELECT ev('call_created', '{"id": "bbbbbbbb-0000-4000-8000-000000000002", "status": "dialing",
    "direction": "outgoing", "source": {"target": "+15550003"}, "destination": {"target": "+15550004"},
    "hangup_by": "", "hangup_reason": "", "tm_create": "2022-04-11 06:10:54.788000",
    "tm_update": "2022-04-11 06:10:54.788000", "tm_progressing": "9999-01-01 00:00:00.000000",
    "tm_ringing": "9999-01-01 00:00:00.000000", "tm_hangup": "9999-01-01 00:00:00.000000"}') IS NOT NULL;
SELECT ev('call_hangup', '{"id": "bbbbbbbb-0000-4000-8000-000000000002", "status": "hangup",
    "direction": "outgoing", "source": {"target": "+15550003"}, "destination": {"target": "+15550004"},
    "hangup_by": "local", "hangup_reason": "noanswer", "tm_create": "2022-04-11 06:10:54.788000",
    "tm_update": "2022-04-11 06:10:58.431000", "tm_progressing": "9999-01-01 00:00:00.000000",
    "tm_ringing": "9999-01-01 00:00:00.000000", "tm_hangup": "2022-04-11 06:10:58.431000"}') IS NOT NULL;
-- c: both formats, and times that sort wrongly as strings: a space sorts
--    before "T", and "15Z" after "15.5Z"
SELECT ev('call_progressing', '{"id": "cccccccc-0000-4000-8000-000000000003", "status": "progressing",
    "tm_create": "2026-02-21T10:05:00Z", "tm_update": "2026-02-21T10:05:15.5Z"}') IS NOT NULL;
SELECT ev('call_ringing', '{"id": "cccccccc-0000-4000-8000-000000000003", "status": "ringing",
    "tm_create": "2026-02-21T10:05:00Z", "tm_update": "2026-02-21T10:05:15Z"}') IS NOT NULL;
SELECT ev('call_dialing', '{"id": "cccccccc-0000-4000-8000-000000000003", "status": "dialing",
    "tm_create": "2026-02-21 10:05:00.000000", "tm_update": "2026-02-21 10:05:01.000000"}') IS NOT NULL;
-- d: the same tm_update twice: the further status wins, whatever arrived last
SELECT ev('call_hangup', '{"id": "dddddddd-0000-4000-8000-000000000004", "status": "hangup",
    "hangup_reason": "busy", "tm_update": "2026-02-21T11:00:00Z"}') IS NOT NULL;
SELECT ev('call_progressing', '{"id": "dddddddd-0000-4000-8000-000000000004", "status": "progressing",
    "tm_update": "2026-02-21T11:00:00Z"}') IS NOT NULL;
-- e: no tm_update at all (as VoIPBIN omits unset times): tm_create orders it
SELECT ev('call_created', '{"id": "eeeeeeee-0000-4000-8000-000000000005", "status": "ringing",
    "tm_create": "2026-02-21T12:00:00Z"}') IS NOT NULL;
-- not calls
SELECT ev('groupcall_hangup', '{"id": "ffffffff-0000-4000-8000-000000000006", "status": "hangup",
    "tm_update": "2026-02-21T12:00:00Z"}') IS NOT NULL;

SET TimeZone = 'UTC';  -- for reading; the next queries check other zones
SELECT call_id, status, direction, source_target, destination_target, hangup_by, hangup_reason,
       tm_create, tm_ringing, tm_progressing, tm_hangup, tm_update,
       (SELECT event_type FROM voipbin_events WHERE id = last_event_id) AS last_event
FROM voipbin_calls ORDER BY call_id;
-- the same rows in any zone
CREATE TEMP TABLE calls_utc AS SELECT * FROM voipbin_calls;
SET TimeZone = 'Pacific/Chatham';
SELECT count(*) AS differ FROM (SELECT * FROM voipbin_calls EXCEPT SELECT * FROM calls_utc) d;
SET TimeZone = 'America/New_York';
SELECT count(*) AS differ FROM (SELECT * FROM voipbin_calls EXCEPT SELECT * FROM calls_utc) d;
-- a late, stale event changes nothing; a newer one does
SELECT ev('call_ringing', '{"id": "aaaaaaaa-0000-4000-8000-000000000001", "status": "ringing",
    "tm_update": "2026-02-21T10:05:10.6Z"}') IS NOT NULL;
SELECT status FROM voipbin_calls WHERE call_id = 'aaaaaaaa-0000-4000-8000-000000000001';
SELECT ev('call_ringing', '{"id": "eeeeeeee-0000-4000-8000-000000000005", "status": "progressing",
    "tm_create": "2026-02-21T12:00:00Z", "tm_update": "2026-02-21T12:00:01Z"}') IS NOT NULL;
SELECT status FROM voipbin_calls WHERE call_id = 'eeeeeeee-0000-4000-8000-000000000005';

--
-- voipbin_transcripts
--
-- lines of session 1 arrive before the session, one of them twice (the
-- second copy differs, as a re-encoded retry would)
SELECT ev('transcript_created', '{"id": "11111111-0000-4000-8000-00000000000a",
    "transcribe_id": "77777777-0000-4000-8000-000000000001", "direction": "out",
    "message": "Hello, this is transcribe test call.", "tm_transcript": "0001-01-01T00:00:08.99184Z",
    "tm_create": "2026-02-21T10:05:15.1Z"}') IS NOT NULL;
SELECT ev('transcript_created', '{"id": "11111111-0000-4000-8000-00000000000b",
    "transcribe_id": "77777777-0000-4000-8000-000000000001", "direction": "in",
    "message": "hi", "tm_transcript": "0001-01-01 00:00:03.500000",
    "tm_create": "2026-02-21 10:05:16.000000"}') IS NOT NULL;
SELECT ev('transcript_created', '{"id": "11111111-0000-4000-8000-00000000000a",
    "transcribe_id": "77777777-0000-4000-8000-000000000001", "direction": "out",
    "message": "Hello, this is transcribe test call.", "tm_transcript": "0001-01-01 00:00:08.991840",
    "tm_create": "2026-02-21 10:05:15.100000"}') IS NOT NULL;
-- session 1 belongs to call a; its progressing event arrives before its created one
SELECT ev('transcribe_progressing', '{"id": "77777777-0000-4000-8000-000000000001",
    "reference_type": "call", "reference_id": "aaaaaaaa-0000-4000-8000-000000000001",
    "status": "progressing", "language": "en-US", "provider": "gcp",
    "tm_create": "2026-02-21T10:05:13Z", "tm_update": "2026-02-21T10:05:14Z"}') IS NOT NULL;
SELECT ev('transcribe_created', '{"id": "77777777-0000-4000-8000-000000000001",
    "reference_type": "call", "reference_id": "aaaaaaaa-0000-4000-8000-000000000001",
    "status": "progressing", "language": "en-US", "provider": "gcp",
    "tm_create": "2026-02-21T10:05:13Z", "tm_update": "2026-02-21T10:05:13Z"}') IS NOT NULL;
-- session 2 transcribes a recording: its lines belong to no call
SELECT ev('transcribe_created', '{"id": "77777777-0000-4000-8000-000000000002",
    "reference_type": "recording", "reference_id": "99999999-0000-4000-8000-000000000009",
    "status": "progressing", "language": "en-US", "provider": "gcp"}') IS NOT NULL;
SELECT ev('transcript_created', '{"id": "22222222-0000-4000-8000-00000000000a",
    "transcribe_id": "77777777-0000-4000-8000-000000000002", "direction": "in",
    "message": "from a recording", "tm_transcript": "0001-01-01T00:00:01Z",
    "tm_create": null}') IS NOT NULL;
-- session 3 has not arrived (yet); a speech event is not a line
SELECT ev('transcript_created', '{"id": "33333333-0000-4000-8000-00000000000a",
    "transcribe_id": "77777777-0000-4000-8000-000000000003", "direction": "in",
    "message": "early", "tm_transcript": "0001-01-01T00:01:02.5Z",
    "tm_create": "2026-02-21T10:06:00Z"}') IS NOT NULL;
SELECT ev('transcribe_speech_interim', '{"id": "44444444-0000-4000-8000-00000000000a",
    "streaming_id": "55555555-0000-4000-8000-000000000005",
    "transcribe_id": "77777777-0000-4000-8000-000000000001", "direction": "in",
    "message": "hel", "tm_event": "2026-02-21T10:05:15Z"}') IS NOT NULL;

SET TimeZone = 'UTC';
SELECT transcript_id, transcribe_id, call_id, direction, message, tm_offset, tm_create
FROM voipbin_transcripts ORDER BY transcribe_id, tm_offset;
CREATE TEMP TABLE transcripts_utc AS SELECT * FROM voipbin_transcripts;
SET TimeZone = 'Pacific/Chatham';
SELECT count(*) AS differ FROM (SELECT * FROM voipbin_transcripts EXCEPT SELECT * FROM transcripts_utc) d;
-- the session of line 3 arrives: the line gets its call
SELECT ev('transcribe_created', '{"id": "77777777-0000-4000-8000-000000000003",
    "reference_type": "call", "reference_id": "cccccccc-0000-4000-8000-000000000003",
    "status": "progressing", "language": "en-US", "provider": "aws"}') IS NOT NULL;
-- the conversation of each call, in the order it was spoken
SELECT c.call_id, c.status, t.direction, t.message
FROM voipbin_transcripts t JOIN voipbin_calls c USING (call_id)
ORDER BY c.call_id, t.transcribe_id, t.tm_offset;

--
-- handlers
--
SET TimeZone = 'America/New_York';
CREATE TABLE handled (n serial, handler text, event_type text, event_id bigint);
CREATE FUNCTION first_handler(e voipbin_events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO handled (handler, event_type, event_id) VALUES ('first', e.event_type, e.id)
$$;
CREATE FUNCTION second_handler(e voipbin_events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO handled (handler, event_type, event_id) VALUES ('second', e.event_type, e.id);
END $$;

-- what cannot be a handler
CREATE FUNCTION takes_text(e text) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION returns_int(e voipbin_events) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION returns_set(e voipbin_events) RETURNS SETOF void LANGUAGE sql AS '';
CREATE FUNCTION takes_two(e voipbin_events, x int) RETURNS void LANGUAGE sql AS '';
CREATE PROCEDURE a_procedure(e voipbin_events) LANGUAGE sql AS '';
SELECT voipbin_on('call_hangup', 'takes_text(text)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('call_hangup', 'returns_int(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('call_hangup', 'returns_set(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('call_hangup', 'takes_two(voipbin_events, int)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('call_hangup', 'a_procedure(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('call_hangup', 'no_such_function(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('Call Hangup', 'first_handler(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on(NULL, 'first_handler(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('call_hangup', NULL);
\echo :LAST_ERROR_SQLSTATE
CREATE FUNCTION pg_temp.temporary(e voipbin_events) RETURNS void LANGUAGE sql AS '';
\set VERBOSITY sqlstate
SELECT voipbin_on('call_hangup', 'pg_temp.temporary(voipbin_events)');
\set VERBOSITY default
-- the worker is a superuser: a function anyone else owns must be SECURITY DEFINER
CREATE ROLE regress_voipbin_app;
CREATE FUNCTION not_mine(e voipbin_events) RETURNS void LANGUAGE sql AS '';
ALTER FUNCTION not_mine(voipbin_events) OWNER TO regress_voipbin_app;
SELECT voipbin_on('call_hangup', 'not_mine(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
ALTER FUNCTION not_mine(voipbin_events) SECURITY DEFINER;
SELECT voipbin_on('call_hangup', 'not_mine(voipbin_events)');
SELECT voipbin_off('call_hangup', 'not_mine(voipbin_events)');
-- only granted roles register handlers
SET ROLE regress_voipbin_app;
SELECT voipbin_on('call_hangup', 'not_mine(voipbin_events)');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS registered FROM voipbin_handlers;

-- registration order; twice is once
SELECT voipbin_on('call_hangup', 'second_handler(voipbin_events)');
SELECT voipbin_on('call_hangup', 'first_handler(voipbin_events)');
SELECT voipbin_on('call_hangup', 'second_handler(voipbin_events)');
SELECT voipbin_on('transcript_created', 'first_handler');
\echo :LAST_ERROR_SQLSTATE
SELECT voipbin_on('transcript_created', 'public.first_handler(public.voipbin_events)');
SELECT event_type, handler FROM voipbin_handlers ORDER BY id;

-- each handler of the type, once, in order, in the inserting transaction
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000001", "status": "hangup"}') AS id1 \gset
SELECT ev('call_ringing', '{"id": "abababab-0000-4000-8000-000000000002", "status": "ringing"}') IS NOT NULL;
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000001", "status": "hangup"}') AS duplicate;
SELECT ev('transcript_created', '{"id": "abababab-0000-4000-8000-000000000003",
    "transcribe_id": "abababab-0000-4000-8000-000000000004", "message": "x"}') AS id2 \gset
SELECT handler, event_type, event_id = :id1 AS first_event, event_id = :id2 AS second_event
FROM handled ORDER BY n;
BEGIN;
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000005", "status": "hangup"}') IS NOT NULL;
ROLLBACK;
SELECT count(*) AS handled FROM handled;

-- off: true once, then false
SELECT voipbin_off('call_hangup', 'first_handler(voipbin_events)');
SELECT voipbin_off('call_hangup', 'first_handler(voipbin_events)');
SELECT voipbin_off('call_answered', 'first_handler(voipbin_events)');
TRUNCATE handled;
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000006", "status": "hangup"}') IS NOT NULL;
SELECT handler, event_type FROM handled ORDER BY n;

-- a handler's error is the insert's error: the worker dead-letters that event
CREATE FUNCTION boom(e voipbin_events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'boom on %', e.data->>'id' USING ERRCODE = 'P0099';
END $$;
SELECT voipbin_on('call_hangup', 'boom(voipbin_events)');
SELECT count(*) AS events_before FROM voipbin_events \gset
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000007", "status": "hangup"}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :events_before AS not_stored FROM voipbin_events;
-- dropping a handler's function unregisters it
DROP FUNCTION boom(voipbin_events);
SELECT event_type, handler FROM voipbin_handlers ORDER BY id;
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000007", "status": "hangup"}') IS NOT NULL;
-- a renamed one can no longer be found: its events fail loudly rather than skip it
ALTER FUNCTION second_handler(voipbin_events) RENAME TO renamed_handler;
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000008", "status": "hangup"}');
\echo :LAST_ERROR_SQLSTATE
ALTER FUNCTION renamed_handler(voipbin_events) RENAME TO second_handler;
-- a handler whose owner lost the right to run as the worker fails its events
ALTER FUNCTION second_handler(voipbin_events) OWNER TO regress_voipbin_app;
-- (the message names the role that runs the insert: whoever runs the suite,
-- so it is shown with that name replaced)
DO $$
DECLARE
    hint text;
BEGIN
    PERFORM ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000008", "status": "hangup"}');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RAISE NOTICE 'SQLSTATE %: %', SQLSTATE,
        replace(SQLERRM, 'role ' || current_user || ',', 'role <the user running the suite>,')
        USING HINT = hint;
END $$;
ALTER FUNCTION second_handler(voipbin_events) OWNER TO CURRENT_USER;
SELECT ev('call_hangup', '{"id": "abababab-0000-4000-8000-000000000008", "status": "hangup"}') IS NOT NULL;

-- what is open to PUBLIC
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') AS public_can_select
FROM pg_class c
WHERE c.relname IN ('voipbin_calls', 'voipbin_transcripts', 'voipbin_handlers') ORDER BY 1;

-- cleanup
SELECT voipbin_off(event_type, handler::regprocedure) FROM voipbin_handlers ORDER BY id;
DROP FUNCTION first_handler(voipbin_events), second_handler(voipbin_events),
    takes_text(text), returns_int(voipbin_events), returns_set(voipbin_events),
    takes_two(voipbin_events, int), not_mine(voipbin_events), ev(text, jsonb);
DROP PROCEDURE a_procedure(voipbin_events);
DROP TABLE handled;
DROP ROLE regress_voipbin_app;
DELETE FROM voipbin_events;
RESET TimeZone;
RESET DateStyle;
RESET IntervalStyle;
