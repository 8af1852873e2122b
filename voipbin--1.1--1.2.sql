-- voipbin--1.1--1.2.sql: from 1.1 to 1.2.
--
-- 1.0 and 1.1 are released and frozen (voipbin--1.0.sql and
-- voipbin--1.0--1.1.sql never change); every change to the extension's SQL
-- objects goes here.  A fresh CREATE EXTENSION runs 1.0, then 1.0--1.1, then
-- this file, so a fresh install and an updated one are the same objects
-- (test/test_upgrade.py compares their catalogs).
\echo Use "ALTER EXTENSION voipbin UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Partitions: the partitioned table is locked before its default partition
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION voipbin_maintain_partitions(step interval, retention interval,
                                            OUT created integer, OUT dropped integer,
                                            OUT more boolean, OUT next_drop timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
    AS $$
DECLARE
    cutoff timestamptz := CASE WHEN retention > interval '0' THEN now() - retention END;
    before integer := (SELECT count(*) FROM @extschema@.voipbin_partitions());
    t timestamptz := now();
    part regclass;
    old_part record;
BEGIN
    created := 0;
    dropped := 0;
    more := false;
    BEGIN
        LOOP
            part := @extschema@.voipbin_partition_for(t, step);
            SELECT p.upper INTO t FROM @extschema@.voipbin_partitions() p WHERE p.partition = part;
            EXIT WHEN t > now() + 2 * step;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        -- a long reader of voipbin_events (pg_dump, say): meanwhile the
        -- default partition takes the events; they move at a later pass
        RAISE LOG 'voipbin: voipbin_events is in use; its partitions ahead are made at the next pass';
    END;
    BEGIN
        FOR i IN 1..4 LOOP
            -- the table before its default partition, in the order readers
            -- and TRUNCATE lock them: reading the partition alone first, then
            -- waiting for the table in voipbin_partition_for(), deadlocked
            -- with a TRUNCATE voipbin_events that held the table and waited
            -- for the partition
            LOCK TABLE @extschema@.voipbin_events IN ACCESS SHARE MODE;
            SELECT min(received_at) INTO t FROM @extschema@.voipbin_events_default
            WHERE received_at >= coalesce(cutoff, '-infinity') AND isfinite(received_at);
            EXIT WHEN t IS NULL;
            PERFORM @extschema@.voipbin_partition_for(t, step);
            more := i = 4;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        -- a long reader of voipbin_events: the rows move at the next pass
        RAISE LOG 'voipbin: voipbin_events is in use; rows of its default partition move at the next pass';
        more := false;
    END;
    created := (SELECT count(*) FROM @extschema@.voipbin_partitions()) - before;
    -- Rows of a time past retention (replayed, or left from before 1.1) get
    -- no partition: once the default partition holds nothing within
    -- retention, it is emptied whole, its space (and what moves out of it
    -- left behind) with it, as a partition past retention is dropped, rather
    -- than deleted row by row into a file that keeps its size.
    IF cutoff IS NOT NULL AND NOT more THEN
        BEGIN
            -- the table before its partition, in the order readers lock them
            -- (pg_relation_size() locks the partition too)
            LOCK TABLE @extschema@.voipbin_events IN ACCESS SHARE MODE;
            IF pg_relation_size('@extschema@.voipbin_events_default') > 0
               AND NOT EXISTS (SELECT FROM @extschema@.voipbin_events_default
                               WHERE received_at >= cutoff) THEN
                LOCK TABLE @extschema@.voipbin_events IN ACCESS EXCLUSIVE MODE;
                IF NOT EXISTS (SELECT FROM @extschema@.voipbin_events_default
                               WHERE received_at >= cutoff) THEN
                    TRUNCATE @extschema@.voipbin_events_default;
                END IF;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            RAISE LOG 'voipbin: voipbin_events is in use; its default partition is emptied at the next pass';
        END;
    END IF;
    IF cutoff IS NOT NULL THEN
        FOR old_part IN SELECT * FROM @extschema@.voipbin_partitions() WHERE upper <= cutoff LOOP
            BEGIN
                -- the table before its partition, in the order readers lock them
                LOCK TABLE @extschema@.voipbin_events IN ACCESS EXCLUSIVE MODE;
                EXECUTE format('DROP TABLE %s', old_part.partition);
                dropped := dropped + 1;
            EXCEPTION WHEN lock_not_available THEN
                RAISE LOG 'voipbin: partition % is in use; it is dropped at the next pass', old_part.partition;
            END;
        END LOOP;
        next_drop := (SELECT min(p.upper) FROM @extschema@.voipbin_partitions() p) + retention;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- VoIPBIN's words: the event types it sends and the resources it publishes
-- topics for (src/sql/vocabulary.c); a typo gets a WARNING naming the nearest
-- ---------------------------------------------------------------------------
CREATE FUNCTION voipbin_vocabulary(OUT kind text, OUT word text) RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'voipbin_vocabulary' LANGUAGE C STABLE PARALLEL SAFE ROWS 150;
COMMENT ON FUNCTION voipbin_vocabulary() IS
    'The event types VoIPBIN sends (or the worker names) and the resources it publishes topics for';
REVOKE EXECUTE ON FUNCTION voipbin_vocabulary() FROM PUBLIC;

CREATE FUNCTION voipbin_check_event_type(event_type text) RETURNS void
    AS 'MODULE_PATHNAME', 'voipbin_check_event_type' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_check_event_type(text) IS
    'voipbin_on''s WARNING for an event type VoIPBIN does not send';
REVOKE EXECUTE ON FUNCTION voipbin_check_event_type(text) FROM PUBLIC;

-- the same as 1.1s, and the WARNING above
CREATE OR REPLACE FUNCTION voipbin_on(event_type text, handler regprocedure) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p pg_proc;
    worker_role text := nullif(current_setting('voipbin.worker_role', true), '');
    worker oid;
BEGIN
    IF event_type IS NULL OR handler IS NULL THEN
        RAISE EXCEPTION 'voipbin_on needs an event type and a handler'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF event_type !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid VoIPBIN event type: "%"', event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Event types are lower case, as in call_hangup or transcript_created.';
    END IF;
    -- a type VoIPBIN does not send: a WARNING naming the nearest one, and on
    PERFORM @extschema@.voipbin_check_event_type(event_type);
    SELECT * INTO p FROM pg_proc WHERE oid = handler;
    IF p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
       OR p.proargtypes[0] <> '@extschema@.voipbin_events'::regtype
       OR p.prorettype <> 'void'::regtype THEN
        RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
            USING ERRCODE = 'invalid_object_definition',
                  DETAIL = 'A handler is a function that takes one argument of type voipbin_events and returns void.',
                  HINT = 'Declare it as CREATE FUNCTION f(e voipbin_events) RETURNS void.';
    END IF;
    IF p.pronamespace = pg_my_temp_schema() THEN
        RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'It is a temporary function, which the voipbin worker cannot see.';
    END IF;
    IF worker_role IS NULL THEN
        IF NOT p.prosecdef AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = p.proowner) THEN
            RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Handlers run in the voipbin worker, as a superuser; its owner is not one.',
                      HINT = format('ALTER FUNCTION %s SECURITY DEFINER, so that it runs with its owner''s privileges.', handler);
        END IF;
    ELSE
        SELECT oid INTO worker FROM pg_roles WHERE rolname = worker_role;
        IF worker IS NULL THEN
            RAISE EXCEPTION 'voipbin.worker_role "%" does not exist', worker_role
                USING ERRCODE = 'undefined_object',
                      HINT = 'Create the role, or set voipbin.worker_role to another one and restart the server.';
        END IF;
        IF NOT p.prosecdef AND NOT pg_has_role(p.proowner, worker, 'USAGE') THEN
            RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = format('Handlers run in the voipbin worker, as role %I; the function''s owner does not have that role''s privileges.', worker_role),
                      HINT = format('ALTER FUNCTION %s SECURITY DEFINER, so that it runs with its owner''s privileges.', handler);
        END IF;
        IF NOT has_function_privilege(worker, handler, 'EXECUTE') THEN
            RAISE EXCEPTION 'the voipbin worker''s role % may not execute function %', quote_ident(worker_role), handler
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('GRANT EXECUTE ON FUNCTION %s TO %I;', handler, worker_role);
        END IF;
    END IF;
    INSERT INTO @extschema@.voipbin_handlers (event_type, handler)
    VALUES (voipbin_on.event_type, (pg_identify_object('pg_proc'::regclass, handler, 0)).identity)
    ON CONFLICT ON CONSTRAINT voipbin_handlers_event_type_handler_key DO NOTHING;
END
$$;

-- ---------------------------------------------------------------------------
-- The own customer id as last learnt from GET /customer, per voipbin.api_url,
-- so that subscribing works while VoIPBIN cannot be reached.  Nothing of the
-- credential is kept (src/sql/customer_cache.c says when a row goes stale).
-- A cache: not dumped, learnt again after a restore.
-- ---------------------------------------------------------------------------
CREATE TABLE voipbin_customer_cache (
    api_url     text PRIMARY KEY,
    customer_id uuid NOT NULL,
    learnt_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE voipbin_customer_cache IS
    'The own VoIPBIN customer id per voipbin.api_url, as last learnt from GET /customer';
REVOKE ALL ON voipbin_customer_cache FROM PUBLIC;


-- ---------------------------------------------------------------------------
-- One database: the worker serves voipbin.database only
-- ---------------------------------------------------------------------------
-- The extension may be created anywhere (a dump may be restored anywhere),
-- but no worker reads the topics of another database nor stores events in
-- it: said at CREATE EXTENSION (and ALTER EXTENSION UPDATE) and at each
-- voipbin_subscribe there; voipbin_status() there says other_database.
DO $$
DECLARE
    served text := current_setting('voipbin.database', true);
BEGIN
    IF served IS NOT NULL AND served <> current_database() THEN
        RAISE WARNING 'voipbin: the worker serves database "%", not this one ("%")', served, current_database()
            USING DETAIL = 'Events arrive only in the database named by voipbin.database; here the functions work and no events arrive.',
                  HINT = format('To serve this database, set voipbin.database = %L in postgresql.conf and restart the server.',
                                current_database());
    END IF;
END
$$;

-- 1.0's, and a warning where no worker reads the topics
CREATE OR REPLACE FUNCTION voipbin_subscribe(topic text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    normalized text := @extschema@.voipbin_resolve_topic(topic);
    served text := current_setting('voipbin.database', true);
BEGIN
    -- subscribing a rejected topic again gives it one more try
    INSERT INTO @extschema@.voipbin_subscriptions AS s (topic) VALUES (normalized)
    ON CONFLICT ON CONSTRAINT voipbin_subscriptions_pkey DO UPDATE
        SET status = 'pending', last_error = NULL
        WHERE s.status = 'rejected';
    IF served IS NOT NULL AND served <> current_database() THEN
        RAISE WARNING 'voipbin: no worker reads the topics of database "%"', current_database()
            USING DETAIL = format('The topic is stored; the worker serves database %I (voipbin.database) and reads only its topics.',
                                  served),
                  HINT = format('Subscribe in database %I, or set voipbin.database = %L and restart the server.',
                                served, current_database());
    END IF;
    RETURN normalized;
END
$$;

-- ---------------------------------------------------------------------------
-- Partitions at once: for now and the next two intervals, made here rather
-- than at the worker's first pass (up to a minute later, the first events
-- landing in the default partition meanwhile)
-- ---------------------------------------------------------------------------
-- The interval as the worker reckons it (ingest/boundaries.c,
-- partition_step_s): voipbin.partition_interval, or a quarter of a
-- voipbin.event_retention shorter than four intervals (10 s at the least);
-- the defaults when the settings are not there.  Not in a restore (pg_dump
-- and pg_restore set row_security off before CREATE EXTENSION): the dump
-- brings its own partitions, which those made here would collide with.
-- Made in this script, they would be members of the extension (not dumped,
-- not droppable by retention): they leave it, as the worker's never join it.
DO $$
DECLARE
    interval_s integer := coalesce((SELECT setting::integer FROM pg_catalog.pg_settings
                                    WHERE name = 'voipbin.partition_interval'), 86400);
    retention_s integer := coalesce((SELECT setting::integer FROM pg_catalog.pg_settings
                                     WHERE name = 'voipbin.event_retention'), 7 * 86400);
    step interval;
    t timestamptz := now();
    part regclass;
BEGIN
    IF NOT current_setting('row_security')::boolean THEN
        RETURN;
    END IF;
    IF retention_s > 0 AND retention_s / 4 < interval_s THEN
        interval_s := greatest(retention_s / 4, least(10, interval_s));
    END IF;
    step := make_interval(secs => interval_s);
    LOOP
        part := @extschema@.voipbin_partition_for(t, step);
        SELECT p.upper INTO t FROM @extschema@.voipbin_partitions() p WHERE p.partition = part;
        EXIT WHEN t > now() + 2 * step;
    END LOOP;
    FOR part IN SELECT d.objid::regclass FROM pg_catalog.pg_depend d
                JOIN pg_catalog.pg_inherits i ON i.inhrelid = d.objid
                WHERE d.classid = 'pg_catalog.pg_class'::regclass
                  AND d.refclassid = 'pg_catalog.pg_extension'::regclass
                  AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'voipbin')
                  AND d.deptype = 'e'
                  AND i.inhparent = '@extschema@.voipbin_events'::regclass
                  AND d.objid <> '@extschema@.voipbin_events_default'::regclass LOOP
        EXECUTE format('ALTER EXTENSION voipbin DROP TABLE %s', part);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Dead letters: what event each one is, so that a copy of it is no second one
-- ---------------------------------------------------------------------------
-- VoIPBIN sends each event on two topics: when its handler fails, both
-- copies fail.  The worker writes what the frame was classified as (NULL for
-- a frame that is no event), and a frame whose event_type, resource_id and
-- data hash match a dead letter still there is counted as a duplicate, not
-- dead-lettered again.  Dead letters from before 1.2 have NULLs here.
ALTER TABLE voipbin_dead_letters
    ADD COLUMN event_type text,
    ADD COLUMN resource_id uuid,
    ADD COLUMN data_hash uuid;
COMMENT ON COLUMN voipbin_dead_letters.event_type IS
    'the event the frame was, NULL when it is no event (or dead-lettered before 1.2)';
COMMENT ON COLUMN voipbin_dead_letters.data_hash IS
    'voipbin_data_hash() of the event''s data: with event_type and resource_id, what makes a copy';
CREATE INDEX voipbin_dead_letters_data_hash ON voipbin_dead_letters (data_hash)
    WHERE data_hash IS NOT NULL;
