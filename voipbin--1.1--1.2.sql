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

-- ---------------------------------------------------------------------------
-- Requests: acting on VoIPBIN from SQL through an outbox
-- ---------------------------------------------------------------------------
-- A row written in the caller's transaction, sent by the worker only after
-- that transaction commits (docs/requests.md).  VoIPBIN has no idempotency
-- key: what the worker may send again, and when a request ends "unknown"
-- instead, is decided by src/requests/request_rules.c.
CREATE TABLE voipbin_requests (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      name NOT NULL,
    method          text NOT NULL
                    CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    path            text NOT NULL CHECK (path LIKE '/%'),
    body            jsonb,
    dedupe_key      text UNIQUE,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'done', 'failed', 'unknown', 'canceled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    finished_at     timestamptz,
    status          integer,
    response        jsonb,
    error           text,
    request_id      text
);
COMMENT ON TABLE voipbin_requests IS
    'Requests to VoIPBIN''s REST API queued from SQL, sent by the voipbin worker after commit';
COMMENT ON COLUMN voipbin_requests.state IS
    'queued, sending, done, failed (VoIPBIN said no), unknown (it may or may not have happened: never sent again) or canceled';
COMMENT ON COLUMN voipbin_requests.request_id IS
    'VoIPBIN''s request id (X-Request-Id) of the last attempt, for its support';
-- the worker takes queued requests in queue order, once they are due
CREATE INDEX voipbin_requests_queued ON voipbin_requests (next_attempt_at, id)
    WHERE state = 'queued';
-- and deletes finished ones after voipbin.request_retention
CREATE INDEX voipbin_requests_finished ON voipbin_requests (finished_at)
    WHERE finished_at IS NOT NULL;
REVOKE ALL ON voipbin_requests FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('voipbin_requests', '');
-- its identity sequence too: restored rows keep their ids, new ones follow them
SELECT pg_catalog.pg_extension_config_dump('voipbin_requests_id_seq', '');

-- A committed insert wakes the worker (a rolled-back one never reaches it).
CREATE FUNCTION voipbin_requests_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'voipbin_requests_changed' LANGUAGE C;
CREATE TRIGGER voipbin_requests_changed
    AFTER INSERT ON voipbin_requests
    FOR EACH STATEMENT EXECUTE FUNCTION voipbin_requests_changed();

CREATE FUNCTION voipbin_request(method text, path text, body jsonb DEFAULT '{}',
                                dedupe_key text DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'voipbin_request' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_request(text, text, jsonb, text) IS
    'Queues a request to VoIPBIN''s REST API, sent by the worker after commit; returns its id in voipbin_requests';

CREATE FUNCTION voipbin_cancel_request(id bigint) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- a request the worker has taken (sending) is no longer the caller's to stop
    UPDATE @extschema@.voipbin_requests r
       SET state = 'canceled', finished_at = now()
     WHERE r.id = voipbin_cancel_request.id AND r.state = 'queued';
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION voipbin_cancel_request(bigint) IS
    'Cancels a queued request; false when it is not queued (sent, finished, or no such id)';

CREATE FUNCTION voipbin_api(method text, path text, body jsonb DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'voipbin_api' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_api(text, text, jsonb) IS
    'Makes one request to VoIPBIN''s REST API now, in this session, and returns its answer (not queued, not retried)';

-- Typed helpers: each checks its arguments (22023 and a hint, before
-- anything is queued), then queues through voipbin_request, so its caller
-- needs EXECUTE on that too and is the one voipbin_requests records.  The
-- checks are written out in each: a function of their own would need its
-- own EXECUTE grant.
CREATE FUNCTION voipbin_hangup(call_id uuid) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF call_id IS NULL OR call_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'voipbin: call_id must be a VoIPBIN id, not %', coalesce(call_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Take it from an event, e.g. (data->>''id'')::uuid of a call_* event.';
    END IF;
    RETURN @extschema@.voipbin_request('POST', format('/calls/%s/hangup', call_id), '{}');
END
$$;
COMMENT ON FUNCTION voipbin_hangup(uuid) IS
    'Queues the hangup of a call (safe to repeat: retried)';

CREATE FUNCTION voipbin_talk(call_id uuid, text text, language text DEFAULT 'en-US') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF call_id IS NULL OR call_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'voipbin: call_id must be a VoIPBIN id, not %', coalesce(call_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Take it from an event, e.g. (data->>''id'')::uuid of a call_* event.';
    END IF;
    IF text IS NULL OR btrim(text, E' \t\r\n') = '' THEN
        RAISE EXCEPTION 'voipbin: the text to speak is empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the words to speak; they are escaped for SSML and spoken as written.';
    END IF;
    IF language IS NULL OR language !~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$' THEN
        RAISE EXCEPTION 'voipbin: % is not a language tag', coalesce(quote_literal(language), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a BCP 47 tag such as en-US or de-DE.';
    END IF;
    -- VoIPBIN reads the text as SSML, where a bare & fails the request: spoken as written
    RETURN @extschema@.voipbin_request('POST', format('/calls/%s/talk', call_id),
        jsonb_build_object('text', replace(replace(replace(replace(replace(text,
                                       '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&apos;'),
                           'language', language));
END
$$;
COMMENT ON FUNCTION voipbin_talk(uuid, text, text) IS
    'Queues text to speak into a call, escaped for SSML (sent at most once: a repeat would speak twice)';

CREATE FUNCTION voipbin_call(source jsonb, destinations jsonb, actions jsonb DEFAULT NULL, flow_id uuid DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    body jsonb;
BEGIN
    -- an address is {"type": …, "target": …}; destinations a non-empty array of them
    IF source IS NULL OR jsonb_typeof(source) <> 'object'
       OR coalesce(source->>'type', '') = '' OR coalesce(source->>'target', '') = ''
       OR jsonb_typeof(source->'type') <> 'string' OR jsonb_typeof(source->'target') <> 'string' THEN
        RAISE EXCEPTION 'voipbin: source is not a VoIPBIN address: %', coalesce(source::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An address is an object with a type and a target, e.g. {"type": "tel", "target": "+15551230001"}.';
    END IF;
    IF destinations IS NULL OR jsonb_typeof(destinations) <> 'array' OR jsonb_array_length(destinations) = 0
       OR EXISTS (SELECT FROM jsonb_array_elements(destinations) d
                  WHERE jsonb_typeof(d) <> 'object'
                     OR coalesce(d->>'type', '') = '' OR coalesce(d->>'target', '') = ''
                     OR jsonb_typeof(d->'type') <> 'string' OR jsonb_typeof(d->'target') <> 'string') THEN
        RAISE EXCEPTION 'voipbin: destinations must be a non-empty array of VoIPBIN addresses, not %',
                        coalesce(destinations::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'E.g. ''[{"type": "tel", "target": "+15551230002"}]''::jsonb.';
    END IF;
    body := jsonb_build_object('source', source, 'destinations', destinations);
    IF actions IS NOT NULL THEN
        IF jsonb_typeof(actions) <> 'array' THEN
            RAISE EXCEPTION 'voipbin: actions must be an array of actions, not %', actions
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'E.g. ''[{"type": "talk", "option": {"text": "Hello", "language": "en-US"}}]''::jsonb.';
        END IF;
        body := body || jsonb_build_object('actions', actions);
    END IF;
    IF flow_id IS NOT NULL THEN
        IF flow_id = '00000000-0000-0000-0000-000000000000' THEN
            RAISE EXCEPTION 'voipbin: flow_id must be a VoIPBIN id, not the nil UUID'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass NULL for a call without a flow of its own.';
        END IF;
        body := body || jsonb_build_object('flow_id', flow_id);
    END IF;
    RETURN @extschema@.voipbin_request('POST', '/calls', body);
END
$$;
COMMENT ON FUNCTION voipbin_call(jsonb, jsonb, jsonb, uuid) IS
    'Queues an outbound call (sent at most once: a repeat would place a second call)';

CREATE FUNCTION voipbin_send_message(source jsonb, destinations jsonb, text text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- an address is {"type": …, "target": …}; destinations a non-empty array of them
    IF source IS NULL OR jsonb_typeof(source) <> 'object'
       OR coalesce(source->>'type', '') = '' OR coalesce(source->>'target', '') = ''
       OR jsonb_typeof(source->'type') <> 'string' OR jsonb_typeof(source->'target') <> 'string' THEN
        RAISE EXCEPTION 'voipbin: source is not a VoIPBIN address: %', coalesce(source::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An address is an object with a type and a target, e.g. {"type": "tel", "target": "+15551230001"}.';
    END IF;
    IF destinations IS NULL OR jsonb_typeof(destinations) <> 'array' OR jsonb_array_length(destinations) = 0
       OR EXISTS (SELECT FROM jsonb_array_elements(destinations) d
                  WHERE jsonb_typeof(d) <> 'object'
                     OR coalesce(d->>'type', '') = '' OR coalesce(d->>'target', '') = ''
                     OR jsonb_typeof(d->'type') <> 'string' OR jsonb_typeof(d->'target') <> 'string') THEN
        RAISE EXCEPTION 'voipbin: destinations must be a non-empty array of VoIPBIN addresses, not %',
                        coalesce(destinations::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'E.g. ''[{"type": "tel", "target": "+15551230002"}]''::jsonb.';
    END IF;
    IF text IS NULL OR text = '' THEN
        RAISE EXCEPTION 'voipbin: the message text is empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the text of the message.';
    END IF;
    RETURN @extschema@.voipbin_request('POST', '/messages',
        jsonb_build_object('source', source, 'destinations', destinations, 'text', text));
END
$$;
COMMENT ON FUNCTION voipbin_send_message(jsonb, jsonb, text) IS
    'Queues an SMS (sent at most once: a repeat would send and bill it twice)';

CREATE FUNCTION voipbin_transcribe_start(call_id uuid, language text DEFAULT 'en-US') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF call_id IS NULL OR call_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'voipbin: call_id must be a VoIPBIN id, not %', coalesce(call_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Take it from an event, e.g. (data->>''id'')::uuid of a call_* event.';
    END IF;
    IF language IS NULL OR language !~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$' THEN
        RAISE EXCEPTION 'voipbin: % is not a language tag', coalesce(quote_literal(language), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a BCP 47 tag such as en-US or de-DE.';
    END IF;
    RETURN @extschema@.voipbin_request('POST', '/transcribes',
        jsonb_build_object('reference_type', 'call', 'reference_id', call_id,
                           'language', language, 'direction', 'both'));
END
$$;
COMMENT ON FUNCTION voipbin_transcribe_start(uuid, text) IS
    'Queues the start of a live transcription of a call (one already running counts as done)';

CREATE FUNCTION voipbin_transcribe_stop(transcribe_id uuid) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF transcribe_id IS NULL OR transcribe_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'voipbin: transcribe_id must be a VoIPBIN id, not %', coalesce(transcribe_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Take it from an event, e.g. (data->>''id'')::uuid of a transcribe_* event.';
    END IF;
    RETURN @extschema@.voipbin_request('POST', format('/transcribes/%s/stop', transcribe_id), '{}');
END
$$;
COMMENT ON FUNCTION voipbin_transcribe_stop(uuid) IS
    'Queues the stop of a transcription (safe to repeat: retried)';

CREATE FUNCTION voipbin_recording_start(call_id uuid) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF call_id IS NULL OR call_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'voipbin: call_id must be a VoIPBIN id, not %', coalesce(call_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Take it from an event, e.g. (data->>''id'')::uuid of a call_* event.';
    END IF;
    RETURN @extschema@.voipbin_request('POST', format('/calls/%s/recording_start', call_id), '{"format": "wav"}');
END
$$;
COMMENT ON FUNCTION voipbin_recording_start(uuid) IS
    'Queues the start of a call''s recording (sent at most once)';

CREATE FUNCTION voipbin_recording_stop(call_id uuid) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF call_id IS NULL OR call_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'voipbin: call_id must be a VoIPBIN id, not %', coalesce(call_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Take it from an event, e.g. (data->>''id'')::uuid of a call_* event.';
    END IF;
    RETURN @extschema@.voipbin_request('POST', format('/calls/%s/recording_stop', call_id), '{}');
END
$$;
COMMENT ON FUNCTION voipbin_recording_stop(uuid) IS
    'Queues the stop of a call''s recording (safe to repeat: retried)';

REVOKE EXECUTE ON FUNCTION voipbin_requests_changed() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_request(text, text, jsonb, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_cancel_request(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_api(text, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_hangup(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_talk(uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_call(jsonb, jsonb, jsonb, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_send_message(jsonb, jsonb, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_transcribe_start(uuid, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_transcribe_stop(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_recording_start(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_recording_stop(uuid) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Status: the request counters, at the end (a database still at 1.0 or 1.1
-- declares a prefix of these columns, and the library fills only those)
-- ---------------------------------------------------------------------------
DROP FUNCTION voipbin_status();
CREATE FUNCTION voipbin_status(
    OUT state text,
    OUT connected_since timestamptz,
    OUT last_frame_at timestamptz,
    OUT frames_received bigint,
    OUT events_stored bigint,
    OUT duplicates bigint,
    OUT dead_letters bigint,
    OUT reconnects bigint,
    OUT last_error text,
    OUT worker_pid integer,
    OUT buffered_bytes bigint,
    OUT frames_lost bigint,
    OUT webhook_state text,
    OUT webhook_received bigint,
    OUT webhook_refused bigint,
    OUT last_gap_at timestamptz,
    OUT next_attempt_at timestamptz,
    OUT failures integer,
    OUT requests_queued bigint,
    OUT requests_done bigint,
    OUT requests_failed bigint,
    OUT requests_unknown bigint)
    AS 'MODULE_PATHNAME', 'voipbin_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_status() IS 'What the voipbin worker is doing, and its counters since it started';
GRANT EXECUTE ON FUNCTION voipbin_status() TO PUBLIC;
