-- voipbin--1.0--1.1.sql: from the released 1.0 to 1.1.
--
-- 1.0 is frozen (voipbin--1.0.sql never changes); every change to the
-- extension's SQL objects goes here.  A fresh CREATE EXTENSION runs 1.0 and
-- then this file, so a fresh install and an upgraded one are the same objects
-- (test/test_upgrade.py compares their catalogs).
\echo Use "ALTER EXTENSION voipbin UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Status: the columns 1.1 adds, at the end (the library also serves a
-- database still at 1.0, whose declaration is a prefix of this one).
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
    OUT failures integer)
    AS 'MODULE_PATHNAME', 'voipbin_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_status() IS 'What the voipbin worker is doing, and its counters since it started';
GRANT EXECUTE ON FUNCTION voipbin_status() TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Durability: the journal position, stored in the transaction of each batch
-- ---------------------------------------------------------------------------
-- How far each journal of the worker is stored: written in the transaction
-- that stores a batch, so that after a crash exactly what no commit covered
-- is replayed.  A position is about this server's journal files: it is not
-- dumped, a restore elsewhere starts with none.
CREATE TABLE voipbin_journal (
    journal_id  text PRIMARY KEY,
    stored_upto bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- the worker's last sign of life while connected: after a restart, the
    -- start of the outage it caused
    alive_at    timestamptz
);
COMMENT ON TABLE voipbin_journal IS
    'How far each journal of the voipbin worker is stored (internal: written by the worker)';
REVOKE ALL ON voipbin_journal FROM PUBLIC;

-- Dead letters stored again, for the user who fixed a handler or a trigger:
-- the worker's own code, in the calling backend and transaction, with the
-- caller's privileges (it needs INSERT on voipbin_events, SELECT, UPDATE and
-- DELETE on voipbin_dead_letters and EXECUTE on voipbin_data_hash).  Not
-- STRICT: NULL means all of them.
CREATE FUNCTION voipbin_retry_dead_letters(ids bigint[] DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'voipbin_retry_dead_letters' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_retry_dead_letters(bigint[]) IS
    'Stores dead letters again as the worker would (all of them when ids is NULL); returns how many became events';
REVOKE EXECUTE ON FUNCTION voipbin_retry_dead_letters(bigint[]) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Security
-- ---------------------------------------------------------------------------
-- Functions that views, triggers and handlers call run under the caller's
-- search_path: each has a fixed one, or is a SQL-standard body (voipbin_offset,
-- resolved once at CREATE), or names everything by schema (voipbin_run_handlers).
ALTER FUNCTION voipbin_timestamp(text) SET search_path = pg_catalog, pg_temp;

-- The worker need not be a superuser (voipbin.worker_role).  A handler runs
-- as the role that stores the event, the worker's; a handler that is not
-- SECURITY DEFINER is trusted only when its owner already has that role's
-- privileges (a superuser owner has everyone's), or its owner could run
-- anything as that role by changing its body.
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

-- Runs in whatever transaction inserts the event, as the role inserting it;
-- it sets no search_path, so handlers see the one they would see in a
-- trigger, and names everything it uses by schema.  It is a row trigger on
-- the partitioned voipbin_events (below), which fires with the partition's
-- row type: each handler is passed the row as the type it declares.
CREATE OR REPLACE FUNCTION voipbin_run_handlers() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    h record;
BEGIN
    FOR h IN
        SELECT r.handler, p.oid AS fn,
               p.prosecdef OR pg_catalog.pg_has_role(p.proowner, CURRENT_USER, 'USAGE') AS trusted,
               pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'
                   OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p.proname) AS name,
               pg_catalog.format_type(p.proargtypes[0], NULL) AS argtype
        FROM @extschema@.voipbin_handlers r
        LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(r.handler)
        LEFT JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
        WHERE r.event_type OPERATOR(pg_catalog.=) NEW.event_type
        ORDER BY r.id
    LOOP
        IF h.fn IS NULL THEN
            RAISE EXCEPTION 'voipbin handler % for % does not exist', h.handler, NEW.event_type
                USING ERRCODE = 'undefined_function',
                      HINT = pg_catalog.format('If it was renamed or moved, register it again with voipbin_on and DELETE FROM voipbin_handlers WHERE handler = %L.', h.handler);
        END IF;
        IF NOT h.trusted THEN
            RAISE EXCEPTION 'voipbin handler % is not SECURITY DEFINER, and its owner does not have the privileges of role %, which runs it', h.handler, CURRENT_USER
                USING ERRCODE = 'insufficient_privilege',
                      HINT = pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER, so that it runs with its owner''s privileges.', h.handler);
        END IF;
        EXECUTE 'SELECT ' OPERATOR(pg_catalog.||) h.name OPERATOR(pg_catalog.||) '(ROW(($1).*)::'
            OPERATOR(pg_catalog.||) h.argtype OPERATOR(pg_catalog.||) ')' USING NEW;
    END LOOP;
    RETURN NULL;
END
$$;


-- ---------------------------------------------------------------------------
-- Webhook receiver
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Gap repair
-- ---------------------------------------------------------------------------
-- Every outage of the live stream, and every overflow of the journal, is a
-- gap: VoIPBIN keeps no history for a WebSocket client, so what it sent
-- meanwhile is lost unless gap repair reads it back over REST.  A row is
-- written when the gap is known to be over (the re-subscription was sent, or
-- the loss was counted), then updated by the repair.
CREATE SEQUENCE voipbin_gaps_id_seq;
CREATE TABLE voipbin_gaps (
    id              bigint PRIMARY KEY DEFAULT nextval('voipbin_gaps_id_seq'),
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz NOT NULL,
    repaired_at     timestamptz,
    events_repaired bigint NOT NULL DEFAULT 0,
    error           text,
    cause           text NOT NULL DEFAULT 'outage' CHECK (cause IN ('outage', 'restart', 'overflow')),
    frames_lost     bigint NOT NULL DEFAULT 0,
    CHECK (ended_at >= started_at)
);
ALTER SEQUENCE voipbin_gaps_id_seq OWNED BY voipbin_gaps.id;
CREATE INDEX voipbin_gaps_started_at ON voipbin_gaps (started_at);
COMMENT ON TABLE voipbin_gaps IS
    'Outages of the voipbin worker''s live stream (and journal overflows), and what gap repair fetched back';
COMMENT ON COLUMN voipbin_gaps.started_at IS 'when the connection was lost: its last frame, or its close';
COMMENT ON COLUMN voipbin_gaps.ended_at IS 'when the re-subscription was sent on the new connection';
COMMENT ON COLUMN voipbin_gaps.repaired_at IS 'when gap repair finished; NULL while it runs, failed or is off';
COMMENT ON COLUMN voipbin_gaps.events_repaired IS 'events gap repair stored (source = ''rest''), duplicates not counted';
COMMENT ON COLUMN voipbin_gaps.error IS 'why the repair failed or was partial; NULL when it was complete';
SELECT pg_catalog.pg_extension_config_dump('voipbin_gaps', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_gaps_id_seq', '');
REVOKE ALL ON voipbin_gaps FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Scale: voipbin_events partitioned by received_at
-- ---------------------------------------------------------------------------
-- Retention drops a whole partition at a time, with its space and almost no
-- WAL, instead of deleting rows one by one; each partition's indexes stay the
-- size of one voipbin.partition_interval of events.  A primary key of a
-- partitioned table must include the partition key: each partition's is
-- (id, received_at); id alone stays unique, by its sequence.
--
-- The partitioned table itself has no index or constraint, each partition
-- has its own: the partitions the worker makes are not members of the
-- extension, so pg_dump dumps them with their indexes, and a restore attaches
-- them to the voipbin_events that CREATE EXTENSION made -- which would have
-- made those indexes already, had it any, and the restore would fail on them.
--
-- The 1.0 table, with every row, index and id, becomes the DEFAULT
-- partition: it takes a row that no range partition covers (before the
-- worker has made one, an old event replayed, a clock far ahead).  The worker
-- makes the range partitions ahead of time and moves such rows into theirs
-- (voipbin_maintain_partitions), so the default stays small.  Its type is
-- still that of the 1.0 table: a handler written for 1.0 takes a
-- voipbin_events_default and keeps working (voipbin_run_handlers passes each
-- handler the row as the type it declares).

-- handlers by oid across the rename: their stored signatures name the type
-- (one that names no function, or is no signature, stays as it is)
DO $$
DECLARE
    r record;
    fn oid;
BEGIN
    FOR r IN SELECT id, handler FROM voipbin_handlers LOOP
        BEGIN
            fn := to_regprocedure(r.handler);
        EXCEPTION WHEN invalid_text_representation OR invalid_name OR syntax_error THEN
            fn := NULL;
        END;
        IF fn IS NOT NULL THEN
            UPDATE voipbin_handlers SET handler = 'oid:' || fn WHERE id = r.id;
        END IF;
    END LOOP;
END
$$;

ALTER TABLE voipbin_events RENAME TO voipbin_events_default;
ALTER TABLE voipbin_events_default DROP CONSTRAINT voipbin_events_pkey;
ALTER TABLE voipbin_events_default
    ADD CONSTRAINT voipbin_events_default_pkey PRIMARY KEY (id, received_at);
ALTER INDEX voipbin_events_dedupe RENAME TO voipbin_events_default_dedupe;
ALTER INDEX voipbin_events_received_at RENAME TO voipbin_events_default_received_at;
ALTER INDEX voipbin_events_resource_id RENAME TO voipbin_events_default_resource_id;
DROP TRIGGER voipbin_run_handlers ON voipbin_events_default;

UPDATE voipbin_handlers
SET handler = (pg_identify_object('pg_proc'::regclass, substr(handler, 5)::oid, 0)).identity
WHERE handler LIKE 'oid:%';

CREATE TABLE voipbin_events (
    id          bigint NOT NULL DEFAULT nextval('voipbin_events_id_seq'),
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL DEFAULT 'websocket',
    event_type  text NOT NULL,
    resource    text,
    resource_id uuid,
    customer_id uuid,
    data        jsonb NOT NULL
) PARTITION BY RANGE (received_at);
COMMENT ON TABLE voipbin_events IS 'VoIPBIN events received by the voipbin worker, one row per distinct event';
COMMENT ON TABLE voipbin_events_default IS
    'Events no range partition of voipbin_events covers yet (the worker moves them into theirs)';
ALTER SEQUENCE voipbin_events_id_seq OWNED BY voipbin_events.id;
ALTER TABLE voipbin_events ATTACH PARTITION voipbin_events_default DEFAULT;
REVOKE ALL ON voipbin_events FROM PUBLIC;
-- Logical replication with publish_via_partition_root sends the replica
-- identity of the partitioned table, which has no key: FULL, so that the
-- DELETEs of retention reach a subscriber (each partition logs its own key).
ALTER TABLE voipbin_events REPLICA IDENTITY FULL;

-- What users had on the 1.0 table goes to the partitioned one: their grants
-- (the default partition keeps its own), and their triggers, which would
-- otherwise fire only for the rows of the default partition.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.grantee::regrole AS grantee, a.privilege_type, a.is_grantable
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'voipbin_events_default'::regclass AND a.grantee <> c.relowner
          AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT %s ON voipbin_events TO %s%s', r.privilege_type, r.grantee,
                       CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR r IN
        SELECT t.tgname, pg_get_triggerdef(t.oid) AS def
        FROM pg_trigger t
        WHERE t.tgrelid = 'voipbin_events_default'::regclass AND NOT t.tgisinternal
          AND t.tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON voipbin_events_default', r.tgname);
        EXECUTE regexp_replace(r.def, ' ON \S*voipbin_events_default ',
                               ' ON ' || '@extschema@.voipbin_events' || ' ');
        RAISE NOTICE 'trigger % moved from voipbin_events_default to voipbin_events', r.tgname;
    END LOOP;
    FOR r IN
        SELECT DISTINCT v.oid::regclass AS view
        FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid
        JOIN pg_class v ON v.oid = w.ev_class
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = 'voipbin_events_default'::regclass
          AND v.oid NOT IN ('voipbin_calls'::regclass, 'voipbin_transcripts'::regclass)
    LOOP
        RAISE WARNING 'view % reads voipbin_events_default, the 1.0 table, which is now the default partition of voipbin_events', r.view
            USING HINT = 'Create the view again (CREATE OR REPLACE VIEW) so that it reads voipbin_events.';
    END LOOP;
END
$$;

-- the handlers, for the rows of every partition
CREATE TRIGGER voipbin_run_handlers AFTER INSERT ON voipbin_events
    FOR EACH ROW WHEN (NEW.event_type = ANY (@extschema@.voipbin_handled_types()))
    EXECUTE FUNCTION voipbin_run_handlers();

-- The views read the partitioned table (they were bound to the 1.0 one).
CREATE OR REPLACE VIEW voipbin_calls AS
SELECT c.resource_id AS call_id,
       c.data->>'status' AS status,
       c.data->>'direction' AS direction,
       c.data->'source'->>'target' AS source_target,
       c.data->'destination'->>'target' AS destination_target,
       nullif(c.data->>'hangup_by', '') AS hangup_by,
       nullif(c.data->>'hangup_reason', '') AS hangup_reason,
       voipbin_timestamp(c.data->>'tm_create') AS tm_create,
       voipbin_timestamp(c.data->>'tm_ringing') AS tm_ringing,
       voipbin_timestamp(c.data->>'tm_progressing') AS tm_progressing,
       voipbin_timestamp(c.data->>'tm_hangup') AS tm_hangup,
       voipbin_timestamp(c.data->>'tm_update') AS tm_update,
       c.id AS last_event_id
FROM (SELECT DISTINCT ON (e.resource_id) e.id, e.resource_id, e.data
      FROM voipbin_events e
      WHERE e.resource = 'call' AND e.resource_id IS NOT NULL
      ORDER BY e.resource_id,
               coalesce(voipbin_timestamp(e.data->>'tm_update'),
                        voipbin_timestamp(e.data->>'tm_create')) DESC NULLS LAST,
               array_position(ARRAY['dialing', 'ringing', 'progressing', 'canceling',
                                    'terminating', 'hangup'], e.data->>'status') DESC NULLS LAST,
               e.id DESC) c;

CREATE OR REPLACE VIEW voipbin_transcripts AS
SELECT t.resource_id AS transcript_id,
       (t.data->>'transcribe_id')::uuid AS transcribe_id,
       s.call_id,
       t.data->>'direction' AS direction,
       t.data->>'message' AS message,
       voipbin_offset(t.data->>'tm_transcript') AS tm_offset,
       voipbin_timestamp(t.data->>'tm_create') AS tm_create
FROM voipbin_events t
LEFT JOIN LATERAL (
    SELECT CASE WHEN s.data->>'reference_type' = 'call'
                THEN nullif(s.data->>'reference_id', '00000000-0000-0000-0000-000000000000')::uuid
           END AS call_id
    FROM voipbin_events s
    WHERE s.resource = 'transcribe'
      AND s.resource_id = (t.data->>'transcribe_id')::uuid
      AND s.data ? 'reference_type'
    ORDER BY s.event_type = 'transcribe_created' DESC, s.id
    LIMIT 1) s ON true
WHERE t.resource = 'transcript' AND t.resource_id IS NOT NULL
  AND NOT EXISTS (SELECT FROM voipbin_events d
                  WHERE d.resource = 'transcript' AND d.resource_id = t.resource_id
                    AND d.id < t.id);

-- The range partitions of voipbin_events and their bounds (the default one
-- has none and is not listed).
CREATE FUNCTION voipbin_partitions(OUT partition regclass, OUT lower timestamptz,
                                   OUT upper timestamptz)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = ISO
    AS $$
    SELECT c.oid::regclass, b[1]::timestamptz, b[2]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') b
    WHERE i.inhparent = '@extschema@.voipbin_events'::regclass AND b IS NOT NULL
    ORDER BY 2
$$;
COMMENT ON FUNCTION voipbin_partitions() IS
    'The range partitions of voipbin_events, with their bounds';

-- The range partition holding time t, made if missing: the
-- voipbin.partition_interval that t falls in, counted from 2000-01-01 00:00
-- UTC (so a day is a UTC day), cut short where a partition made under
-- another interval begins or ends.  The rows the default partition holds for
-- that range move into it first (it could not be attached otherwise).
-- Attached rather than created as PARTITION OF: ATTACH takes a lock that lets
-- readers and writers of voipbin_events go on.
CREATE FUNCTION voipbin_partition_for(t timestamptz, step interval) RETURNS regclass
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = ISO
    AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    name text;
    found_part regclass;
    replication_role text;
BEGIN
    IF t IS NULL OR NOT isfinite(t) OR step IS NULL OR step < interval '10 seconds'
       OR date_part('month', step) <> 0 OR date_part('year', step) <> 0 THEN
        RAISE EXCEPTION 'no voipbin_events partition for % by %', t, step
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The time must be finite, the interval at least 10 seconds and without months.';
    END IF;
    SELECT p.partition INTO found_part FROM @extschema@.voipbin_partitions() p
    WHERE t >= p.lower AND t < p.upper;
    IF found_part IS NOT NULL THEN
        RETURN found_part;
    END IF;
    -- The partitioned table first, as every reader locks it before its
    -- partitions (ATTACH locks the default partition, which a reader would
    -- then wait for while holding the table: a deadlock).  And held until
    -- the commit, so that no query is planned with the partitions of before
    -- a move and run with the rows of after it: it would scan the default
    -- partition without the moved rows, not the new partition, and see them
    -- nowhere.
    LOCK TABLE @extschema@.voipbin_events IN ACCESS EXCLUSIVE MODE;
    lo := date_bin(step, t, timestamptz '2000-01-01 00:00:00+00');
    hi := lo + step;
    SELECT greatest(lo, max(p.upper)) INTO lo FROM @extschema@.voipbin_partitions() p
    WHERE p.upper <= t;
    SELECT least(hi, min(p.lower)) INTO hi FROM @extschema@.voipbin_partitions() p
    WHERE p.lower > t;
    name := 'voipbin_events_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD')
            || CASE WHEN (lo AT TIME ZONE 'UTC')::time = '00:00' THEN ''
                    ELSE to_char(lo AT TIME ZONE 'UTC', '_HH24MISS') END;
    EXECUTE format('CREATE TABLE @extschema@.%I (LIKE @extschema@.voipbin_events INCLUDING DEFAULTS)',
                   name);
    -- The dedupe key unique within the partition (ON CONFLICT DO NOTHING
    -- finds it; across partitions the worker's insert looks), led by
    -- resource_id so that it also serves lookups by resource_id: 1.0's
    -- index on resource_id alone would be one more index of random keys
    -- to write for every event, the cost that grows with the partition.
    EXECUTE format('ALTER TABLE @extschema@.%I ADD CONSTRAINT %I PRIMARY KEY (id, received_at)',
                   name, name || '_pkey');
    EXECUTE format('CREATE INDEX %I ON @extschema@.%I (received_at)', name || '_received_at', name);
    EXECUTE format('CREATE UNIQUE INDEX %I ON @extschema@.%I'
                   ' (resource_id, event_type, @extschema@.voipbin_data_hash(data)) NULLS NOT DISTINCT',
                   name || '_dedupe', name);
    -- The rows out of the default partition before the ATTACH (which checks
    -- it holds none of the range), into the new one after it, so that a
    -- logical replication subscriber gets the insert as well as the delete.
    -- A move, not an event: the triggers (handlers, users') do not fire.
    replication_role := current_setting('session_replication_role');
    PERFORM set_config('session_replication_role', 'replica', true);
    DROP TABLE IF EXISTS pg_temp.voipbin_moving;
    CREATE TEMP TABLE voipbin_moving AS
        WITH moved AS (DELETE FROM @extschema@.voipbin_events_default
                       WHERE received_at >= lo AND received_at < hi RETURNING *)
        SELECT * FROM moved;
    EXECUTE format('ALTER TABLE @extschema@.voipbin_events ATTACH PARTITION @extschema@.%I'
                   ' FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    EXECUTE format('INSERT INTO @extschema@.%I SELECT * FROM pg_temp.voipbin_moving', name);
    DROP TABLE pg_temp.voipbin_moving;
    PERFORM set_config('session_replication_role', replication_role, true);
    RETURN ('@extschema@.' || quote_ident(name))::regclass;
END
$$;
COMMENT ON FUNCTION voipbin_partition_for(timestamptz, interval) IS
    'The partition of voipbin_events for a time, made (and filled from the default partition) if missing';

-- What the worker runs at least once a minute: partitions for now and the
-- next two intervals, a partition for every row of the default partition
-- still within retention (a few ranges a call; more: true), and retention
-- by whole partitions.  A partition is dropped once its upper bound is past
-- retention; while its reader or writer holds it, it is left for next time.
-- next_drop: when the oldest partition left becomes due, so that the worker
-- comes back then rather than up to a minute later (a partition waiting for
-- the next pass is that much more table).  The rows past retention in the
-- partition at the edge (and in the default one) are the worker's batched
-- deletes.
CREATE FUNCTION voipbin_maintain_partitions(step interval, retention interval,
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
COMMENT ON FUNCTION voipbin_maintain_partitions(interval, interval) IS
    'The voipbin worker''s partition upkeep: partitions ahead, rows out of the default partition, retention';
-- what it reads, pg_class and pg_inherits, anyone may read; the worker's
-- insert (voipbin_retry_dead_letters()'s in a user's backend) asks it
GRANT EXECUTE ON FUNCTION voipbin_partitions() TO PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_partition_for(timestamptz, interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_maintain_partitions(interval, interval) FROM PUBLIC;
