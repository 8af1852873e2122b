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
