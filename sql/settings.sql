-- Settings: every GUC of SPEC.md with its default, and the credential hidden.
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
-- status is open to everyone, the rest is not
SELECT state FROM voipbin_status();
SELECT voipbin_reconnect();
SELECT voipbin_subscribe('customer_id:5e4a0680-804e-11ec-8477-2fea5968d85b');
SELECT count(*) FROM voipbin_events;
RESET ROLE;
DROP ROLE voipbin_regress_user;
-- http_timeout is a user setting
SET voipbin.http_timeout = '2s';
SHOW voipbin.http_timeout;
RESET voipbin.http_timeout;
