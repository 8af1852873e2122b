-- Frame classification: the three shapes, inference from the payload, errors.
\set VERBOSITY terse

-- the same call_hangup in all three shapes gives the same row
SELECT event_type, resource, resource_id, customer_id, data->>'status' AS status
FROM voipbin_classify('{"type":"call_hangup","data":{"id":"593555d2-787e-4b06-862f-407bb2e43be1","customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","source":{"type":"tel","target":"+821100000002"},"destination":{"type":"tel","target":"+821100000001"},"status":"hangup","direction":"incoming","hangup_by":"remote","hangup_reason":"normal","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:58.4Z","tm_hangup":"2026-02-21T10:05:58.4Z"}}');
SELECT event_type, resource, resource_id, customer_id, data->>'status' AS status
FROM voipbin_classify('{"event_type":"call_hangup","timestamp":"2026-02-21T10:05:58.4Z","data":{"id":"593555d2-787e-4b06-862f-407bb2e43be1","customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","source":{"type":"tel","target":"+821100000002"},"destination":{"type":"tel","target":"+821100000001"},"status":"hangup","direction":"incoming","hangup_by":"remote","hangup_reason":"normal","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:58.4Z","tm_hangup":"2026-02-21T10:05:58.4Z"}}');
SELECT event_type, resource, resource_id, customer_id, data->>'status' AS status
FROM voipbin_classify('{"id":"593555d2-787e-4b06-862f-407bb2e43be1","customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","source":{"type":"tel","target":"+821100000002"},"destination":{"type":"tel","target":"+821100000001"},"status":"hangup","direction":"incoming","hangup_by":"remote","hangup_reason":"normal","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:58.4Z","tm_hangup":"2026-02-21T10:05:58.4Z"}');
-- the wrapped shape's data is exactly the bare object
SELECT (SELECT data FROM voipbin_classify('{"type":"x_created","data":{"id":"593555d2-787e-4b06-862f-407bb2e43be1","a":1}}'))
     = (SELECT data FROM voipbin_classify('{"a":1,"id":"593555d2-787e-4b06-862f-407bb2e43be1"}')) AS same_data;
-- a raw resource with its own "type" field is not mistaken for the wrapped shape
SELECT event_type, data->>'type' AS call_type
FROM voipbin_classify('{"id":"593555d2-787e-4b06-862f-407bb2e43be1","type":"flow","source":{},"destination":{},"status":"ringing","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:11Z"}');

-- inference of bare resource objects (docs/events.md, "Frames and event types")
CREATE TEMP TABLE samples (name text, frame text);
INSERT INTO samples VALUES
 ('call created (tm_update = tm_create)', '{"id":"11111111-1111-1111-1111-111111111111","customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","source":{},"destination":{},"status":"ringing","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:10.1Z"}'),
 ('call created (tm_update absent)', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"dialing","tm_create":"2026-02-21T10:05:10.1Z"}'),
 ('call created (tm_update 9999)', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"dialing","tm_create":"2022-04-11 06:10:54.788000","tm_update":"9999-01-01 00:00:00.000000"}'),
 ('call dialing', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"dialing","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:10.2Z"}'),
 ('call ringing', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"ringing","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:11Z"}'),
 ('call progressing', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"progressing","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:12Z"}'),
 ('call terminating', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"terminating","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:13Z"}'),
 ('call canceling', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"canceling","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:13Z"}'),
 ('call hangup (legacy timestamps)', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"hangup","tm_create":"2022-04-11 06:10:54.788000","tm_update":"2022-04-11 06:10:58.431000","tm_delete":"9999-01-01 00:00:00.000000"}'),
 ('call updated (unknown status)', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"weird","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:13Z"}'),
 ('call deleted', '{"id":"11111111-1111-1111-1111-111111111111","source":{},"destination":{},"status":"hangup","tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:13Z","tm_delete":"2026-02-21T10:06:00Z"}'),
 ('transcript line', '{"id":"9d59e7f0-7bdc-4c52-bb8c-bab718952050","customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","transcribe_id":"8c5a9e2a-2a7f-4a6f-9f1d-debd72c279ce","direction":"out","message":"Hello","tm_transcript":"0001-01-01T00:00:08.99184Z","tm_create":"2026-02-21T10:05:15.1Z"}'),
 ('transcribe created', '{"id":"8c5a9e2a-2a7f-4a6f-9f1d-debd72c279ce","reference_type":"call","reference_id":"11111111-1111-1111-1111-111111111111","status":"progressing","language":"en-US","direction":"both","provider":"gcp","tm_create":"2026-02-21T10:05:14Z","tm_update":null,"tm_delete":null}'),
 ('transcribe progressing', '{"id":"8c5a9e2a-2a7f-4a6f-9f1d-debd72c279ce","reference_type":"call","reference_id":"11111111-1111-1111-1111-111111111111","status":"progressing","language":"en-US","direction":"both","provider":"gcp","tm_create":"2026-02-21T10:05:14Z","tm_update":"2026-02-21T10:05:15Z"}'),
 ('transcribe done', '{"id":"8c5a9e2a-2a7f-4a6f-9f1d-debd72c279ce","reference_type":"call","reference_id":"11111111-1111-1111-1111-111111111111","status":"done","language":"en-US","direction":"both","provider":"gcp","tm_create":"2026-02-21T10:05:14Z","tm_update":"2026-02-21T10:06:15Z"}'),
 ('speech interim', '{"id":"b2c3d4e5-f6a7-8901-bcde-f23456789012","streaming_id":"c0d1e2f3-a4b5-6c7d-8e9f-0a1b2c3d4e5f","transcribe_id":"bbf08426-3979-41bc-a544-5fc92c237848","direction":"in","message":"Hello, I need","tm_event":"2024-04-01 07:22:08.115000","tm_create":"2024-04-01 07:22:08.115000"}'),
 ('speech started (unknowable)', '{"id":"b2c3d4e5-f6a7-8901-bcde-f23456789012","streaming_id":"c0d1e2f3-a4b5-6c7d-8e9f-0a1b2c3d4e5f","transcribe_id":"bbf08426-3979-41bc-a544-5fc92c237848","direction":"in","tm_event":"2024-04-01 07:22:08.115000"}'),
 ('recording created', '{"id":"22222222-2222-2222-2222-222222222222","reference_type":"call","reference_id":"11111111-1111-1111-1111-111111111111","status":"initiating","format":"wav","tm_create":"2026-02-21T10:05:12Z"}'),
 ('recording started', '{"id":"22222222-2222-2222-2222-222222222222","reference_type":"call","status":"recording","format":"wav","tm_create":"2026-02-21T10:05:12Z","tm_update":"2026-02-21T10:05:13Z"}'),
 ('recording finished', '{"id":"22222222-2222-2222-2222-222222222222","reference_type":"call","status":"ended","format":"wav","tm_create":"2026-02-21T10:05:12Z","tm_update":"2026-02-21T10:06:13Z"}'),
 ('queuecall waiting', '{"id":"33333333-3333-3333-3333-333333333333","queue_id":"44444444-4444-4444-4444-444444444444","reference_type":"call","reference_id":"11111111-1111-1111-1111-111111111111","status":"waiting","tm_create":"2026-02-21T10:05:12Z","tm_update":"2026-02-21T10:05:13Z"}'),
 ('queuecall serviced', '{"id":"33333333-3333-3333-3333-333333333333","queue_id":"44444444-4444-4444-4444-444444444444","reference_type":"call","reference_id":"11111111-1111-1111-1111-111111111111","status":"service","tm_create":"2026-02-21T10:05:12Z","tm_update":"2026-02-21T10:05:14Z"}'),
 ('activeflow updated', '{"id":"55555555-5555-5555-5555-555555555555","flow_id":"66666666-6666-6666-6666-666666666666","current_action":{},"tm_create":"2026-02-21T10:05:12Z","tm_update":"2026-02-21T10:05:14Z"}'),
 ('aicall progressing', '{"id":"77777777-7777-7777-7777-777777777777","ai_id":"88888888-8888-8888-8888-888888888888","reference_type":"call","status":"progressing","tm_create":"2026-02-21T10:05:12Z","tm_update":"2026-02-21T10:05:14Z"}'),
 ('nothing recognisable', '{"id":"99999999-9999-9999-9999-999999999999","foo":1}'),
 ('nil ids are no ids', '{"id":"00000000-0000-0000-0000-000000000000","customer_id":"not-a-uuid"}');
SELECT s.name, c.event_type, c.resource, c.resource_id IS NOT NULL AS has_id
FROM samples s, LATERAL voipbin_classify(s.frame) c ORDER BY s.name;

-- the event types VoIPBIN delivers (docs/voipbin.md, "Event kinds and their keys") pass through the wrapped shape
SELECT t AS event_type, c.resource
FROM unnest(string_to_array('call_created call_updated call_deleted call_dialing call_ringing call_progressing call_terminating call_canceling call_hangup groupcall_created groupcall_progressing groupcall_hangup groupcall_deleted recording_started recording_finished transcribe_created transcribe_progressing transcribe_done transcript_created transcribe_speech_started transcribe_speech_interim transcribe_speech_ended activeflow_created activeflow_updated activeflow_deleted queuecall_created queuecall_waiting queuecall_connecting queuecall_serviced queuecall_done queuecall_abandoned queuecall_deleted conference_created conference_updated conference_deleted agent_created agent_updated agent_deleted agent_status_updated message_created message_updated message_deleted email_created email_updated email_deleted conversation_created conversation_updated conversation_message_created conversation_message_updated conversation_message_deleted account_created account_updated account_deleted ai_created ai_updated ai_deleted aicall_status_initializing aicall_status_progressing aicall_status_pausing aicall_status_resuming aicall_status_terminating aicall_status_terminated aimessage_created aimessage_intermediate summary_created summary_updated summary_deleted team_created team_updated team_deleted campaign_created campaign_updated campaign_deleted campaign_status_run campaign_status_stopping campaign_status_stop campaigncall_created campaigncall_updated campaigncall_deleted outdial_created outdial_updated outdial_deleted number_created number_updated number_deleted chat_created chat_updated chat_deleted chatmessage_created chatmessage_deleted chatmessage_reaction_updated chatparticipant_added chatparticipant_removed webchat_message_created webchat_session_ended', ' ')) AS t,
     LATERAL voipbin_classify(format('{"type":%s,"data":{"id":"11111111-1111-1111-1111-111111111111"}}', to_json(t))) c
WHERE c.event_type <> t OR c.resource IS DISTINCT FROM split_part(t, '_', 1);

-- frames that are no event raise (the worker dead-letters them)
SELECT * FROM voipbin_classify('not json');
SELECT * FROM voipbin_classify('[1,2,3]');
SELECT * FROM voipbin_classify('"a string"');
SELECT * FROM voipbin_classify('42');
SELECT * FROM voipbin_classify('{"message":"nul \u0000 here"}');
SELECT * FROM voipbin_classify('{"a":');
