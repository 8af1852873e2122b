-- Settings: every setting (docs/settings.md) with its default, and the credential hidden.
SELECT name, setting, unit, context, vartype
FROM pg_settings WHERE name LIKE 'voipbin.%' ORDER BY name;
SHOW voipbin.event_retention;
SHOW voipbin.buffer_limit;
SHOW voipbin.reconnect_min_delay;
SHOW voipbin.http_timeout;
-- a typo in the prefix is refused
SET voipbin.tokne = 'x';
-- only a superuser may read the credential
CREATE ROLE voipbin_regress_user;
SET ROLE voipbin_regress_user;
SHOW voipbin.token;
SELECT current_setting('voipbin.token');
SELECT count(*) FROM pg_settings WHERE name = 'voipbin.token';
RESET ROLE;
-- nobody reads a secret back, not even a superuser: a set one shows as a mask
SHOW voipbin.webhook_secret;
SELECT current_setting('voipbin.webhook_secret');
SHOW voipbin.token;
SELECT count(*) FROM pg_settings WHERE name IN ('voipbin.token', 'voipbin.webhook_secret');
SELECT count(*) FROM pg_show_all_settings() s
WHERE s::text LIKE '%regress-webhook-secret%';
CREATE ROLE voipbin_regress_reader IN ROLE pg_read_all_settings;
SET ROLE voipbin_regress_reader;
SHOW voipbin.webhook_secret;
SELECT current_setting('voipbin.webhook_secret');
RESET ROLE;
DROP ROLE voipbin_regress_reader;
SET ROLE voipbin_regress_user;
-- status is open to everyone, the rest is not
SELECT state FROM voipbin_status();
-- but not its errors, which can quote event data: those are for pg_monitor
RESET ROLE;
DO $$
BEGIN
    -- the worker says why it is disabled once it is up (within 10 s)
    FOR i IN 1..500 LOOP
        EXIT WHEN (SELECT last_error FROM voipbin_status()) IS NOT NULL;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
SET ROLE voipbin_regress_user;
SELECT last_error IS NULL AS hidden FROM voipbin_status();
RESET ROLE;
SELECT last_error FROM voipbin_status();
GRANT pg_monitor TO voipbin_regress_user;
SET ROLE voipbin_regress_user;
SELECT last_error IS NULL AS hidden FROM voipbin_status();
RESET ROLE;
REVOKE pg_monitor FROM voipbin_regress_user;
SET ROLE voipbin_regress_user;
SELECT voipbin_reconnect();
SELECT voipbin_subscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b');
SELECT count(*) FROM voipbin_events;
RESET ROLE;
DROP ROLE voipbin_regress_user;
-- http_timeout is a user setting
SET voipbin.http_timeout = '2s';
SHOW voipbin.http_timeout;
RESET voipbin.http_timeout;
