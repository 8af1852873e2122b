-- Topic validation and normalisation, before anything reaches VoIPBIN.
SET client_min_messages = warning;

-- plain topics, lower-cased UUIDs, the docs' ":*" made a real prefix
SELECT voipbin_normalize_topic('customer_id:5E4A0680-804E-11EC-8477-2FEA5968D85B');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:*');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:*');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:call_hangup:593555d2-787e-4b06-862f-407bb2e43be1');
SELECT voipbin_normalize_topic('agent_id:62005165-7592-4ff7-9076-55bf491023f2:call:');

-- a bare resource name needs the customer id
SELECT voipbin_normalize_topic('call', '5e4a0680-804e-11ec-8477-2fea5968d85b');
SELECT voipbin_normalize_topic('Transcript', '5e4a0680-804e-11ec-8477-2fea5968d85b');

-- errors: SQLSTATE 22023 with a hint
\set VERBOSITY default
SELECT voipbin_normalize_topic('');
SELECT voipbin_normalize_topic('call');
SELECT voipbin_normalize_topic('customer:5e4a0680-804e-11ec-8477-2fea5968d85b');
SELECT voipbin_normalize_topic('customer_id:not-a-uuid:call');
SELECT voipbin_normalize_topic('customer_id:00000000-0000-0000-0000-000000000000:call');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:*:x');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b: call');
SELECT voipbin_normalize_topic('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call',
                               'aaaaaaaa-804e-11ec-8477-2fea5968d85b');
SELECT voipbin_normalize_topic(NULL);
\set VERBOSITY terse
SET client_min_messages = notice;
DO $$
BEGIN
  PERFORM voipbin_normalize_topic('customer_id:x');
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END $$;

-- subscribe stores the normalised topic, is idempotent, unsubscribe says whether it was there
SELECT voipbin_subscribe('customer_id:5E4A0680-804E-11EC-8477-2FEA5968D85B:call:*');
SELECT voipbin_subscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:');
SELECT topic, status, last_error FROM voipbin_subscriptions;
UPDATE voipbin_subscriptions SET status = 'rejected', last_error = 'dropped twice';
SELECT voipbin_subscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:');
SELECT topic, status, last_error FROM voipbin_subscriptions;
SELECT voipbin_unsubscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:*');
SELECT voipbin_unsubscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b:call:');
SELECT count(*) FROM voipbin_subscriptions;
