-- REST functions without a credential (pg_regress sets none, and nothing
-- listens at voipbin.api_url): arguments are checked before any request.
\set VERBOSITY default

-- a bad uri or method is refused first, with SQLSTATE 22023
SELECT voipbin_set_webhook('ftp://example.com/hook');
SELECT voipbin_set_webhook('example.com/hook');
SELECT voipbin_set_webhook('https://');
SELECT voipbin_set_webhook('https://example.com/a b');
SELECT voipbin_set_webhook('https://example.com/hook', 'PATCH');
SELECT voipbin_set_webhook('https://example.com/hook', '');
SELECT voipbin_set_webhook(NULL);
SELECT voipbin_set_webhook('https://example.com/hook', NULL);
\set VERBOSITY terse
SET client_min_messages = notice;
DO $$
BEGIN
  PERFORM voipbin_set_webhook('mailto:someone@example.com');
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END $$;
DO $$
BEGIN
  PERFORM voipbin_set_webhook('https://example.com/hook', 'OPTIONS');
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END $$;
\set VERBOSITY default

-- valid arguments get as far as the missing credential
SELECT voipbin_set_webhook('https://example.com/hook');
SELECT voipbin_set_webhook('http://example.com:8080/hook?x=1', 'put');
SELECT voipbin_set_webhook('');
SELECT voipbin_clear_webhook();
SELECT voipbin_customer();

-- a webhook host that is no public address warns (VoIPBIN delivers only to
-- public ones), then the call goes on: here, to the missing credential
\set VERBOSITY terse
SELECT voipbin_set_webhook('https://localhost/voipbin');
SELECT voipbin_set_webhook('https://LOCALHOST./voipbin');
SELECT voipbin_set_webhook('https://hooks.localhost:8443/voipbin');
SELECT voipbin_set_webhook('http://127.0.0.1:8089/voipbin');
SELECT voipbin_set_webhook('http://127.1/voipbin');
SELECT voipbin_set_webhook('http://0x7f000001/voipbin');
SELECT voipbin_set_webhook('http://[::1]:8089/voipbin');
SELECT voipbin_set_webhook('http://[::ffff:127.0.0.1]/voipbin');
SELECT voipbin_set_webhook('http://10.0.0.1:8089/voipbin?token=not-in-the-warning');
SELECT voipbin_set_webhook('http://172.16.5.4/voipbin');
SELECT voipbin_set_webhook('http://172.31.255.255/voipbin');
SELECT voipbin_set_webhook('http://192.168.1.10/voipbin');
SELECT voipbin_set_webhook('http://[fd12:3456::1]/voipbin');
SELECT voipbin_set_webhook('http://[fc00::1]/voipbin');
SELECT voipbin_set_webhook('http://169.254.169.254/voipbin');
SELECT voipbin_set_webhook('http://[fe80::1]/voipbin');
SELECT voipbin_set_webhook('http://[febf::1]/voipbin');
SELECT voipbin_set_webhook('http://0.0.0.0/voipbin');
SELECT voipbin_set_webhook('http://[::]/voipbin');
SELECT voipbin_set_webhook('http://0.1.2.3/voipbin');
SELECT voipbin_set_webhook('http://100.64.0.1/voipbin');
SELECT voipbin_set_webhook('http://192.0.2.7/voipbin');
SELECT voipbin_set_webhook('http://[2001:db8::7]/voipbin');
SELECT voipbin_set_webhook('http://198.18.0.1/voipbin');
SELECT voipbin_set_webhook('http://224.0.0.1/voipbin');
SELECT voipbin_set_webhook('http://255.255.255.255/voipbin');
SELECT voipbin_set_webhook('http://[ff02::1]/voipbin');
SELECT voipbin_set_webhook('http://[64:ff9b::a00:1]/voipbin');
SELECT voipbin_set_webhook('https://receiver/voipbin');
SELECT voipbin_set_webhook('https://printer.local/voipbin');
SELECT voipbin_set_webhook('https://db.internal/voipbin');
SELECT voipbin_set_webhook('https://nas.home.arpa/voipbin');
-- public ones say nothing
SELECT voipbin_set_webhook('https://hooks.example.com/voipbin');
SELECT voipbin_set_webhook('http://8.8.8.8/voipbin');
SELECT voipbin_set_webhook('http://172.32.0.1/voipbin');
SELECT voipbin_set_webhook('http://100.128.0.1/voipbin');
SELECT voipbin_set_webhook('http://[2606:4700::1111]/voipbin');
SELECT voipbin_set_webhook('http://[64:ff9b::808:808]/voipbin');
SELECT voipbin_set_webhook('https://localhost.example.com/voipbin');
\set VERBOSITY default
SELECT voipbin_set_webhook('http://10.0.0.1:8089/voipbin');

-- topics: a full topic needs no credential, a bare resource name does
SELECT voipbin_resolve_topic('customer_id:5E4A0680-804E-11EC-8477-2FEA5968D85B:call:*');
SELECT voipbin_resolve_topic('agent_id:62005165-7592-4ff7-9076-55bf491023f2:call:', false);
SELECT voipbin_resolve_topic('call');
SELECT voipbin_subscribe('transcript');
SELECT voipbin_unsubscribe('transcript');
SELECT voipbin_resolve_topic('customer_id:nope');
SELECT count(*) FROM voipbin_subscriptions;

-- nobody but a superuser and whom it grants may call them
CREATE ROLE voipbin_rest_user;
SET ROLE voipbin_rest_user;
SELECT voipbin_customer();
SELECT voipbin_set_webhook('https://example.com/hook');
SELECT voipbin_clear_webhook();
SELECT voipbin_resolve_topic('call');
RESET ROLE;
DROP ROLE voipbin_rest_user;
SELECT p.oid::regprocedure AS function,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute,
       p.prosecdef AS security_definer
FROM pg_proc p
WHERE p.proname IN ('voipbin_customer', 'voipbin_set_webhook', 'voipbin_clear_webhook',
                    'voipbin_resolve_topic')
ORDER BY p.proname;
