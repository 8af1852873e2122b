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
    OUT last_gap_at timestamptz)
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
-- trigger, and names everything it uses by schema.
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
                   OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p.proname) AS name
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
        EXECUTE 'SELECT ' OPERATOR(pg_catalog.||) h.name OPERATOR(pg_catalog.||) '($1)' USING NEW;
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
