-- VoIPBIN's words (src/sql/vocabulary.c): a topic resource or an event type
-- that is none gets a WARNING naming the nearest, and is taken anyway.
\set VERBOSITY default

-- the lists: resources are the event types' first words, plus webchat_session
SELECT kind, count(*) FROM voipbin_vocabulary() GROUP BY kind ORDER BY kind;
SELECT string_agg(word, ' ' ORDER BY word) FROM voipbin_vocabulary() WHERE kind = 'resource';
-- every event type VoIPBIN sends has its resource in the list
SELECT e.word FROM voipbin_vocabulary() e
WHERE e.kind = 'event_type' AND e.word <> 'unknown'
  AND split_part(e.word, '_', 1) NOT IN (SELECT word FROM voipbin_vocabulary() WHERE kind = 'resource');
-- every event type the classifier names a bare object is known
SELECT word FROM voipbin_vocabulary()
WHERE word IN ('transcript_created', 'recording_created', 'recording_updated', 'aicall_status_pausing',
               'queuecall_serviced', 'transcribe_speech_interim', 'message_deleted', 'unknown')
ORDER BY word;
-- no duplicates
SELECT kind, word FROM voipbin_vocabulary() GROUP BY kind, word HAVING count(*) > 1;

-- topics: a typo in the resource part warns, with the nearest resource in the hint
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:calls:');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:Call:call_hangup');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:queue:');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:transcription');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:conferencecall:');
SELECT voipbin_resolve_topic('agent_id:62005165-7592-4ff7-9076-55bf491023f2:cal:');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:' || repeat('x', 100) || ':');
-- real resources, a prefix of one, no resource at all: nothing to say
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:call_');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:transcript:');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:webchat_session:');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:conf');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:');
SELECT voipbin_resolve_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b');
-- subscribing stores it anyway; unsubscribing says nothing
SELECT voipbin_subscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:calls:');
SELECT voipbin_unsubscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:calls:');
-- voipbin_normalize_topic (IMMUTABLE) does not judge words
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:calls:');

-- handlers: an event type VoIPBIN does not send warns, and is registered
CREATE FUNCTION vocab_handler(e voipbin_events) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT voipbin_on('transcript_creatd', 'vocab_handler(voipbin_events)');
SELECT voipbin_on('call_hangedup', 'vocab_handler(voipbin_events)');
SELECT voipbin_on('calls', 'vocab_handler(voipbin_events)');
SELECT voipbin_on('call_hangup', 'vocab_handler(voipbin_events)');
SELECT voipbin_on('recording_updated', 'vocab_handler(voipbin_events)');
SELECT event_type FROM voipbin_handlers ORDER BY event_type;
SELECT voipbin_off(event_type, 'vocab_handler(voipbin_events)') FROM voipbin_handlers ORDER BY event_type;
DROP FUNCTION vocab_handler(voipbin_events);
