-- Installing: objects, privileges, the worker's presence.
CREATE EXTENSION voipbin;

SELECT c.relname, c.relkind
FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'voipbin')
  AND d.classid = 'pg_class'::regclass
ORDER BY 1;

SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'voipbin%'
ORDER BY 1, 2;

-- tables grant nothing to PUBLIC
SELECT relname, relacl IS NULL OR NOT EXISTS (
         SELECT 1 FROM aclexplode(relacl) a WHERE a.grantee = 0) AS nothing_for_public
FROM pg_class WHERE relname IN ('voipbin_events', 'voipbin_subscriptions', 'voipbin_dead_letters')
ORDER BY 1;

-- the worker runs (it waits, connected to no database, until pg_regress
-- has created its database, then starts again connected to it), and
-- without a credential it is disabled and says why (once its start-up is
-- done: until then it is listed but has said nothing)
DO $$
DECLARE deadline timestamptz := clock_timestamp() + interval '30 s';
BEGIN
  WHILE (NOT EXISTS (SELECT 1 FROM pg_stat_activity
                     WHERE backend_type = 'voipbin' AND datname = current_database())
         OR coalesce((SELECT last_error FROM voipbin_status()), '') = '')
        AND clock_timestamp() < deadline LOOP
    PERFORM pg_sleep(0.05);
    PERFORM pg_stat_clear_snapshot();
  END LOOP;
END $$;
SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type = 'voipbin';
SELECT state, last_error, frames_received, events_stored, worker_pid IS NOT NULL AS has_pid
FROM voipbin_status();

-- the extension's tables are dumped with the data
SELECT c.relname, u.cond AS dump_filter
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(cfg, cond)
JOIN pg_class c ON c.oid = u.cfg
WHERE e.extname = 'voipbin' ORDER BY 1;
